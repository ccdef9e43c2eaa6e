"""Settle a payout plan against the API, recording every outcome in the ledger.

``pay_planned`` is the whole ledger protocol for one run of one partition: commit an intent for
every new transfer before anything is sent; for transfers an earlier run left unsettled, ask the
API whether their key was paid; send the rest in parallel batches; and record each batch's
outcomes as they arrive, committing them to the ledger in groups from a thread of their own, so
sending never waits for Delta and a run killed halfway leaves little to look up. Who sends the
batches is the ``fan_out``'s business (this process or Spark tasks). It imports no Dagster, so
tests and Spark executors drive it directly.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Self

from pf_platform.payouts.ledger import (
    CONFLICT,
    FAILED,
    SUCCEEDED,
    UNKNOWN,
    UNSETTLED,
    Ledger,
    LedgerRow,
    utc_now,
)
from pf_platform.payouts.planning import RESUME, PlannedTransfer
from pf_platform.resources.payments.client import BatchOutcome, PurpleFleaClient, send_batches
from pf_platform.resources.payments.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    PermissionDeniedError,
    PurpleFleaError,
)
from pf_platform.resources.payments.models import Transfer

if TYPE_CHECKING:
    from pf_platform.payouts.fanout import FanOut

INSUFFICIENT_FUNDS = "insufficient_funds"
DEFAULT_FLUSH_ROWS = 5000
DEFAULT_FLUSH_SECONDS = 2.0

OnSettled = Callable[[list[LedgerRow]], None]


@dataclass(repr=False)
class SettlementReport:
    """What one run did with a plan."""

    rows: list[LedgerRow] = field(default_factory=list)
    transfers_sent: int = 0
    requests_sent: int = 0
    reconciled: int = 0
    batch_latencies_ms: list[float] = field(default_factory=list)
    stopped_reason: str | None = None
    # Keys this run found already paid: by lookup, or answered as a replay of an earlier request.
    confirmed_keys: set[str] = field(default_factory=set)

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats a finished task's result when it reprs the task, and
        # the default repr of 100K rows took seconds.
        return (
            f"SettlementReport(rows={len(self.rows)}, transfers_sent={self.transfers_sent}, "
            f"requests_sent={self.requests_sent}, stopped_reason={self.stopped_reason!r})"
        )

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    def paid(self) -> Decimal:
        """USDC that moved on this run's own requests (replays and lookups excluded).

        A replay answering this run's retry after a lost response counts as confirmed, not
        paid: the API's answer cannot tell which attempt moved the money.
        """
        return sum(
            (
                row.amount_usdc
                for row in self.rows
                if row.status == SUCCEEDED and row.idempotency_key not in self.confirmed_keys
            ),
            Decimal(0),
        )

    def confirmed(self) -> Decimal:
        """USDC this run found already paid under its keys."""
        return sum(
            (
                row.amount_usdc
                for row in self.rows
                if row.status == SUCCEEDED and row.idempotency_key in self.confirmed_keys
            ),
            Decimal(0),
        )


def pay_planned(
    ledger: Ledger,
    fan_out: FanOut,
    planned: Sequence[PlannedTransfer],
    *,
    partition_date: str,
    payout_kind: str,
    run_id: str,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
    flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> SettlementReport:
    """Runs the ledger protocol for one partition's plan; returns what this run settled.

    Args:
        ledger: the payout ledger.
        fan_out: sends the batches, from this process or from Spark tasks
            (``pf_platform.payouts.fanout``).
        planned: the transfers payout planning produced for the partition.
        partition_date: the partition.
        payout_kind: the payout kind of the plan.
        run_id: recorded on every row this run settles.
        flush_rows: settled rows gathered before a commit of outcomes starts.
        flush_seconds: the least time between the starts of two commits of outcomes.
        progress: called with (recorded so far, planned) after each commit of outcomes.
    """
    if not planned:
        return SettlementReport()
    existing = {row.idempotency_key: row for row in ledger.read(partition_date, payout_kind)}
    # A plan made before another run settled part of the day (two runs at once, a retry of a
    # stale step): what the ledger holds as succeeded is final, so it is neither sent nor
    # looked up again.
    planned = [
        t
        for t in planned
        if (row := existing.get(t.idempotency_key)) is None or row.status != SUCCEEDED
    ]
    if not planned:
        return SettlementReport()
    now = utc_now()
    new_intents = [t.intent(now) for t in planned if t.idempotency_key not in existing]
    # Write-ahead: every new intent is committed before any request can carry it.
    ledger.write_intents(new_intents)
    intents = {**existing, **{row.idempotency_key: row for row in new_intents}}

    with OutcomeRecorder(
        ledger, flush_rows, flush_seconds, lambda done: progress and progress(done, len(planned))
    ) as recorder:
        return fan_out.settle(planned, intents, run_id=run_id, on_settled=recorder.add)


class OutcomeRecorder:
    """Commits settled ledger rows from a thread of its own while the batches go on.

    Rows gather on the caller's thread. Once ``min_rows`` have gathered and ``min_seconds``
    have passed since the last commit began, one background commit takes all of them, and rows
    settled meanwhile wait for the next: sending never waits for Delta (a merge into a
    partition of a million rows takes most of a second), and commits grow with the pace
    instead of queueing. On exit everything still gathered is committed before returning, also
    when the run is failing. A failed commit is raised by the next ``add`` or on exit; its rows
    stay ``pending`` in the ledger, which the next run looks up before sending anything.

    Args:
        ledger: the payout ledger.
        min_rows: rows gathered before a commit starts.
        min_seconds: the least time between the starts of two commits.
        on_recorded: called on the caller's thread with the count recorded so far.
    """

    def __init__(
        self,
        ledger: Ledger,
        min_rows: int,
        min_seconds: float,
        on_recorded: Callable[[int], object] = lambda done: None,
    ) -> None:
        self._ledger = ledger
        self._min_rows = min_rows
        self._min_seconds = min_seconds
        self._on_recorded = on_recorded
        self._gathered: list[LedgerRow] = []
        self._committing: Future[None] | None = None
        self._committing_rows = 0
        self._last_start = -math.inf
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-outcomes")
        self.recorded = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            try:
                self._wait()
            finally:
                # Rows gathered after a failed commit are still recorded before its error rises.
                if self._gathered:
                    rows, self._gathered = self._gathered, []
                    self._ledger.record(rows)
                    self._count(len(rows))
        finally:
            self._pool.shutdown(wait=True)

    def add(self, rows: list[LedgerRow]) -> None:
        """Takes settled rows; starts a commit when enough rows and time have gathered."""
        self._gathered.extend(rows)
        if self._committing is not None and self._committing.done():
            self._wait()
        if (
            self._committing is None
            and len(self._gathered) >= self._min_rows
            and time.monotonic() - self._last_start >= self._min_seconds
        ):
            rows, self._gathered = self._gathered, []
            self._last_start = time.monotonic()
            self._committing_rows = len(rows)
            self._committing = self._pool.submit(self._ledger.record, rows)

    def _wait(self) -> None:
        if self._committing is None:
            return
        committing, self._committing = self._committing, None
        committing.result()
        self._count(self._committing_rows)

    def _count(self, rows: int) -> None:
        self.recorded += rows
        self._on_recorded(self.recorded)


async def settle_plan(
    client: PurpleFleaClient,
    planned: Sequence[PlannedTransfer],
    intents: dict[str, LedgerRow],
    *,
    batch_size: int,
    concurrency: int,
    run_id: str,
    on_settled: OnSettled,
) -> SettlementReport:
    """Settles every planned transfer once: reconciled, succeeded, failed or still unknown.

    Sending stops early, leaving the unsent intents pending for the next run, when the API
    reports insufficient funds or refuses the key: the remaining batches would only be refused
    too. ``report.stopped_reason`` says which.

    Args:
        client: an open API client.
        planned: the plan's transfers; their intents are already committed.
        intents: the committed ledger row of each planned transfer, by idempotency key.
        batch_size: transfers per request.
        concurrency: requests in flight at once.
        run_id: the Dagster run, recorded on each row it settles.
        on_settled: receives each group of settled rows as soon as it is known.
    """
    report = SettlementReport()

    def settled(rows: list[LedgerRow]) -> None:
        report.rows.extend(rows)
        on_settled(rows)

    resumed = [transfer for transfer in planned if transfer.action == RESUME]
    found = await _reconcile(client, resumed, intents, concurrency, run_id)
    report.reconciled = len(found)
    report.confirmed_keys.update(found)
    if found:
        settled(list(found.values()))

    to_send = [transfer for transfer in planned if transfer.idempotency_key not in found]

    def batches() -> Iterator[list[Transfer]]:
        # Built one batch at a time, as the workers ask: the first request leaves at once instead
        # of after every transfer of the plan is built (2.5 s for a million).
        for start in range(0, len(to_send), batch_size):
            if report.stopped_reason is not None:
                return
            try:
                batch = [transfer.to_transfer() for transfer in to_send[start : start + batch_size]]
            except ValueError as exc:
                # Planning never makes such a transfer; if one appears, nothing more is sent and
                # its intent stays pending, like every transfer after it.
                report.stopped_reason = f"the client refused a planned transfer: {exc}"
                return
            yield batch

    def on_result(outcome: BatchOutcome) -> None:
        report.transfers_sent += len(outcome.transfers)
        report.requests_sent += outcome.attempts
        report.batch_latencies_ms.append(outcome.duration_ms)
        for result in outcome.results or ():
            if result.success and result.replayed and result.idempotency_key:
                report.confirmed_keys.add(result.idempotency_key)
        rows = _outcome_rows(outcome, intents, run_id)
        if any(row.error == INSUFFICIENT_FUNDS for row in rows):
            report.stopped_reason = INSUFFICIENT_FUNDS
        elif isinstance(outcome.error, (AuthenticationError, PermissionDeniedError)):
            report.stopped_reason = f"the API refused the key: {_describe(outcome.error)}"
        settled(rows)

    await send_batches(client, batches(), concurrency, on_result)
    return report


async def _reconcile(
    client: PurpleFleaClient,
    resumed: Sequence[PlannedTransfer],
    intents: dict[str, LedgerRow],
    concurrency: int,
    run_id: str,
) -> dict[str, LedgerRow]:
    """Looks up unsettled keys; returns the rows the API knows, settled.

    A key the API paid as intended is ``succeeded``; a key it holds for another recipient or
    amount is a ``conflict``, never re-sent (a new key would pay the agent a second time).
    """
    records = await lookup_keys(client, [t.idempotency_key for t in resumed], concurrency)
    settled = {}
    for key, found in records.items():
        if not found:
            continue
        intent, record = intents[key], found[0]
        if (record.recipient_agent_id, record.amount_usdc) == (intent.agent_id, intent.amount_usdc):
            settled[key] = intent.settle(SUCCEEDED, tx_id=record.tx_id, run_id=run_id)
        else:
            error = (
                f"the API paid {record.amount_usdc} USDC to {record.recipient_agent_id} under "
                f"this key (tx {record.tx_id}); the ledger meant {intent.amount_usdc} USDC to "
                f"{intent.agent_id}"
            )
            settled[key] = intent.settle(CONFLICT, tx_id=record.tx_id, error=error, run_id=run_id)
    return settled


async def lookup_keys(client: PurpleFleaClient, keys: Sequence[str], concurrency: int) -> dict:
    """The API's transactions for each key, looked up with ``concurrency`` requests in flight.

    A failed lookup propagates: a key whose fate is unknown must not be sent again.
    """
    # TODO: a TaskGroup would cancel the other lookups when one fails (gather leaves them running
    # while the client closes, hence "never awaited" warnings), and the keys already found could
    # be recorded before raising; removable when lookups move to a TaskGroup with except*.
    gate = asyncio.Semaphore(concurrency)
    found: dict = {}

    async def look_up(key: str) -> None:
        async with gate:
            found[key] = await client.get_transactions(key)

    await asyncio.gather(*(look_up(key) for key in keys))
    return found


def _refused(error: PurpleFleaError | None) -> bool:
    """True when the API answered the whole batch with a definite refusal: nothing committed.

    A 4xx other than 429 is decided before anything moves (bad key, bad request);
    every other failure (timeouts, dropped connections, 5xx, 429 after the last attempt) leaves
    the outcome unknown.
    """
    status = getattr(error, "http_status", None)
    return status is not None and 400 <= status < 500 and status != 429


def _outcome_rows(
    outcome: BatchOutcome, intents: dict[str, LedgerRow], run_id: str
) -> list[LedgerRow]:
    now = utc_now()
    if outcome.results is None:
        if isinstance(outcome.error, IdempotencyConflictError):
            # The API holds these keys with other content: money may have moved under them.
            status = CONFLICT
        elif _refused(outcome.error):
            status = FAILED
        else:
            status = UNKNOWN
        error = _describe(outcome.error)
        return [
            intents[transfer.idempotency_key].settle(
                status, error=error, sent=True, run_id=run_id, now=now
            )
            for transfer in outcome.transfers
        ]
    rows = []
    for transfer, result in zip(outcome.transfers, outcome.results, strict=True):
        intent = intents[transfer.idempotency_key]
        if result.success:
            row = intent.settle(SUCCEEDED, tx_id=result.tx_id, sent=True, run_id=run_id, now=now)
        else:
            row = intent.settle(FAILED, error=result.error, sent=True, run_id=run_id, now=now)
        rows.append(row)
    return rows


def _describe(error: PurpleFleaError | None) -> str:
    if error is None:
        return "no response"
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class Reconciliation:
    """The ledger of a partition against the API, key by key."""

    ledger_succeeded: int
    api_transactions: int
    ledger_usdc: Decimal
    api_usdc: Decimal
    mismatches: list[str]

    @property
    def matches(self) -> bool:
        return not self.mismatches


async def reconcile_ledger(
    client: PurpleFleaClient, rows: Sequence[LedgerRow], concurrency: int
) -> Reconciliation:
    """Compares every ledger row of a partition with what the API holds under its key.

    A succeeded row must have exactly one API transaction with the same tx id, recipient and
    amount; a failed row must have none. Pending and unknown rows are reported as unsettled.
    """
    records = await lookup_keys(client, [row.idempotency_key for row in rows], concurrency)
    mismatches: list[str] = []
    api_count, api_usdc = 0, Decimal(0)
    for row in rows:
        found = records[row.idempotency_key]
        api_count += len(found)
        api_usdc += sum((record.amount_usdc for record in found), Decimal(0))
        if row.status in UNSETTLED:
            mismatches.append(f"{row.idempotency_key}: unsettled ({row.status}) {row.error or ''}")
        elif row.status == FAILED and found:
            mismatches.append(f"{row.idempotency_key}: ledger says failed, API paid it")
        elif row.status == SUCCEEDED:
            if len(found) != 1:
                mismatches.append(f"{row.idempotency_key}: {len(found)} API transactions")
            elif (found[0].tx_id, found[0].recipient_agent_id, found[0].amount_usdc) != (
                row.tx_id,
                row.agent_id,
                row.amount_usdc,
            ):
                mismatches.append(f"{row.idempotency_key}: tx, recipient or amount differ")
    succeeded = [row for row in rows if row.status == SUCCEEDED]
    return Reconciliation(
        ledger_succeeded=len(succeeded),
        api_transactions=api_count,
        ledger_usdc=sum((row.amount_usdc for row in succeeded), Decimal(0)),
        api_usdc=api_usdc,
        mismatches=mismatches,
    )
