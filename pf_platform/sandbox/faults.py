"""Fault injection and rate limiting for the sandbox server.

Everything here is pure: no sockets, no asyncio, no sleeping. The server asks a ``FaultInjector``
for a ``FaultPlan`` when a money request arrives and carries the plan out itself. Clocks and the
random generator are injected, so a test can drive the token bucket by hand and a seeded run
replays the same schedule of faults.

Knobs (all can be changed while the server runs, see ``FaultInjector.update``):

- ``latency_ms``: added to every money request before anything else happens.
- ``error_before_commit_rate``: share of requests answered 503 ``injected_error`` before any work.
- ``error_after_commit_rate``: share of POSTs that commit and are then answered 503.
- ``timeout_after_commit_rate`` and ``hang_seconds``: share of POSTs that commit and then hold
  the response for ``hang_seconds``; a client that gives up earlier sees its connection dropped.
- ``drop_after_commit_rate``: share of POSTs that commit and then lose the connection after the
  status line, so the client reads no body.
- ``storm_429``: ``{count, retry_after, form}``; the next ``count`` requests get 429 with a
  ``Retry-After`` of ``retry_after`` seconds, written as seconds or as an HTTP-date.
- ``rate_limit_rpm`` and ``burst``: a token bucket shared by all money requests; 0 or null
  means no limit. ``burst`` defaults to one second's worth of requests (at least 1).
- ``seed``: seeds the random generator; setting it restarts the schedule.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from email.utils import formatdate
from typing import Any

Clock = Callable[[], float]

RETRY_AFTER_FORMS = ("seconds", "http-date")
KNOB_NAMES = (
    "latency_ms",
    "error_before_commit_rate",
    "error_after_commit_rate",
    "timeout_after_commit_rate",
    "drop_after_commit_rate",
    "hang_seconds",
    "storm_429",
    "rate_limit_rpm",
    "burst",
    "seed",
)


class InvalidKnobError(ValueError):
    """A fault knob with an unknown name or a value out of range."""


@dataclass(frozen=True)
class Storm:
    """A run of 429 answers: ``count`` requests left, each told to wait ``retry_after`` s."""

    count: int = 0
    retry_after: int = 1
    form: str = "seconds"


@dataclass(frozen=True)
class FaultKnobs:
    """The settings of a ``FaultInjector``; see the module docstring for their meaning."""

    latency_ms: int = 0
    error_before_commit_rate: float = 0.0
    error_after_commit_rate: float = 0.0
    timeout_after_commit_rate: float = 0.0
    drop_after_commit_rate: float = 0.0
    hang_seconds: float = 30.0
    storm_429: Storm = field(default_factory=Storm)
    rate_limit_rpm: int | None = None
    burst: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The knobs as plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class Rejection:
    """An answer given instead of running the request."""

    status: int
    code: str
    message: str
    kind: str
    retry_after: str | None = None


@dataclass(frozen=True)
class FaultPlan:
    """What to do to one money request.

    Attributes:
        latency_seconds: sleep this long first.
        rejection: answer this instead of running the request; None to run it.
        after_commit: ``"error"`` (answer 503 after the work is done), ``"timeout"`` (hold the
            response ``hang_seconds``), ``"drop"`` (close the connection mid-response) or None.
        hang_seconds: how long a ``"timeout"`` holds the response.
    """

    latency_seconds: float = 0.0
    rejection: Rejection | None = None
    after_commit: str | None = None
    hang_seconds: float = 0.0


class TokenBucket:
    """A token bucket refilled continuously at ``rate_per_minute``, holding at most ``burst``.

    Args:
        rate_per_minute: tokens added per minute; must be positive.
        burst: capacity of the bucket; it starts full.
        clock: monotonic seconds; ``time.monotonic`` unless a test drives it.
    """

    def __init__(self, rate_per_minute: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError("rate_per_minute must be > 0 and burst >= 1")
        self._rate = rate_per_minute / 60.0
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def try_acquire(self) -> float:
        """Takes one token if there is one.

        Returns:
            0.0 when a token was taken, else the seconds until the next token is due.
        """
        now = self._clock()
        # A clock that steps backwards must not drain the bucket.
        elapsed = max(now - self._last, 0.0)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


def default_burst(rate_limit_rpm: int) -> int:
    """One second's worth of requests, and never less than one."""
    return max(1, rate_limit_rpm // 60)


class FaultInjector:
    """Decides, request by request, which fault (if any) the server injects.

    Args:
        knobs: starting knobs; all off by default.
        clock: monotonic seconds for the token bucket.
        wall_clock: Unix seconds, used only to write ``Retry-After`` as an HTTP-date.
    """

    def __init__(
        self,
        knobs: FaultKnobs | None = None,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._knobs = knobs or FaultKnobs()
        self._random = random.Random(self._knobs.seed)
        self._bucket = self._make_bucket(self._knobs)

    @property
    def knobs(self) -> FaultKnobs:
        """The current knobs; the storm's count is what is left of it."""
        return self._knobs

    def update(self, changes: Mapping[str, Any]) -> FaultKnobs:
        """Changes some knobs and keeps the others.

        A new ``seed`` restarts the random schedule; a new ``rate_limit_rpm`` or ``burst``
        starts a full bucket.

        Args:
            changes: knob names to new values, as parsed from JSON or given on the command line.

        Returns:
            The knobs after the change.

        Raises:
            InvalidKnobError: an unknown knob or a value out of range; nothing is changed then.
        """
        unknown = sorted(set(changes) - set(KNOB_NAMES))
        if unknown:
            raise InvalidKnobError(f"unknown fault knobs: {', '.join(unknown)}")

        parsed: dict[str, Any] = {}
        for name, value in changes.items():
            parsed[name] = _PARSERS[name](name, value)
        new = replace(self._knobs, **parsed)

        if "seed" in changes:
            self._random = random.Random(new.seed)
        if (new.rate_limit_rpm, new.burst) != (self._knobs.rate_limit_rpm, self._knobs.burst):
            self._bucket = self._make_bucket(new)
        self._knobs = new
        return new

    def plan(self) -> FaultPlan:
        """Decides the fate of the next money request."""
        knobs = self._knobs
        # Four draws on every request, used or not, so that a seeded schedule does not shift
        # when a knob is switched on or off.
        draw_before, draw_after, draw_timeout, draw_drop = (self._random.random() for _ in range(4))
        latency = knobs.latency_ms / 1000.0

        if knobs.storm_429.count > 0:
            storm = knobs.storm_429
            self._knobs = replace(knobs, storm_429=replace(storm, count=storm.count - 1))
            rejection = Rejection(
                status=429,
                code="rate_limited",
                message=f"too many requests (injected storm); retry after {storm.retry_after} s",
                kind="storm_429",
                retry_after=self._retry_after_header(storm.retry_after, storm.form),
            )
            return FaultPlan(latency_seconds=latency, rejection=rejection)

        if self._bucket is not None:
            wait = self._bucket.try_acquire()
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                rejection = Rejection(
                    status=429,
                    code="rate_limited",
                    message=(
                        f"rate limit of {knobs.rate_limit_rpm} requests per minute exceeded; "
                        f"retry after {seconds} s"
                    ),
                    kind="rate_limited",
                    retry_after=str(seconds),
                )
                return FaultPlan(latency_seconds=latency, rejection=rejection)

        if draw_before < knobs.error_before_commit_rate:
            rejection = Rejection(
                status=503,
                code="injected_error",
                message="service unavailable (injected before commit)",
                kind="error_before_commit",
            )
            return FaultPlan(latency_seconds=latency, rejection=rejection)

        after_commit = None
        if draw_after < knobs.error_after_commit_rate:
            after_commit = "error"
        elif draw_timeout < knobs.timeout_after_commit_rate:
            after_commit = "timeout"
        elif draw_drop < knobs.drop_after_commit_rate:
            after_commit = "drop"
        return FaultPlan(
            latency_seconds=latency, after_commit=after_commit, hang_seconds=knobs.hang_seconds
        )

    def _retry_after_header(self, seconds: int, form: str) -> str:
        if form == "http-date":
            return formatdate(self._wall_clock() + seconds, usegmt=True)
        return str(seconds)

    def _make_bucket(self, knobs: FaultKnobs) -> TokenBucket | None:
        if not knobs.rate_limit_rpm:
            return None
        burst = knobs.burst or default_burst(knobs.rate_limit_rpm)
        return TokenBucket(knobs.rate_limit_rpm, burst, self._clock)


def _number(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise InvalidKnobError(f"{name} must be a number, not {value!r}")
    try:
        number = Decimal(str(value))
    except ArithmeticError as exc:
        raise InvalidKnobError(f"{name} must be a number, not {value!r}") from exc
    if not number.is_finite():
        raise InvalidKnobError(f"{name} must be finite, not {value!r}")
    return number


def _integer(name: str, value: Any, *, minimum: int) -> int:
    number = _number(name, value)
    if number != number.to_integral_value() or number < minimum:
        raise InvalidKnobError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return int(number)


def _rate(name: str, value: Any) -> float:
    number = _number(name, value)
    if not 0 <= number <= 1:
        raise InvalidKnobError(f"{name} must be between 0 and 1, not {value!r}")
    return float(number)


def _optional_integer(name: str, value: Any, *, minimum: int) -> int | None:
    return None if value is None else _integer(name, value, minimum=minimum)


def _parse_storm(name: str, value: Any) -> Storm:
    if value is None:
        return Storm()
    if not isinstance(value, Mapping):
        raise InvalidKnobError(f"{name} must be an object {{count, retry_after, form}}")
    unknown = sorted(set(value) - {"count", "retry_after", "form"})
    if unknown:
        raise InvalidKnobError(f"unknown {name} fields: {', '.join(unknown)}")
    form = value.get("form", "seconds")
    if form not in RETRY_AFTER_FORMS:
        raise InvalidKnobError(f"{name}.form must be one of {', '.join(RETRY_AFTER_FORMS)}")
    return Storm(
        count=_integer(f"{name}.count", value.get("count", 0), minimum=0),
        retry_after=_integer(f"{name}.retry_after", value.get("retry_after", 1), minimum=0),
        form=form,
    )


def _parse_hang(name: str, value: Any) -> float:
    number = _number(name, value)
    if number <= 0:
        raise InvalidKnobError(f"{name} must be > 0, not {value!r}")
    return float(number)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "latency_ms": lambda name, value: _integer(name, value, minimum=0),
    "error_before_commit_rate": _rate,
    "error_after_commit_rate": _rate,
    "timeout_after_commit_rate": _rate,
    "drop_after_commit_rate": _rate,
    "hang_seconds": _parse_hang,
    "storm_429": _parse_storm,
    "rate_limit_rpm": lambda name, value: _optional_integer(name, value, minimum=0) or None,
    "burst": lambda name, value: _optional_integer(name, value, minimum=1),
    "seed": lambda name, value: _optional_integer(name, value, minimum=0),
}
