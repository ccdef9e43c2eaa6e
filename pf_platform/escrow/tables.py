"""The escrow tables: escrow.escrows (one row per bounty) and escrow.releases (one per winner).

escrow.escrows holds each bounty's terms as locked and the escrow's state as the API last
reported it: ``locked``, ``released`` (every winner paid), ``expired`` (past its expiry, refund
not yet reported) or ``refunded`` (the remainder went back to the payer). A terminal state
(``released``, ``refunded``) is never overwritten by an older, non-terminal one.

escrow.releases holds every release attempt's outcome per (bounty, agent): ``pending`` (written
before the request), ``released`` with the tx id and all three money legs, ``refused`` with the
API's reason (final: never retried), or ``failed`` (no answer; the sensor tries again). A
``released`` row only ever changes its MLflow lineage flag.

Amounts are DECIMAL(38,6). Both tables are small and unpartitioned; writers MERGE on the key and
retry a commit that lost a race.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pf_platform.delta import open_or_create, read_arrow, retry_on_commit_conflict
from pf_platform.escrow.bounties import Bounty
from pf_platform.payouts.ledger import USDC_TYPE

LOCKED = "locked"
RELEASED = "released"
EXPIRED = "expired"
REFUNDED = "refunded"
TERMINAL = (RELEASED, REFUNDED)

PENDING = "pending"
REFUSED = "refused"
FAILED = "failed"

_TIMESTAMP = pa.timestamp("us", tz="UTC")

ESCROWS_SCHEMA = pa.schema(
    [
        ("bounty_id", pa.string()),
        ("escrow_id", pa.string()),
        ("status", pa.string()),
        ("experiment", pa.string()),
        ("metric", pa.string()),
        ("threshold", pa.string()),
        ("direction", pa.string()),
        ("rule", pa.string()),
        ("agent_tag", pa.string()),
        ("eligible_agents", pa.list_(pa.string())),
        ("winners", pa.int32()),
        ("released_count", pa.int32()),
        ("amount_usdc", USDC_TYPE),
        ("share_usdc", USDC_TYPE),
        ("remaining_usdc", USDC_TYPE),
        ("refunded_usdc", USDC_TYPE),
        ("referrer_agent_id", pa.string()),
        ("expiry_seconds", pa.int64()),
        ("memo", pa.string()),
        ("idempotency_key", pa.string()),
        ("lock_tx_id", pa.string()),
        ("refund_tx_id", pa.string()),
        ("created_at", _TIMESTAMP),
        ("expires_at", _TIMESTAMP),
        ("synced_at", _TIMESTAMP),
        ("dagster_run_id", pa.string()),
    ]
)

RELEASES_SCHEMA = pa.schema(
    [
        ("bounty_id", pa.string()),
        ("escrow_id", pa.string()),
        ("agent_id", pa.string()),
        ("status", pa.string()),
        ("mlflow_run_id", pa.string()),
        ("metric", pa.string()),
        ("metric_value", pa.float64()),
        ("metric_step", pa.int64()),
        ("metric_timestamp", _TIMESTAMP),
        ("tx_id", pa.string()),
        ("share_usdc", USDC_TYPE),
        ("amount_usdc", USDC_TYPE),
        ("fee_usdc", USDC_TYPE),
        ("referrer_fee_usdc", USDC_TYPE),
        ("platform_fee_usdc", USDC_TYPE),
        ("referrer_agent_id", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("mlflow_tagged", pa.bool_()),
        ("attempts", pa.int32()),
        ("dagster_run_id", pa.string()),
        ("created_at", _TIMESTAMP),
        ("updated_at", _TIMESTAMP),
    ]
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EscrowRecord:
    """One row of escrow.escrows."""

    bounty_id: str
    escrow_id: str
    status: str
    experiment: str
    metric: str
    threshold: str
    direction: str
    rule: str
    agent_tag: str
    eligible_agents: list[str]
    winners: int
    released_count: int
    amount_usdc: Decimal
    share_usdc: Decimal
    remaining_usdc: Decimal
    refunded_usdc: Decimal
    referrer_agent_id: str | None
    expiry_seconds: int
    memo: str
    idempotency_key: str
    lock_tx_id: str | None
    refund_tx_id: str | None
    created_at: datetime | None
    expires_at: datetime | None
    synced_at: datetime = field(default_factory=utc_now)
    dagster_run_id: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether the escrow may still be released, as far as the last sync knows."""
        return self.status == LOCKED

    def bounty(self) -> Bounty:
        """The bounty's terms as they were locked (later edits of the file do not apply)."""
        return Bounty(
            bounty_id=self.bounty_id,
            experiment=self.experiment,
            metric=self.metric,
            threshold=Decimal(self.threshold),
            eligible_agents=tuple(self.eligible_agents),
            amount_usdc=self.amount_usdc,
            expiry_seconds=self.expiry_seconds,
            direction=self.direction,
            rule=self.rule,
            agent_tag=self.agent_tag,
            winners=self.winners,
            referrer_agent_id=self.referrer_agent_id,
            memo=self.memo,
        )


@dataclass(frozen=True)
class ReleaseRecord:
    """One row of escrow.releases: a winner, its MLflow run and what the release paid."""

    bounty_id: str
    escrow_id: str
    agent_id: str
    status: str
    mlflow_run_id: str
    metric: str
    metric_value: float
    metric_step: int
    metric_timestamp: datetime
    tx_id: str | None = None
    share_usdc: Decimal | None = None
    amount_usdc: Decimal | None = None
    fee_usdc: Decimal | None = None
    referrer_fee_usdc: Decimal | None = None
    platform_fee_usdc: Decimal | None = None
    referrer_agent_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    mlflow_tagged: bool = False
    attempts: int = 0
    dagster_run_id: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    @property
    def is_final(self) -> bool:
        """Nothing is left to do: paid and written back to MLflow, or refused by the API."""
        return (self.status == RELEASED and self.mlflow_tagged) or self.status == REFUSED

    def with_outcome(self, **changes: object) -> ReleaseRecord:
        """This row with an outcome recorded and ``updated_at`` set to now."""
        return replace(self, updated_at=utc_now(), **changes)


class EscrowTables:
    """escrow.escrows and escrow.releases at their URIs.

    Args:
        escrows_uri: location of escrow.escrows.
        releases_uri: location of escrow.releases.
        storage_options: object-store settings for a cloud URI.
    """

    def __init__(
        self, escrows_uri: str, releases_uri: str, storage_options: dict[str, str] | None = None
    ) -> None:
        self.escrows_uri = escrows_uri
        self.releases_uri = releases_uri
        self.storage_options = storage_options or None

    def _read(self, uri: str, filters: list | None = None) -> list[dict]:
        try:
            table = DeltaTable(uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return []
        return read_arrow(table, filters=filters or None).to_pylist()

    def escrows(self) -> dict[str, EscrowRecord]:
        """Every escrow row, by bounty id."""
        return {row["bounty_id"]: EscrowRecord(**row) for row in self._read(self.escrows_uri)}

    def escrow(self, bounty_id: str) -> EscrowRecord | None:
        """The row of one bounty, or None when its escrow was never recorded."""
        rows = self._read(self.escrows_uri, [("bounty_id", "=", bounty_id)])
        return EscrowRecord(**rows[0]) if rows else None

    def releases(self, bounty_id: str | None = None) -> list[ReleaseRecord]:
        """Release rows, of one bounty or of all."""
        filters = None if bounty_id is None else [("bounty_id", "=", bounty_id)]
        return [ReleaseRecord(**row) for row in self._read(self.releases_uri, filters)]

    def release(self, bounty_id: str, agent_id: str) -> ReleaseRecord | None:
        """The release row of one (bounty, agent), or None."""
        rows = self._read(
            self.releases_uri, [("bounty_id", "=", bounty_id), ("agent_id", "=", agent_id)]
        )
        return ReleaseRecord(**rows[0]) if rows else None

    def write_escrow(self, record: EscrowRecord) -> None:
        """Inserts or updates a bounty's row; a terminal state is never moved back."""
        terminal = ", ".join(f"'{status}'" for status in TERMINAL)
        _merge(
            self.escrows_uri,
            _to_arrow([record], ESCROWS_SCHEMA),
            "t.bounty_id = s.bounty_id",
            self.storage_options,
            lambda merger: merger.when_matched_update_all(
                predicate=f"t.status NOT IN ({terminal}) OR s.status IN ({terminal})"
            ),
        )

    def write_release(self, record: ReleaseRecord) -> None:
        """Inserts or updates a (bounty, agent) row; a paid row keeps its money columns."""
        lineage = ("mlflow_tagged", "attempts", "dagster_run_id", "updated_at")
        _merge(
            self.releases_uri,
            _to_arrow([record], RELEASES_SCHEMA),
            "t.bounty_id = s.bounty_id AND t.agent_id = s.agent_id",
            self.storage_options,
            lambda merger: merger.when_matched_update(
                {name: f"s.{name}" for name in lineage}, predicate=f"t.status = '{RELEASED}'"
            ).when_matched_update_all(predicate=f"t.status <> '{RELEASED}'"),
        )


def _to_arrow(records: Iterable[object], schema: pa.Schema) -> pa.Table:
    rows = [asdict(record) for record in records]  # type: ignore[call-overload] - dataclasses
    return pa.Table.from_pylist(rows, schema=schema)


@retry_on_commit_conflict
def _merge(uri, source: pa.Table, predicate: str, storage_options, on_match) -> None:
    table = open_or_create(uri, source.schema, storage_options=storage_options)
    merger = table.merge(source, predicate=predicate, source_alias="s", target_alias="t")
    on_match(merger).when_not_matched_insert_all().execute()
