"""Benchmarks: each is a command that prints ratios measured side by side in one run (alternating
rounds, medians) and writes a plot; none is a test.

- ``python -m paddle_rtseg.bench`` (:mod:`.bench`): dygraph latency against PaddleSeg's models;
- ``python -m paddle_rtseg.bench_deploy`` (:mod:`.bench_deploy`): exported models on every backend;
- ``python -m paddle_rtseg.bench_segformer_pp`` (:mod:`.bench_segformer_pp`): token merging.

:mod:`.timing` (alternating rounds, medians) and :mod:`.flops` (MACs, GEMM rate) serve them all.
"""
