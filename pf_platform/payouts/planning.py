"""Owed minus paid: which transfers a partition still needs, each under a deterministic key."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pyarrow as pa

from pf_platform.payouts.ledger import SUCCEEDED, UNSETTLED, USDC_TYPE, LedgerRow
from pf_platform.payouts.money import to_usdc
from pf_platform.resources.payments.models import Transfer

MAX_BATCH_SIZE = 1000

SEND = "send"
RESUME = "resume"


def idempotency_key(payout_kind: str, partition_date: str, agent_id: str, sequence: int) -> str:
    """The key of an agent's ``sequence``-th transfer of a partition.

    It depends on nothing but its arguments, so every retry, re-run, backfill or Spark task
    attempt that means the same transfer sends the same key.
    """
    return f"{payout_kind}:{partition_date}:{agent_id}:{sequence}"


@dataclass(frozen=True)
class PlannedTransfer:
    """One transfer a run must settle: a new intent to send, or an earlier unsettled one."""

    idempotency_key: str
    payout_kind: str
    partition_date: str
    agent_id: str
    sequence: int
    amount_usdc: Decimal
    memo: str
    batch_number: int
    action: str

    def intent(self, now: datetime | None = None) -> LedgerRow:
        """The write-ahead ledger row for this transfer, created at ``now`` (default: now)."""
        return LedgerRow.pending(
            idempotency_key=self.idempotency_key,
            payout_kind=self.payout_kind,
            partition_date=self.partition_date,
            agent_id=self.agent_id,
            sequence=self.sequence,
            amount_usdc=self.amount_usdc,
            memo=self.memo,
            now=now,
        )

    def to_transfer(self) -> Transfer:
        """The transfer as the client sends it; raises ``ValueError`` for a refused field."""
        return Transfer(
            recipient_agent_id=self.agent_id,
            amount_usdc=self.amount_usdc,
            memo=self.memo,
            idempotency_key=self.idempotency_key,
        )


@dataclass(frozen=True)
class PayoutPlan:
    transfers: list[PlannedTransfer]
    paid: dict[str, Decimal]
    overpaid: dict[str, Decimal]

    @property
    def batch_count(self) -> int:
        return len({transfer.batch_number for transfer in self.transfers})


def plan_payouts(
    owed: Mapping[str, Decimal],
    ledger: Iterable[LedgerRow],
    *,
    payout_kind: str,
    partition_date: str,
    batch_size: int = MAX_BATCH_SIZE,
    memo: str | None = None,
) -> PayoutPlan:
    """Plans the transfers that bring every agent's paid total up to what it is owed.

    For each agent: earlier intents whose outcome is unknown are resumed under their own key and
    amount; whatever is still owed beyond what succeeded or is in flight becomes one new transfer
    with the next sequence number (a top-up when the day was paid before). An agent paid more
    than it is owed gets nothing and is reported, never clawed back.

    Args:
        owed: the amount each agent has earned in total for the partition.
        ledger: the partition's ledger rows for this payout kind.
        payout_kind: the kind of payout, part of every key (``labeling``, ...).
        partition_date: the partition, part of every key.
        batch_size: the most transfers in one request, at most 1,000.
        memo: the memo for new transfers.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be within 1..{MAX_BATCH_SIZE}, not {batch_size}")
    rows_by_agent: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in ledger:
        rows_by_agent[row.agent_id].append(row)
    memo = memo or f"{payout_kind} payout for {partition_date}"

    pending: list[tuple[str, int, str, Decimal, str, str]] = []
    paid: dict[str, Decimal] = {}
    overpaid: dict[str, Decimal] = {}
    for agent_id in sorted(set(owed) | set(rows_by_agent)):
        rows = sorted(rows_by_agent.get(agent_id, []), key=lambda row: row.sequence)
        succeeded = sum((row.amount_usdc for row in rows if row.status == SUCCEEDED), Decimal(0))
        in_flight = [row for row in rows if row.status in UNSETTLED]
        for row in in_flight:
            pending.append(
                (agent_id, row.sequence, row.idempotency_key, row.amount_usdc, row.memo, RESUME)
            )
        due = to_usdc(owed.get(agent_id, Decimal(0)))
        outstanding = due - succeeded - sum((row.amount_usdc for row in in_flight), Decimal(0))
        paid[agent_id] = succeeded
        if succeeded > due:
            overpaid[agent_id] = succeeded - due
        if outstanding > 0:
            sequence = rows[-1].sequence + 1 if rows else 0
            key = idempotency_key(payout_kind, partition_date, agent_id, sequence)
            pending.append((agent_id, sequence, key, outstanding, memo, SEND))

    transfers = [
        PlannedTransfer(
            idempotency_key=key,
            payout_kind=payout_kind,
            partition_date=partition_date,
            agent_id=agent_id,
            sequence=sequence,
            amount_usdc=amount,
            memo=row_memo,
            batch_number=index // batch_size,
            action=action,
        )
        for index, (agent_id, sequence, key, amount, row_memo, action) in enumerate(pending)
    ]
    return PayoutPlan(transfers=transfers, paid=paid, overpaid=overpaid)


PLAN_SCHEMA = pa.schema(
    [
        ("idempotency_key", pa.string()),
        ("payout_kind", pa.string()),
        ("partition_date", pa.string()),
        ("agent_id", pa.string()),
        ("sequence", pa.int32()),
        ("amount_usdc", USDC_TYPE),
        ("memo", pa.string()),
        ("batch_number", pa.int32()),
        ("action", pa.string()),
    ]
)


def plan_to_arrow(transfers: Iterable[PlannedTransfer]) -> pa.Table:
    """Planned transfers as a table of ``PLAN_SCHEMA`` (payout_batches, Spark task slices)."""
    transfers = list(transfers)
    return pa.Table.from_pydict(
        {name: [getattr(t, name) for t in transfers] for name in PLAN_SCHEMA.names},
        schema=PLAN_SCHEMA,
    )


def plan_from_arrow(table: pa.Table) -> list[PlannedTransfer]:
    """The planned transfers of a table holding at least ``PLAN_SCHEMA``'s columns."""
    return [PlannedTransfer(**row) for row in table.select(PLAN_SCHEMA.names).to_pylist()]
