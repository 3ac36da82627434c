"""The side-by-side timer: candidates alternate in an order shuffled per repeat, and each timed call
waits out the previous one's spinning worker threads (paddle_rtseg/benchmarks/timing.py).

The timer reads ``time.perf_counter`` and pauses with ``time.sleep``; the tests replace its ``time``
with a virtual clock that only the candidates and the pauses advance, so a loaded machine cannot change
what they measure (a real 10 ms sleep read 57 ms under load)."""
import types

import pytest

from paddle_rtseg.benchmarks import timing
from paddle_rtseg.benchmarks.timing import medians, round_robin


class Clock:
    """Seconds that pass only when ``advance`` or ``pause`` says so; ``log`` records each pause."""

    def __init__(self):
        self.now, self.log = 0.0, []

    def advance(self, seconds):
        self.now += seconds

    def pause(self, seconds):
        self.log.append(("pause", seconds))
        self.advance(seconds)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    # the timer module's own name ``time`` becomes this clock (the real module stays untouched)
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: c.now,
                                                              sleep=lambda s: c.pause(s)))
    return c


def test_round_robin_alternates_and_pauses_before_each_call(clock):
    calls = []

    def candidate(name, seconds):
        def run(_):
            calls.append((name, clock.now))
            clock.advance(seconds)
        return run

    times = round_robin({"a": candidate("a", 0.01), "b": candidate("b", 0.03)}, None, repeats=3,
                        warmup=1, settle_s=0.05)
    names = [n for n, _ in calls]
    assert names[:2] == ["a", "b"]  # warm-up
    assert all(sorted(names[i:i + 2]) == ["a", "b"] for i in range(2, 8, 2))  # each once a repeat
    assert [p for p in clock.log] == [("pause", 0.05)] * 6  # one pause before each timed call
    timed = [t for _, t in calls[2:]]
    assert all(later - earlier >= 0.05 for earlier, later in zip(timed, timed[1:]))
    # the 50 ms pause is not part of the time (else a = 60 and b = 80)
    assert times == {"a": [pytest.approx(10.0)] * 3, "b": [pytest.approx(30.0)] * 3}
    assert medians(times) == {"a": pytest.approx(10.0), "b": pytest.approx(30.0)}


def test_no_candidate_always_follows_the_same_one():
    calls = []
    candidates = {name: (lambda _, name=name: calls.append(name)) for name in "abc"}
    round_robin(candidates, None, repeats=12, warmup=0, settle_s=0)
    rounds = [calls[i:i + 3] for i in range(0, 36, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    predecessors = {name: {calls[i - 1] for i in range(1, 36) if calls[i] == name} for name in "abc"}
    assert all(before >= set("abc") - {name} for name, before in predecessors.items()), predecessors
    assert round_robin(candidates, None, 12, 0, 0) and calls[36:] == calls[:36]  # seeded


def test_calls_per_turn_time_the_warm_calls_only(clock):
    """calls=3: three back-to-back calls a turn, the first (cold: 50 ms here) not counted; the warm
    ones take 10 and 20 ms, so the turn records their median, 15 ms."""
    log = []

    def candidate(_):
        cold = not log or log[-1] == "pause"
        log.append("call")
        warm_calls = len(log) - 1 - max(i for i, e in enumerate(log) if e == "pause") - 1
        clock.advance(0.05 if cold else 0.01 * warm_calls)

    clock_pause = clock.pause

    def pause(seconds):
        log.append("pause")
        clock_pause(seconds)

    clock.pause = pause
    times = round_robin({"a": candidate}, None, repeats=4, warmup=0, settle_s=0.02, calls=3)
    assert log == ["pause", "call", "call", "call"] * 4
    assert times == {"a": [pytest.approx(15.0)] * 4}, times
    log.clear()
    single = round_robin({"a": candidate}, None, repeats=2, warmup=0, settle_s=0.02)
    assert single == {"a": [pytest.approx(50.0)] * 2}, single  # calls=1: the single (cold) call
