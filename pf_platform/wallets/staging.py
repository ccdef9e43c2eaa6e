"""Local Parquet spill files that keep a wallet sync's memory bounded.

A listing of N agents is never held in memory whole. Pages are converted to Arrow as they
arrive and appended to Parquet files on local disk, split into a fixed number of parts by a hash
of ``agent_id``; every agent therefore lands in the same part however often it is listed. The
current table is split the same way, so de-duplicating the listing and comparing it with the
table are done one part at a time. Memory holds at most ``flush_rows`` staged rows while
listing (columnar, about 100 bytes a wallet) and about N / parts rows of each side while
comparing, whatever N is.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pf_platform.resources.payments.models import Balance
from pf_platform.wallets.table import (
    BTC_TYPE,
    ETH_TYPE,
    TIMESTAMP_TYPE,
    TRACKED_COLUMNS,
    USDC_TYPE,
)

DEFAULT_PARTS = 16
# Rows buffered across all parts before they are written out as one row group per part.
DEFAULT_FLUSH_ROWS = 50_000

SEQUENCE_COLUMN = "_seq"

# A listed wallet as staged: the API's fields, when its page arrived, and its position in the
# listing (what "the last one wins" is decided on).
LISTED_SCHEMA = pa.schema(
    [
        pa.field("agent_id", pa.string()),
        pa.field("usdc", USDC_TYPE),
        pa.field("btc", BTC_TYPE),
        pa.field("eth", ETH_TYPE),
        pa.field("last_tx_id", pa.string()),
        pa.field("seen_at", TIMESTAMP_TYPE),
        pa.field(SEQUENCE_COLUMN, pa.int64()),
    ]
)

# What a comparison needs from the current table.
CURRENT_COLUMNS = ["agent_id", *TRACKED_COLUMNS]

_TYPE_OF = {"usdc": USDC_TYPE, "btc": BTC_TYPE, "eth": ETH_TYPE}


class WalletDataError(ValueError):
    """A balance from the API that the table cannot store exactly."""


def part_of(agent_id: str, parts: int) -> int:
    """The spill part an agent belongs to; stable across processes and runs."""
    return zlib.crc32(agent_id.encode()) % parts


class PartitionedSpill:
    """Rows appended to one Parquet file per hash part of ``agent_id``.

    Args:
        folder: where the part files go; created when missing.
        schema: the rows' schema; it must have an ``agent_id`` string column.
        parts: how many part files.
        flush_rows: rows buffered in memory, over all parts, before they are written.
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        parts: int = DEFAULT_PARTS,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
    ) -> None:
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.schema = schema
        self.parts = parts
        self.flush_rows = flush_rows
        self.rows = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_parts: list[pa.Array] = []
        self._buffered = 0
        self._writers: dict[int, pq.ParquetWriter] = {}

    def path(self, index: int) -> Path:
        return self.folder / f"part-{index:04d}.parquet"

    def write(self, batch: pa.RecordBatch, agent_ids: Sequence[str] | None = None) -> None:
        """Appends a batch, each row to its agent's part.

        Args:
            batch: rows in this spill's schema.
            agent_ids: the batch's agent ids as Python strings, when the caller has them.
        """
        if batch.num_rows == 0:
            return
        ids = agent_ids if agent_ids is not None else batch.column("agent_id").to_pylist()
        self._buffer.append(batch)
        self._buffer_parts.append(pa.array([part_of(i, self.parts) for i in ids], pa.int32()))
        self.rows += batch.num_rows
        self._buffered += batch.num_rows
        if self._buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Writes the buffered rows, one row group per part."""
        if not self._buffer:
            return
        # Split once per flush rather than once per page: a sort and one slice per part.
        rows = pa.Table.from_batches(self._buffer, self.schema)
        parts = pa.chunked_array(self._buffer_parts)
        order = pc.sort_indices(parts)
        rows, parts = rows.take(order), parts.take(order)
        offset = 0
        # On sorted input, value_counts lists the parts in ascending order.
        for entry in parts.value_counts().to_pylist():
            index, count = entry["values"], entry["counts"]
            writer = self._writers.get(index)
            if writer is None:
                writer = self._writers[index] = pq.ParquetWriter(self.path(index), self.schema)
            writer.write_table(rows.slice(offset, count))
            offset += count
        self._buffer.clear()
        self._buffer_parts.clear()
        self._buffered = 0

    def close(self) -> None:
        """Writes what is buffered and closes the files; the spill can then be read."""
        self.flush()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, index: int) -> pa.Table:
        """Every row of one part (none when nothing landed in it)."""
        path = self.path(index)
        if not path.exists():
            return self.schema.empty_table()
        return pq.read_table(path, schema=self.schema)


class ListingSpill:
    """The pages of one listing of the balances endpoint, staged for a MERGE.

    Args:
        folder: where the part files go.
        parts: how many parts to split the listing into.
        flush_rows: rows buffered in memory before they are written.
    """

    def __init__(
        self, folder: Path, parts: int = DEFAULT_PARTS, flush_rows: int = DEFAULT_FLUSH_ROWS
    ) -> None:
        self._spill = PartitionedSpill(folder, LISTED_SCHEMA, parts, flush_rows)
        self.pages = 0

    @property
    def parts(self) -> int:
        return self._spill.parts

    @property
    def rows(self) -> int:
        """Rows listed so far, an agent listed twice counted twice."""
        return self._spill.rows

    def add(self, page: Sequence[Balance], seen_at: datetime) -> None:
        """Stages one page.

        Raises:
            WalletDataError: a balance does not fit its column without rounding.
        """
        first = self._spill.rows
        ids = [balance.agent_id for balance in page]
        columns = [
            pa.array(ids, pa.string()),
            *(_decimal_column(page, name) for name in ("usdc", "btc", "eth")),
            pa.array([balance.last_tx_id for balance in page], pa.string()),
            pa.array([seen_at] * len(page), TIMESTAMP_TYPE),
            pa.array(range(first, first + len(page)), pa.int64()),
        ]
        self._spill.write(pa.record_batch(columns, schema=LISTED_SCHEMA), ids)
        self.pages += 1

    def close(self) -> None:
        self._spill.close()

    def latest(self, index: int) -> pa.Table:
        """One part of the listing with each agent once, as listed last."""
        rows = self._spill.read(index)
        if rows.num_rows == 0:
            return rows
        last = rows.group_by("agent_id").aggregate([(SEQUENCE_COLUMN, "max")])
        return rows.filter(pc.is_in(rows[SEQUENCE_COLUMN], last[f"{SEQUENCE_COLUMN}_max"]))


def split_current(
    batches: Iterable[pa.RecordBatch], folder: Path, parts: int, flush_rows: int
) -> PartitionedSpill:
    """Stages the current table's rows (``CURRENT_COLUMNS``) in the listing's parts."""
    schema = pa.schema([LISTED_SCHEMA.field(name) for name in CURRENT_COLUMNS])
    spill = PartitionedSpill(folder, schema, parts, flush_rows)
    for batch in batches:
        spill.write(batch.select(CURRENT_COLUMNS).cast(schema))
    spill.close()
    return spill


def new_or_changed(listed: pa.Table, current: pa.Table) -> pa.Table:
    """The listed wallets that are not in the table yet or differ from their row there.

    Args:
        listed: one part of the listing, each agent once.
        current: the same part of the table.

    Returns:
        Those rows of ``listed``, in its schema.
    """
    if listed.num_rows == 0:
        return listed
    renamed = current.rename_columns(
        ["agent_id", *(f"current_{name}" for name in TRACKED_COLUMNS)]
    ).append_column("current_present", pa.repeat(pa.scalar(True), current.num_rows))
    joined = listed.join(renamed, "agent_id", join_type="left outer")
    differs = pc.is_null(joined["current_present"])
    for name in TRACKED_COLUMNS:
        differs = pc.or_(differs, _distinct(joined[name], joined[f"current_{name}"]))
    return joined.filter(differs).select(listed.column_names)


def _distinct(left: pa.ChunkedArray, right: pa.ChunkedArray) -> pa.ChunkedArray:
    """SQL's IS DISTINCT FROM: like <>, but null equals null and differs from any value."""
    both_null = pc.and_(pc.is_null(left), pc.is_null(right))
    equal = pc.fill_null(pc.equal(left, right), False)
    return pc.invert(pc.or_(both_null, equal))


def _decimal_column(page: Sequence[Balance], name: str) -> pa.Array:
    values: list[Decimal] = [getattr(balance, name) for balance in page]
    arrow_type = _TYPE_OF[name]
    try:
        return pa.array(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Find the culprit for the message; pyarrow only says that some value did not fit.
    for balance, value in zip(page, values, strict=True):
        try:
            pa.array([value], arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise WalletDataError(
                f"agent {balance.agent_id!r}: {name} {value} does not fit "
                f"DECIMAL({arrow_type.precision},{arrow_type.scale}) exactly; nothing was "
                "written, and a rounded value never will be"
            ) from None
    raise WalletDataError(f"a {name} value of the page does not fit {arrow_type}")
