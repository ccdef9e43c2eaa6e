"""The lake: Delta tables at ``<root>/<schema>/<table>``."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError
from pydantic import Field

from pf_platform.delta import open_or_create, read_arrow, retry_on_commit_conflict
from pf_platform.payouts.ledger import Ledger
from pf_platform.settings import lake_root

PARTITION_COLUMN = "partition_date"


class LakeResource(dg.ConfigurableResource):
    """Where the Delta tables live and how to reach them.

    Attributes:
        root: a local folder or a cloud URI (s3://, abfss://, gs://).
        storage_options: object-store settings for a cloud root, as delta-rs takes them.
    """

    root: str = Field(default_factory=lake_root, description="Local folder or cloud URI.")
    storage_options: dict[str, str] = Field(default_factory=dict, repr=False)

    def uri(self, schema: str, table: str) -> str:
        return f"{self.root.rstrip('/')}/{schema}/{table}"

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def read_partition(self, schema: str, table: str, partition: str) -> pa.Table | None:
        """One partition of a table, or None when the table does not exist yet."""
        try:
            delta = DeltaTable(self.uri(schema, table), storage_options=self._options())
        except TableNotFoundError:
            return None
        return read_arrow(delta, filters=[(PARTITION_COLUMN, "=", partition)])

    def read_table(
        self, schema: str, table: str, *, columns: list[str] | None = None, filters=None
    ) -> pa.Table | None:
        """Some columns of a table's rows, or None when the table does not exist yet."""
        try:
            delta = DeltaTable(self.uri(schema, table), storage_options=self._options())
        except TableNotFoundError:
            return None
        return read_arrow(delta, columns=columns, filters=filters)

    @retry_on_commit_conflict
    def overwrite_partition(self, schema: str, table: str, partition: str, data: pa.Table) -> int:
        """Replaces one partition's rows with ``data``; returns the table version written."""
        # pa.repeat fills the column in Arrow; a Python list of 2M copies took half a second.
        data = data.append_column(
            PARTITION_COLUMN, pa.repeat(pa.scalar(partition, pa.string()), data.num_rows)
        )
        # Created first, so a concurrent first write of the partition conflicts, not doubles.
        delta = open_or_create(
            self.uri(schema, table),
            data.schema,
            partition_by=[PARTITION_COLUMN],
            storage_options=self._options(),
        )
        write_deltalake(
            delta,
            data,
            mode="overwrite",
            partition_by=[PARTITION_COLUMN],
            predicate=f"{PARTITION_COLUMN} = '{partition}'",
        )
        # The write moved this handle to the version it committed.
        return delta.version()

    def ledger(self) -> Ledger:
        """The payout ledger, agents.transactions."""
        return Ledger(self.uri("agents", "transactions"), self._options())
