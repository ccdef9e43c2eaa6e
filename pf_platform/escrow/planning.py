"""What the release sensor asks for on one tick: pure planning over what is already known.

Exactly one release is requested per (escrow, winner), whatever happens to the sensor. Three
records say what was already asked for, and the plan consults all of them:

- the cursor: every (bounty, agent) requested, with the attempt number, as of the last tick
  that completed;
- the Dagster runs tagged with the bounty and agent, which exist even when the tick that
  requested them crashed before its cursor was stored;
- escrow.releases, which says how each release ended.

A winner keeps its slot once requested. Its release is requested again, under a new run key,
only when its latest run failed and its row is not final (paid and written back to MLflow, or
refused by the API), and at most ``MAX_RELEASE_ATTEMPTS`` times in all; after that every tick
reports it as needing a person, so it is never dropped in silence. A refusal (the escrow
expired, the agent is not eligible, no slot left) is final and never retried.

An escrow whose expiry has passed is not released to anyone new; instead a sync of its state is
requested (once per ``SYNC_INTERVAL_SECONDS`` while it stays unsettled) so the refund is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pf_platform.escrow.bounties import Bounty
from pf_platform.escrow.rules import Crossing, choose_winners, first_crossing_per_agent
from pf_platform.escrow.tables import (
    LOCKED,
    REFUSED,
    TERMINAL,
    EscrowRecord,
    ReleaseRecord,
)

MAX_RELEASE_ATTEMPTS = 5
SYNC_INTERVAL_SECONDS = 3600

ACTIVE = "active"
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass(frozen=True)
class ReleaseRequest:
    """A release of one bounty to one winner, for the run that crossed."""

    bounty_id: str
    crossing: Crossing
    attempt: int

    @property
    def agent_id(self) -> str:
        return self.crossing.agent_id

    @property
    def run_key(self) -> str:
        """``<bounty>:<agent>``, with ``:attempt-<n>`` for every attempt after the first."""
        base = f"{self.bounty_id}:{self.agent_id}"
        return base if self.attempt == 1 else f"{base}:attempt-{self.attempt}"


@dataclass(frozen=True)
class SyncRequest:
    """A re-read of an escrow's state from the API, e.g. to record a refund at expiry."""

    bounty_id: str
    bucket: int

    @property
    def run_key(self) -> str:
        return f"{self.bounty_id}:sync:{self.bucket}"


@dataclass(frozen=True)
class RunState:
    """The latest Dagster release run of one (bounty, agent)."""

    attempt: int
    status: str  # ACTIVE, SUCCEEDED or FAILED


@dataclass
class Cursor:
    """The sensor's memory: attempts requested per bounty and agent, and the last sync asked."""

    requested: dict[str, dict[str, int]] = field(default_factory=dict)
    synced: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"requested": self.requested, "synced": self.synced}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Cursor:
        """Reads a stored cursor; a missing or unreadable one starts empty.

        Starting empty is safe: the Dagster runs and escrow.releases still say what was asked.
        """
        try:
            data = json.loads(text) if text else {}
            requested = {
                str(bounty): {str(agent): int(n) for agent, n in agents.items()}
                for bounty, agents in data.get("requested", {}).items()
            }
            synced = {str(bounty): int(n) for bounty, n in data.get("synced", {}).items()}
        except (ValueError, TypeError, AttributeError):
            return cls()
        return cls(requested=requested, synced=synced)


@dataclass
class TickPlan:
    """Everything one tick decided."""

    releases: list[ReleaseRequest] = field(default_factory=list)
    syncs: list[SyncRequest] = field(default_factory=list)
    cursor: Cursor = field(default_factory=Cursor)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


FindCrossings = Callable[[Bounty], list[Crossing]]


def plan_tick(
    escrows: Mapping[str, EscrowRecord],
    releases: Mapping[str, list[ReleaseRecord]],
    runs: Mapping[str, Mapping[str, RunState]],
    cursor: Cursor,
    find_crossings: FindCrossings,
    now: datetime | None = None,
) -> TickPlan:
    """Plans one tick over every recorded escrow.

    Args:
        escrows: escrow.escrows by bounty id.
        releases: escrow.releases rows by bounty id.
        runs: the latest release run per bounty and agent, from the Dagster instance.
        cursor: the cursor of the last completed tick.
        find_crossings: reads MLflow for a bounty's crossings; called only for a bounty that
            has a free slot or a retry whose run is unknown.
        now: the current time (UTC).

    Returns:
        The requests to make and the next cursor. A bounty whose planning raised is left out,
        with its cursor entry unchanged, and named in ``errors``: one unreadable experiment
        does not hold back the others.
    """
    now = now or datetime.now(UTC)
    plan = TickPlan(
        cursor=Cursor(
            requested={b: dict(a) for b, a in cursor.requested.items() if b in escrows},
            synced={b: n for b, n in cursor.synced.items() if b in escrows},
        )
    )
    for bounty_id in sorted(escrows):
        try:
            _plan_bounty(
                plan,
                escrows[bounty_id],
                releases.get(bounty_id, []),
                runs.get(bounty_id, {}),
                find_crossings,
                now,
            )
        except Exception as exc:  # noqa: BLE001 - isolate the bounty; the sensor logs it
            plan.errors[bounty_id] = f"{type(exc).__name__}: {exc}"
    return plan


def _plan_bounty(
    plan: TickPlan,
    escrow: EscrowRecord,
    rows: list[ReleaseRecord],
    runs: Mapping[str, RunState],
    find_crossings: FindCrossings,
    now: datetime,
) -> None:
    bounty_id = escrow.bounty_id
    requested = plan.cursor.requested.get(bounty_id, {})
    by_agent = {row.agent_id: row for row in rows}
    refused = {row.agent_id for row in rows if row.status == REFUSED}
    holders = (set(requested) | set(runs) | set(by_agent)) - refused
    past_expiry = escrow.expires_at is not None and escrow.expires_at <= now
    found: dict[str, Crossing] | None = None
    releases: list[ReleaseRequest] = []
    syncs: list[SyncRequest] = []

    def crossings() -> dict[str, Crossing]:
        # MLflow is read at most once per bounty and tick, and only when something needs it.
        nonlocal found
        if found is None:
            found = first_crossing_per_agent(find_crossings(escrow.bounty()))
        return found

    # Winners already holding a slot: wait, retry, or report them.
    for agent in sorted(holders):
        row = by_agent.get(agent)
        if row is not None and row.is_final:
            continue
        attempt = max(requested.get(agent, 0), runs[agent].attempt if agent in runs else 0)
        run = runs.get(agent)
        if attempt > 0 and (run is None or run.attempt < attempt or run.status != FAILED):
            continue  # requested and not (yet) failed: its run is queued, running or done
        if attempt >= MAX_RELEASE_ATTEMPTS:
            plan.notes.append(
                f"{bounty_id}: the release to {agent} failed {attempt} times and needs a person "
                f"(last state: {row.status if row else 'no row'}, "
                f"{row.error_code if row and row.error_code else 'no API error'})"
            )
            continue
        if row is not None:
            crossing = Crossing(
                agent_id=agent,
                run_id=row.mlflow_run_id,
                value=row.metric_value,
                timestamp_ms=round(row.metric_timestamp.timestamp() * 1000),
                step=row.metric_step,
            )
        else:
            crossing = crossings().get(agent)
        if crossing is None:
            plan.notes.append(f"{bounty_id}: {agent} holds a slot but no crossing run was found")
            continue
        releases.append(ReleaseRequest(bounty_id, crossing, attempt + 1))

    # New winners, while the escrow is open.
    if escrow.status == LOCKED and not past_expiry:
        free = escrow.winners - max(len(holders), escrow.released_count)
        if free > 0:
            candidates = crossings().values()
            for crossing in choose_winners(candidates, free, exclude=holders | refused):
                releases.append(ReleaseRequest(bounty_id, crossing, 1))

    # Past expiry and not settled on our side: ask for the refund to be recorded.
    if escrow.status not in TERMINAL and past_expiry:
        bucket = int(now.timestamp() // SYNC_INTERVAL_SECONDS)
        if plan.cursor.synced.get(bounty_id) != bucket:
            syncs.append(SyncRequest(bounty_id, bucket))

    # Commit this bounty's decisions only now, so a failure above leaves its cursor unchanged.
    for request in releases:
        plan.cursor.requested.setdefault(bounty_id, {})[request.agent_id] = request.attempt
    for request in syncs:
        plan.cursor.synced[bounty_id] = request.bucket
    plan.releases.extend(releases)
    plan.syncs.extend(syncs)
    if escrow.status in TERMINAL and all(row.is_final for row in rows) and not releases:
        # Settled for good; the runs and the table still remember it if anything asks again.
        plan.cursor.requested.pop(bounty_id, None)
        plan.cursor.synced.pop(bounty_id, None)
