"""Unit tests of the pure fault logic: the token bucket and the fault schedule, clocks injected."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from pf_platform.sandbox.faults import FaultInjector, InvalidKnobError, TokenBucket


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_and_refuses_the_request_past_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_minute=60, burst=3, clock=clock)

    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(1.0)


def test_bucket_refills_at_its_rate_and_never_above_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_minute=120, burst=2, clock=clock)
    bucket.try_acquire()
    bucket.try_acquire()

    clock.now += 0.25
    assert bucket.try_acquire() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.try_acquire() == 0.0

    clock.now += 3600
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_bucket_ignores_a_clock_that_steps_backwards() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_minute=60, burst=1, clock=clock)
    bucket.try_acquire()

    clock.now -= 100
    assert bucket.try_acquire() == pytest.approx(1.0)


def test_rate_limit_answers_429_with_retry_after_rounded_up() -> None:
    clock = FakeClock()
    faults = FaultInjector(clock=clock)
    faults.update({"rate_limit_rpm": 6, "burst": 1})

    assert faults.plan().rejection is None
    clock.now += 0.5
    rejection = faults.plan().rejection

    assert rejection is not None
    assert (rejection.status, rejection.code, rejection.kind) == (
        429,
        "rate_limited",
        "rate_limited",
    )
    assert rejection.retry_after == "10"  # 9.5 s until the next token, rounded up


def test_default_burst_is_one_second_of_requests() -> None:
    faults = FaultInjector(clock=FakeClock())
    faults.update({"rate_limit_rpm": 600})

    outcomes = [faults.plan().rejection is None for _ in range(11)]

    assert outcomes == [True] * 10 + [False]


def test_rate_limit_of_zero_or_null_means_no_limit() -> None:
    faults = FaultInjector(clock=FakeClock())
    for rpm in (0, None):
        faults.update({"rate_limit_rpm": rpm})
        assert all(faults.plan().rejection is None for _ in range(100))


def test_storm_rejects_exactly_count_requests_in_both_forms() -> None:
    faults = FaultInjector(clock=FakeClock(), wall_clock=lambda: 1_700_000_000.0)
    faults.update({"storm_429": {"count": 2, "retry_after": 3}})

    first, second, third = (faults.plan().rejection for _ in range(3))

    assert first is not None and second is not None and third is None
    assert first.retry_after == "3" and first.kind == "storm_429"
    assert faults.knobs.storm_429.count == 0

    faults.update({"storm_429": {"count": 1, "retry_after": 5, "form": "http-date"}})
    rejection = faults.plan().rejection
    assert rejection is not None
    assert parsedate_to_datetime(rejection.retry_after).timestamp() == 1_700_000_005


def test_seeded_schedule_repeats_and_does_not_shift_when_knobs_change() -> None:
    faults = FaultInjector()
    faults.update({"seed": 42, "error_before_commit_rate": 0.5})
    first = [faults.plan().rejection is not None for _ in range(50)]

    faults.update({"seed": 42, "latency_ms": 7, "error_after_commit_rate": 0.2})
    second = [faults.plan().rejection is not None for _ in range(50)]

    assert first == second
    assert 10 < sum(first) < 40


def test_after_commit_faults_are_chosen_in_order_error_timeout_drop() -> None:
    faults = FaultInjector()
    faults.update({"error_after_commit_rate": 1, "timeout_after_commit_rate": 1, "hang_seconds": 2})
    assert faults.plan().after_commit == "error"

    faults.update({"error_after_commit_rate": 0})
    plan = faults.plan()
    assert (plan.after_commit, plan.hang_seconds) == ("timeout", 2.0)

    faults.update({"timeout_after_commit_rate": 0, "drop_after_commit_rate": 1})
    assert faults.plan().after_commit == "drop"


def test_latency_is_planned_in_seconds() -> None:
    faults = FaultInjector()
    faults.update({"latency_ms": 250})

    assert faults.plan().latency_seconds == 0.25


@pytest.mark.parametrize(
    "changes",
    [
        {"nope": 1},
        {"error_before_commit_rate": 1.5},
        {"latency_ms": -1},
        {"latency_ms": True},
        {"burst": 0},
        {"hang_seconds": 0},
        {"storm_429": {"count": 1, "form": "minutes"}},
        {"storm_429": 3},
    ],
)
def test_invalid_knobs_are_refused_and_change_nothing(changes: dict) -> None:
    faults = FaultInjector()
    before = faults.knobs

    with pytest.raises(InvalidKnobError):
        faults.update(changes)

    assert faults.knobs == before
