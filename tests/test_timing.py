"""The side-by-side timer: candidates alternate, and each timed call waits out the previous one's
spinning worker threads (paddle_rtseg/timing.py)."""
import time

from paddle_rtseg.timing import medians, round_robin


def test_round_robin_alternates_and_pauses_before_each_call():
    calls = []

    def candidate(name, seconds):
        def run(_):
            calls.append((name, time.perf_counter()))
            time.sleep(seconds)
        return run

    times = round_robin({"a": candidate("a", 0.01), "b": candidate("b", 0.03)}, None, repeats=3,
                        warmup=1, settle_s=0.05)
    names = [n for n, _ in calls]
    assert names == ["a", "b"] + ["a", "b"] * 3  # warm-up, then A/B/A/B
    timed = [t for _, t in calls[2:]]
    assert all(later - earlier >= 0.05 for earlier, later in zip(timed, timed[1:]))
    ms = medians(times)
    assert len(times["a"]) == len(times["b"]) == 3
    # the 50 ms pause is not part of the time (else a >= 60 and b >= 80)
    assert 10 <= ms["a"] < 55 and 30 <= ms["b"] < 75
