"""Settle a payout plan against the API, recording every outcome in the ledger.

The caller has already committed an intent row for every planned transfer. This module then,
for transfers an earlier run left unsettled, asks the API whether their key was paid; sends the
rest in parallel batches; and hands each batch's outcomes to ``on_settled`` as they arrive, so
the ledger learns of them while the run is still going.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pf_platform.payouts.ledger import FAILED, SUCCEEDED, UNKNOWN, LedgerRow
from pf_platform.payouts.planning import RESUME, PlannedTransfer
from pf_platform.resources.payments.client import BatchOutcome, PurpleFleaClient, send_batches
from pf_platform.resources.payments.errors import PurpleFleaError
from pf_platform.resources.payments.models import Transfer

OnSettled = Callable[[list[LedgerRow]], None]


@dataclass
class SettlementReport:
    """What one run did with a plan."""

    rows: list[LedgerRow] = field(default_factory=list)
    transfers_sent: int = 0
    requests_sent: int = 0
    reconciled: int = 0
    batch_latencies_ms: list[float] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)


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
    if found:
        settled(list(found.values()))

    to_send = [
        Transfer(
            recipient_agent_id=transfer.agent_id,
            amount_usdc=transfer.amount_usdc,
            memo=transfer.memo,
            idempotency_key=transfer.idempotency_key,
        )
        for transfer in planned
        if transfer.idempotency_key not in found
    ]
    batches = [to_send[start : start + batch_size] for start in range(0, len(to_send), batch_size)]

    def on_result(outcome: BatchOutcome) -> None:
        report.transfers_sent += len(outcome.transfers)
        report.requests_sent += outcome.attempts
        report.batch_latencies_ms.append(outcome.duration_ms)
        settled(_outcome_rows(outcome, intents, run_id))

    await send_batches(client, batches, concurrency, on_result)
    return report


async def _reconcile(
    client: PurpleFleaClient,
    resumed: Sequence[PlannedTransfer],
    intents: dict[str, LedgerRow],
    concurrency: int,
    run_id: str,
) -> dict[str, LedgerRow]:
    """Looks up unsettled keys; returns the rows the API shows as paid, settled."""
    gate = asyncio.Semaphore(concurrency)
    found: dict[str, LedgerRow] = {}

    async def look_up(transfer: PlannedTransfer) -> None:
        async with gate:
            records = await client.get_transactions(transfer.idempotency_key)
        if records:
            found[transfer.idempotency_key] = intents[transfer.idempotency_key].settle(
                SUCCEEDED, tx_id=records[0].tx_id, run_id=run_id
            )

    # A failed lookup propagates: sending a key whose fate is unknown could pay it twice.
    await asyncio.gather(*(look_up(transfer) for transfer in resumed))
    return found


def _outcome_rows(
    outcome: BatchOutcome, intents: dict[str, LedgerRow], run_id: str
) -> list[LedgerRow]:
    if outcome.results is None:
        error = _describe(outcome.error)
        return [
            intents[transfer.idempotency_key].settle(UNKNOWN, error=error, sent=True, run_id=run_id)
            for transfer in outcome.transfers
        ]
    rows = []
    for transfer, result in zip(outcome.transfers, outcome.results, strict=True):
        intent = intents[transfer.idempotency_key]
        if result.success:
            rows.append(intent.settle(SUCCEEDED, tx_id=result.tx_id, sent=True, run_id=run_id))
        else:
            rows.append(intent.settle(FAILED, error=result.error, sent=True, run_id=run_id))
    return rows


def _describe(error: PurpleFleaError | None) -> str:
    if error is None:
        return "no response"
    return f"{type(error).__name__}: {error}"
