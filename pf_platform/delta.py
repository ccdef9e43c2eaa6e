"""Writing Delta tables that several runs may write at once, and reading them back.

delta-rs checks a commit against the commits that landed since its snapshot, and refuses it (a
``CommitFailedError``, retried here) when a concurrent writer added rows it should have seen.
That check needs a snapshot: two writers that each find no table and create it with their rows
both succeed, and the table then holds the rows of both. With delta-rs 1.6, two processes
overwriting one partition of a missing table at once left it doubled in 20 trials of 20; with
the table created empty first, in none. So every writer here opens the table with
``open_or_create`` and only then writes its rows, and every reader reads with ``read_arrow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pa_fs
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

# Concurrent writers of one Delta table conflict at commit; each retry reloads the table first.
retry_on_commit_conflict = retry(
    retry=retry_if_exception_type(CommitFailedError),
    wait=wait_random_exponential(multiplier=0.05, max=2),
    stop=stop_after_attempt(12),
    reraise=True,
)


def open_or_create(
    uri: str,
    schema: pa.Schema,
    *,
    partition_by: Sequence[str] | None = None,
    storage_options: dict[str, str] | None = None,
    **properties: Any,
) -> DeltaTable:
    """The table at ``uri`` at its latest version, created without rows when it is missing.

    Args:
        uri: the table's location.
        schema: the columns of a new table.
        partition_by: the partition columns of a new table.
        storage_options: object-store settings for a cloud URI.
        **properties: further ``DeltaTable.create`` arguments for a new table (``name``,
            ``description``, ``configuration``).
    """
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        pass
    try:
        return DeltaTable.create(
            uri,
            schema,
            mode="error",
            partition_by=list(partition_by) if partition_by else None,
            storage_options=storage_options,
            **properties,
        )
    except DeltaError as create_error:
        # A concurrent writer created it between our look and our create: use theirs. If no
        # table is there, the create failed for another reason, and that error is the one raised.
        try:
            return DeltaTable(uri, storage_options=storage_options)
        except TableNotFoundError:
            raise create_error from None


def read_arrow(
    table: DeltaTable, *, columns: list[str] | None = None, filters: Any = None
) -> pa.Table:
    """The table's rows (some ``columns``, rows matching ``filters``) as one Arrow table."""
    return table.to_pyarrow_table(
        columns=columns, filters=filters, filesystem=local_filesystem(table)
    )


def local_filesystem(table: DeltaTable) -> pa_fs.FileSystem | None:
    """Arrow's own filesystem rooted at a local table, for its readers; None for a cloud table.

    Without one, deltalake reads through a filesystem written in Python, and the scan's Arrow
    threads hold Python objects: when one of them lets go of the last while the interpreter
    exits, the process aborts ("terminate called without an active exception", exit 134; 1
    demo in 3 to 6 ended so, after printing a correct summary). Arrow's local filesystem holds
    nothing of Python's.
    """
    uri = table.table_uri
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        return None
    path = Path(unquote(parts.path) if parts.scheme else uri)
    return pa_fs.SubTreeFileSystem(str(path), pa_fs.LocalFileSystem())
