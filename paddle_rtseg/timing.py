"""Side-by-side latency measurement: candidates run in turn, so machine noise hits all alike."""
import time

import numpy as np


def round_robin(candidates, inputs, repeats, warmup=1):
    """``{name: [ms, ...]}`` for ``candidates`` (``{name: fn(inputs)}``): after ``warmup`` calls
    each, every repeat calls each candidate once, in turn (A/B/A/B...)."""
    times = {name: [] for name in candidates}
    for fn in candidates.values():
        for _ in range(warmup):
            fn(inputs)
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn(inputs)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return times


def medians(times):
    """``{name: median ms}``."""
    return {name: float(np.median(values)) for name, values in times.items()}
