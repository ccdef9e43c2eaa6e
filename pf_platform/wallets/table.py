"""The agents.wallets Delta table: its schema, and reading it as of a version or a time.

The change data feed is switched on when the table is created, so every commit that inserts or
updates a wallet also records the row before and after the change; ``read_changes`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from pf_platform.delta import open_or_create, read_arrow

SCHEMA_NAME = "agents"
TABLE_NAME = "wallets"
CHANGE_FEED_PROPERTY = "delta.enableChangeDataFeed"

USDC_TYPE = pa.decimal128(38, 6)
BTC_TYPE = pa.decimal128(38, 8)
ETH_TYPE = pa.decimal128(38, 18)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

BALANCE_COLUMNS = ("usdc", "btc", "eth")
# What makes a wallet row "changed": a sync rewrites a row only when one of these differs.
TRACKED_COLUMNS = (*BALANCE_COLUMNS, "last_tx_id")

WALLET_SCHEMA = pa.schema(
    [
        pa.field("agent_id", pa.string(), nullable=False),
        pa.field("usdc", USDC_TYPE, nullable=False),
        pa.field("btc", BTC_TYPE, nullable=False),
        pa.field("eth", ETH_TYPE, nullable=False),
        pa.field("last_tx_id", pa.string()),
        pa.field("created_at", TIMESTAMP_TYPE, nullable=False),
        pa.field("updated_at", TIMESTAMP_TYPE, nullable=False),
    ]
)

CHANGE_TYPE_ORDER = ("insert", "update_preimage", "update_postimage", "delete")
CHANGES_SCHEMA = pa.schema(
    [
        *WALLET_SCHEMA,
        pa.field("_change_type", pa.string(), nullable=False),
        pa.field("_commit_version", pa.int64(), nullable=False),
        pa.field("_commit_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


class WalletTableError(RuntimeError):
    """The wallets table is missing, or cannot be read at the version or time asked for."""


def wallets_uri(lake_root: str) -> str:
    """Where agents.wallets lives under a lake root (a folder or a cloud URI)."""
    return f"{lake_root.rstrip('/')}/{SCHEMA_NAME}/{TABLE_NAME}"


def open_for_write(uri: str, storage_options: dict[str, str] | None = None) -> DeltaTable:
    """The table at its latest version, created (with the change data feed on) when missing.

    Args:
        uri: the table's location.
        storage_options: object-store settings for a cloud URI.

    Returns:
        The table, loaded at its latest version.
    """
    table = open_or_create(
        uri,
        WALLET_SCHEMA,
        storage_options=storage_options,
        name=f"{SCHEMA_NAME}.{TABLE_NAME}",
        description="Wallet balances per agent, MERGEd from the payments API.",
        configuration={CHANGE_FEED_PROPERTY: "true"},
    )
    if table.metadata().configuration.get(CHANGE_FEED_PROPERTY) != "true":
        # A table made by hand without the feed would silently lose the history of changes.
        table.alter.set_table_properties({CHANGE_FEED_PROPERTY: "true"})
    return table


def parse_as_of(text: str) -> int | datetime:
    """Reads a table version (``12``) or an ISO 8601 time (``2026-12-01T10:00:00Z``).

    A time without an offset is taken as UTC.

    Raises:
        ValueError: the text is neither.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a table version (0, 1, ...) nor an ISO 8601 time "
            "such as 2026-12-01T10:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Snapshot:
    """The table's rows as of one version.

    Attributes:
        version: the table version read.
        committed_at: when that version was committed (UTC).
        rows: the wallets, ordered by agent_id.
    """

    version: int
    committed_at: datetime
    rows: pa.Table


def read_as_of(
    uri: str,
    as_of: int | datetime | None = None,
    *,
    agents: Sequence[str] = (),
    storage_options: dict[str, str] | None = None,
) -> Snapshot:
    """The wallets as they were at a version or a time (the latest version when None).

    A time selects the last version committed at or before it. Like Spark, delta-rs dates a
    version by its commit file's modification time, which can trail ``committed_at`` (the
    commit's own timestamp) by a few milliseconds.

    Args:
        uri: the table's location.
        as_of: a version number, an aware datetime, or None.
        agents: only these agents; every agent when empty.
        storage_options: object-store settings for a cloud URI.

    Raises:
        WalletTableError: no table at ``uri``, or no version at that number or time.
    """
    table = _open_for_read(uri, storage_options)
    latest = table.version()
    if isinstance(as_of, int) and not 0 <= as_of <= latest:
        raise WalletTableError(f"{uri} has no version {as_of}; it has versions 0 to {latest}")
    if as_of is not None:
        try:
            table.load_as_version(as_of)
        except (DeltaError, ValueError) as exc:
            raise WalletTableError(f"{uri} cannot be read as of {_describe(as_of)}: {exc}") from exc
    version = table.version()
    committed_at = _committed_at(uri, storage_options, version)
    if isinstance(as_of, datetime) and as_of < committed_at:
        # delta-rs falls back to the first version; a time before the table existed has no rows
        # to show, and saying so beats printing an empty table as if it were the answer.
        raise WalletTableError(
            f"{uri} did not exist yet at {_describe(as_of)}; its first version was committed "
            f"at {committed_at.isoformat()}"
        )
    rows = read_arrow(table)
    if agents:
        rows = rows.filter(pc.is_in(rows["agent_id"], pa.array(list(agents), pa.string())))
    rows = rows.sort_by([("agent_id", "ascending")])
    return Snapshot(version, committed_at, rows)


def read_changes(
    uri: str,
    since: int,
    until: int | None = None,
    *,
    agents: Sequence[str] = (),
    storage_options: dict[str, str] | None = None,
) -> pa.Table:
    """Rows of the change data feed committed in versions ``since`` to ``until`` (inclusive).

    Each row is a wallet as inserted (``insert``) or as it was before and after an update
    (``update_preimage``, ``update_postimage``), with ``_commit_version`` and
    ``_commit_timestamp``. A ``since`` past the latest version gives no rows.

    Args:
        uri: the table's location.
        since: the first version to include.
        until: the last version to include; the latest when None.
        agents: only these agents; every agent when empty.
        storage_options: object-store settings for a cloud URI.

    Returns:
        The changes, ordered by version, agent and (pre-image first) change type.

    Raises:
        WalletTableError: no table at ``uri``, or a version range that does not exist.
    """
    table = _open_for_read(uri, storage_options)
    latest = table.version()
    empty = CHANGES_SCHEMA.empty_table()
    if since > latest or (until is not None and until < since):
        return empty
    try:
        feed = table.load_cdf(starting_version=since, ending_version=until)
        # delta-rs hands out string views and a zone-less commit time (in UTC); one fixed
        # schema is easier on every reader.
        changes = pa.RecordBatchReader.from_stream(feed).read_all().cast(CHANGES_SCHEMA)
    except DeltaError as exc:
        raise WalletTableError(
            f"cannot read the change feed of {uri} from version {since}: {exc}"
        ) from exc
    if agents:
        changes = changes.filter(pc.is_in(changes["agent_id"], pa.array(list(agents), pa.string())))
    # Ranked, not sorted by name, so that an update reads as before, then after.
    rank = pc.index_in(changes["_change_type"], value_set=pa.array(CHANGE_TYPE_ORDER))
    ordered = changes.append_column("_rank", rank).sort_by(
        [("_commit_version", "ascending"), ("agent_id", "ascending"), ("_rank", "ascending")]
    )
    return ordered.drop_columns(["_rank"])


def _open_for_read(uri: str, storage_options: dict[str, str] | None) -> DeltaTable:
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        raise WalletTableError(
            f"no wallets table at {uri}: materialize agent_wallets first"
        ) from None


def _committed_at(uri: str, storage_options: dict[str, str] | None, version: int) -> datetime:
    """The commit time of one version.

    Read from a table loaded at its latest version: delta-rs 1.6 lists the history of a table
    loaded at an older version with shifted version numbers.
    """
    latest = DeltaTable(uri, storage_options=storage_options)
    for entry in latest.history(limit=latest.version() - version + 1):
        if entry.get("version") == version:
            return datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
    # The log entry was cleaned up (log retention); the version itself is still readable.
    return datetime.fromtimestamp(0, UTC)


def _describe(as_of: int | datetime) -> str:
    return f"version {as_of}" if isinstance(as_of, int) else as_of.isoformat()
