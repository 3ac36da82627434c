"""Side-by-side latency measurement: candidates run in turn, so machine noise hits all alike."""
import random
import time

import numpy as np


# Pause before each timed call. After a call, a runtime's worker threads keep spinning for a while
# (ONNX Runtime's intra-op pool; OpenMP's block time, 200 ms by default in Intel's runtime) and take
# the cores from whatever runs next. Measured without the pause, SeaFormer-Tiny 512x512, Paddle
# Inference and ONNX Runtime called in turn in one process on 2 cores: Paddle Inference 53.4 ms and
# ONNX Runtime 33.3 ms; with a 0.25 s pause 22.9 and 11.7 ms (Paddle Inference alone: 20.4 ms).
SETTLE_S = 0.3


def round_robin(candidates, inputs, repeats, warmup=1, settle_s=SETTLE_S, seed=0, calls=1):
    """``{name: [ms, ...]}`` for ``candidates`` (``{name: fn(inputs)}``): after ``warmup`` calls
    each, every repeat calls each candidate once, each call after a pause of ``settle_s`` seconds
    so that no candidate runs while another one's threads still spin.

    ``calls > 1``: each turn is that many back-to-back calls and records the median of all but the
    first, the steady latency of a loop over frames. The first call of a turn finds the caches
    filled by the previous candidate (another model's weights and buffers) and its own threads
    asleep, which weighs most on models of a few milliseconds.

    The order within a repeat is shuffled (seeded) from one repeat to the next, so that no candidate
    always runs right after the same other one: what one runtime leaves behind can outlast the
    pause (docs/deployment.md, section 5: in a fixed order ONNX Runtime int8 always followed Paddle
    Inference's oneDNN int8 and read 1.37x its fp32 latency for SeaFormer-Tiny, 0.59-0.96x in two
    shuffled runs)."""
    times = {name: [] for name in candidates}
    for fn in candidates.values():
        for _ in range(warmup):
            fn(inputs)
    order = list(candidates)
    shuffle = random.Random(seed).shuffle
    for _ in range(repeats):
        for name in order:
            fn = candidates[name]
            time.sleep(settle_s)
            turn = []
            for _ in range(calls):
                start = time.perf_counter()
                fn(inputs)
                turn.append(1000.0 * (time.perf_counter() - start))
            times[name].append(turn[0] if calls == 1 else float(np.median(turn[1:])))
        shuffle(order)
    return times


def medians(times):
    """``{name: median ms}``."""
    return {name: float(np.median(values)) for name, values in times.items()}
