"""When a metric history crosses a bounty's target, and which crossings win its slots.

Pure functions over plain values, so the sensor, the tests and a notebook all judge a run the
same way.

A value counts only when it is a finite number. MLflow's SQL store cannot hold infinities: it
writes ±inf as ±``sys.float_info.max`` and hands that back on read, so those two values are read
as the infinities they stand for and never count either.

Thresholds are exact decimals. A logged value is compared as the shortest decimal that reads
back as the same float (``repr``), which is what MLflow shows: a logged 0.93 reaches a threshold
of 0.93 and a logged 0.1 reaches "below 0.1", while 0.9299999999999999 does not reach 0.93. The
binary expansion of the float (0.1 is 0.1000000000000000055...) would make the same typed
number win under one direction and lose under the other.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from pf_platform.escrow.bounties import ABOVE, ANY, BELOW, FINAL

_SQL_STORE_INFINITY = sys.float_info.max


@dataclass(frozen=True)
class MetricPoint:
    """One logged value of a metric: MLflow's (value, timestamp in ms, step)."""

    value: float
    timestamp_ms: int
    step: int


@dataclass(frozen=True)
class Crossing:
    """A run of an agent whose metric reached the target, and the point where it did."""

    agent_id: str
    run_id: str
    value: float
    timestamp_ms: int
    step: int

    @property
    def order(self) -> tuple[int, int, str]:
        """Earlier crossings win: by metric timestamp, then step, then run id."""
        return (self.timestamp_ms, self.step, self.run_id)


def counts(value: float) -> bool:
    """Whether a logged value can win anything: a finite number that is not a stored infinity."""
    return math.isfinite(value) and abs(value) != _SQL_STORE_INFINITY


def reaches(value: float, threshold: Decimal, direction: str) -> bool:
    """Whether ``value`` is at or beyond ``threshold`` in the bounty's direction.

    Args:
        value: a logged metric value.
        threshold: the bounty's target.
        direction: ``above`` or ``below``.
    """
    if not counts(value):
        return False
    exact = Decimal(repr(float(value)))
    if direction == ABOVE:
        return exact >= threshold
    if direction == BELOW:
        return exact <= threshold
    raise ValueError(f"direction must be above or below, not {direction!r}")


def crossing_point(
    history: Iterable[MetricPoint], threshold: Decimal, direction: str, rule: str
) -> MetricPoint | None:
    """The point at which a run's history meets the target, if it does.

    Args:
        history: every value logged for the metric in one run, in any order.
        threshold: the target.
        direction: ``above`` or ``below``.
        rule: ``any``: the earliest value (by timestamp, then step) that reaches the target, even
            if later values fall back; ``final``: the value at the highest step (the latest one
            logged at that step), which must itself reach the target.

    Returns:
        The winning point, or None.
    """
    points = list(history)
    if rule == ANY:
        hits = [p for p in points if reaches(p.value, threshold, direction)]
        return min(hits, key=lambda p: (p.timestamp_ms, p.step), default=None)
    if rule == FINAL:
        last = max(points, key=lambda p: (p.step, p.timestamp_ms), default=None)
        if last is not None and reaches(last.value, threshold, direction):
            return last
        return None
    raise ValueError(f"rule must be any or final, not {rule!r}")


def first_crossing_per_agent(crossings: Iterable[Crossing]) -> dict[str, Crossing]:
    """Each agent's earliest crossing over all of its runs."""
    best: dict[str, Crossing] = {}
    for crossing in crossings:
        held = best.get(crossing.agent_id)
        if held is None or crossing.order < held.order:
            best[crossing.agent_id] = crossing
    return best


def choose_winners(
    crossings: Iterable[Crossing], slots: int, exclude: Iterable[str] = ()
) -> list[Crossing]:
    """The crossings that take the free winner slots, earliest first.

    An agent wins at most once, with its earliest crossing. When more agents cross than there are
    slots, the earliest crossings win (timestamp, then step, then run id), so two agents seen in
    the same tick are always ranked the same way.

    Args:
        crossings: every crossing found, of any number of runs and agents.
        slots: winner slots still free.
        exclude: agents that already hold a slot or were refused, never chosen again.
    """
    if slots <= 0:
        return []
    excluded = set(exclude)
    best = first_crossing_per_agent(c for c in crossings if c.agent_id not in excluded)
    return sorted(best.values(), key=lambda c: c.order)[:slots]
