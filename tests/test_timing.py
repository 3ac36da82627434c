"""The side-by-side timer: candidates alternate in an order shuffled per repeat, and each timed call
waits out the previous one's spinning worker threads (paddle_rtseg/benchmarks/timing.py)."""
import time

from paddle_rtseg.benchmarks.timing import medians, round_robin


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
    assert names[:2] == ["a", "b"]  # warm-up
    assert all(sorted(names[i:i + 2]) == ["a", "b"] for i in range(2, 8, 2))  # each once a repeat
    timed = [t for _, t in calls[2:]]
    assert all(later - earlier >= 0.05 for earlier, later in zip(timed, timed[1:]))
    ms = medians(times)
    assert len(times["a"]) == len(times["b"]) == 3
    # the 50 ms pause is not part of the time (else a >= 60 and b >= 80)
    assert 10 <= ms["a"] < 55 and 30 <= ms["b"] < 75


def test_no_candidate_always_follows_the_same_one():
    calls = []
    candidates = {name: (lambda _, name=name: calls.append(name)) for name in "abc"}
    round_robin(candidates, None, repeats=12, warmup=0, settle_s=0)
    rounds = [calls[i:i + 3] for i in range(0, 36, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    predecessors = {name: {calls[i - 1] for i in range(1, 36) if calls[i] == name} for name in "abc"}
    assert all(before >= set("abc") - {name} for name, before in predecessors.items()), predecessors
    assert round_robin(candidates, None, 12, 0, 0) and calls[36:] == calls[:36]  # seeded


def test_calls_per_turn_time_the_warm_calls_only(monkeypatch):
    """calls=3: three back-to-back calls a turn, the first (cold: 50 ms here) not counted."""
    log = []
    real_sleep = time.sleep

    def candidate(_):
        cold = not log or log[-1] == "pause"
        log.append("call")
        real_sleep(0.05 if cold else 0.01)

    def pause(seconds):
        log.append("pause")
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", pause)  # the timer's pause between turns
    times = round_robin({"a": candidate}, None, repeats=4, warmup=0, settle_s=0.02, calls=3)
    assert log == ["pause", "call", "call", "call"] * 4
    assert len(times["a"]) == 4 and all(9 <= t < 40 for t in times["a"]), times
    log.clear()
    single = round_robin({"a": candidate}, None, repeats=2, warmup=0, settle_s=0.02)
    assert all(t >= 50 for t in single["a"]), single  # calls=1: the single (cold) call
