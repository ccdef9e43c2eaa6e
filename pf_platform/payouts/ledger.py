"""The payout ledger (agents.transactions): one row per transfer intent, in a Delta table.

The protocol that makes a payout exactly-once:

1. An intent row (status ``pending``) is committed *before* its transfer is sent.
2. Each outcome is recorded: ``succeeded`` with the API's tx_id, ``failed`` with the API's error
   code when the API refused the item (the key was not consumed, so nothing moved), ``unknown``
   when no answer came back (timeout, dropped connection, retries exhausted), or ``conflict``
   when the API holds the key for another amount or recipient (the ledger and the API disagree
   about money that may have moved: nothing more is sent for it until a person has looked).
3. A ``pending`` or ``unknown`` row is never re-sent blindly: the next run first looks its key up
   on the API and only re-sends, with the same key, if the API has no transaction for it.

A process killed at any point leaves at worst ``pending`` rows, which step 3 settles.

``succeeded`` is final: an outcome recorded later (say by a second run of the same day that
timed out on the key the first run paid) never overwrites it. Two writers committing at once
conflict in Delta; the loser reloads the table and merges again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pf_platform.delta import open_or_create, read_arrow, retry_on_commit_conflict

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
UNKNOWN = "unknown"
CONFLICT = "conflict"
UNSETTLED = (PENDING, UNKNOWN, CONFLICT)

USDC_TYPE = pa.decimal128(38, 6)

LEDGER_SCHEMA = pa.schema(
    [
        ("idempotency_key", pa.string()),
        ("payout_kind", pa.string()),
        ("partition_date", pa.string()),
        ("agent_id", pa.string()),
        ("sequence", pa.int32()),
        ("amount_usdc", USDC_TYPE),
        ("memo", pa.string()),
        ("status", pa.string()),
        ("tx_id", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("run_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LedgerRow:
    """One transfer intent and what became of it."""

    idempotency_key: str
    payout_kind: str
    partition_date: str
    agent_id: str
    sequence: int
    amount_usdc: Decimal
    memo: str
    status: str = PENDING
    tx_id: str | None = None
    error: str | None = None
    attempts: int = 0
    run_id: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    @classmethod
    def pending(
        cls,
        *,
        idempotency_key: str,
        payout_kind: str,
        partition_date: str,
        agent_id: str,
        sequence: int,
        amount_usdc: Decimal,
        memo: str,
        now: datetime | None = None,
    ) -> LedgerRow:
        """A new intent, created (and last updated) at ``now``, by default the current time."""
        now = now or utc_now()
        return _row_of(
            {
                "idempotency_key": idempotency_key,
                "payout_kind": payout_kind,
                "partition_date": partition_date,
                "agent_id": agent_id,
                "sequence": sequence,
                "amount_usdc": amount_usdc,
                "memo": memo,
                "status": PENDING,
                "tx_id": None,
                "error": None,
                "attempts": 0,
                "run_id": None,
                "created_at": now,
                "updated_at": now,
            }
        )

    def settle(
        self, status: str, *, tx_id=None, error=None, sent=False, run_id=None, now=None
    ) -> LedgerRow:
        """This row with an outcome recorded (``now`` defaults to the current time)."""
        fields = dict(self.__dict__)
        fields["status"] = status
        fields["tx_id"] = tx_id
        fields["error"] = error
        if sent:
            fields["attempts"] = self.attempts + 1
        if run_id:
            fields["run_id"] = run_id
        fields["updated_at"] = now or utc_now()
        return _row_of(fields)


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pauses Python's cycle collector while many objects without cycles are built.

    A million ledger rows are about 15 million objects, and each collection they set off walks
    all the live ones again: reading a million rows took 11.3 to 12.1 s with the collector on
    and 9.3 to 10.0 s with it paused here (column by column, without the dataclass
    ``__init__``; 13.6 s through ``to_pylist`` and ``LedgerRow(**row)``). Nothing built here can
    form a cycle.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _row_of(fields: dict[str, object]) -> LedgerRow:
    """A row holding exactly ``fields`` (every field of the dataclass, nothing else).

    It skips the frozen dataclass's ``__init__``, which sets each of the 14 fields through
    ``object.__setattr__``: at a million transfers, making intents and settling them that way
    took 4.5 s and 2 s of the client's CPU; this takes a fifth of it. ``dataclasses.replace`` was
    slower still.
    """
    row = object.__new__(LedgerRow)
    row.__dict__.update(fields)
    return row


# What recording an outcome changes on a row that already exists.
OUTCOME_COLUMNS = ("status", "tx_id", "error", "attempts", "run_id", "updated_at")
_OUTCOME_SCHEMA = pa.schema(
    [LEDGER_SCHEMA.field(name) for name in ("idempotency_key", "partition_date", *OUTCOME_COLUMNS)]
)


def to_arrow(rows: Iterable[LedgerRow], schema: pa.Schema = LEDGER_SCHEMA) -> pa.Table:
    """The rows as a table of ``schema``'s columns (every ledger column by default)."""
    # Column by column: dataclasses.asdict deep-copies every field of every row, which cost
    # more than the Delta commit itself for a day of 100K transfers.
    rows = list(rows)
    return pa.Table.from_pydict(
        {name: [getattr(row, name) for row in rows] for name in schema.names}, schema=schema
    )


class Ledger:
    """The ledger table at one URI.

    Args:
        uri: the Delta table's location.
        storage_options: object-store credentials and settings for a cloud URI.
    """

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.storage_options = storage_options or None

    def _table(self) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def read(self, partition_date: str, payout_kind: str | None = None) -> list[LedgerRow]:
        """The rows of one partition, optionally of one payout kind."""
        table = self._table()
        if table is None:
            return []
        filters = [("partition_date", "=", partition_date)]
        if payout_kind is not None:
            filters.append(("payout_kind", "=", payout_kind))
        found = read_arrow(table, columns=LEDGER_SCHEMA.names, filters=filters)
        # TODO: a Python object per row costs 9 to 10 s per million rows, read before and after
        # paying; removable when planning and settlement work on Arrow columns.
        with _cycle_collector_paused():
            columns = [found.column(name).to_pylist() for name in LEDGER_SCHEMA.names]
            return [_row_of(dict(zip(LEDGER_SCHEMA.names, values))) for values in zip(*columns)]

    def write_intents(self, rows: list[LedgerRow]) -> None:
        """Commits new intent rows; rows whose key is already recorded are left as they are."""
        if rows:
            self._merge(rows, update=False)

    def record(self, rows: list[LedgerRow]) -> None:
        """Commits outcomes over existing rows, matched on idempotency key."""
        if rows:
            self._merge(rows, update=True)

    @retry_on_commit_conflict
    def _merge(self, rows: list[LedgerRow], *, update: bool) -> None:
        table = open_or_create(
            self.uri,
            LEDGER_SCHEMA,
            partition_by=["partition_date"],
            storage_options=self.storage_options,
        )
        partitions = sorted({row.partition_date for row in rows})
        in_partitions = ", ".join(f"'{value}'" for value in partitions)
        # An outcome only changes its row's outcome columns, so only those are converted and
        # shipped: a third of the cost of the whole row (Decimal and two timestamps per row).
        source = to_arrow(rows, _OUTCOME_SCHEMA if update else LEDGER_SCHEMA)
        merger = table.merge(
            source,
            predicate=(
                f"t.partition_date in ({in_partitions}) and t.idempotency_key = s.idempotency_key"
            ),
            source_alias="s",
            target_alias="t",
        )
        if update:
            merger = merger.when_matched_update(
                {name: f"s.{name}" for name in OUTCOME_COLUMNS},
                predicate=f"t.status <> '{SUCCEEDED}'",
            )
        else:
            merger = merger.when_not_matched_insert_all()
        merger.execute()
