"""One wallet sync: list every balance from the API and MERGE what changed into agents.wallets.

The steps, and why they are shaped this way:

1. **List.** Pages of 1,000 balances are streamed from the API by cursor and staged in local
   Parquet spill files (``pf_platform.wallets.staging``), so memory holds a page, not the
   listing. While one page is staged the next one is already being fetched.
2. **Compare.** The current table is split the same way as the listing, and each part of the
   listing, with each agent kept once as listed last, is compared with the same part of the
   table. Only new agents and wallets whose balances or last_tx_id differ go on.
3. **MERGE, once.** Those rows are MERGEd into the table in a single commit: a sync is one
   version, so time travel never shows half a sync. The MERGE re-checks every condition itself,
   so the comparison only narrows its input. It also keeps the MERGE fast: delta-rs 1.6 is far
   slower on matched rows that its update condition then skips than on rows it updates.
4. **Conflicts.** A concurrent writer makes the commit fail; the table is then reloaded and
   steps 2-3 run again from the same spill, without listing the API again. When the retries
   run out, ``WalletCommitConflictError`` says so; this sync then committed nothing.

Unchanged wallets are never rewritten, so they keep ``updated_at`` and add nothing to the
change data feed; a sync that finds no change commits no version at all.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError
from tenacity import stop_after_attempt

from pf_platform.delta import local_filesystem, retry_on_commit_conflict
from pf_platform.resources.payments.client import PurpleFleaClient
from pf_platform.resources.payments.models import MAX_BATCH_SIZE, Balance
from pf_platform.wallets.staging import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_PARTS,
    LISTED_SCHEMA,
    ListingSpill,
    new_or_changed,
    split_current,
)
from pf_platform.wallets.table import BALANCE_COLUMNS, TRACKED_COLUMNS, open_for_write

# Called after each page arrives and before the next one is requested: (page number, page).
PageHook = Callable[[int, list[Balance]], None]
# Called before each MERGE is executed, with the attempt number (tests use it to interleave).
MergeHook = Callable[[int], None]

_SOURCE_COLUMNS = [field.name for field in LISTED_SCHEMA if not field.name.startswith("_")]
# Parenthesised: the SQL parser of delta-rs binds OR tighter than IS DISTINCT FROM.
_CHANGED = " OR ".join(f"(t.{name} IS DISTINCT FROM s.{name})" for name in TRACKED_COLUMNS)


class WalletCommitConflictError(RuntimeError):
    """Concurrent writers kept winning the commit; this sync committed nothing."""


@dataclass(frozen=True)
class SyncReport:
    """What one sync saw and did.

    Attributes:
        agents_seen: distinct agents listed.
        inserted: agents new to the table.
        updated: agents whose balances or last_tx_id changed, rewritten in place.
        unchanged: agents listed whose row was left as it was.
        duplicates: listed rows dropped because the same agent was listed again later.
        pages: pages read from the API.
        seconds: wall time of the whole sync.
        listing_seconds: the part of it spent listing and staging.
        table_version: the table's version after the sync (the version it found, when
            nothing changed and nothing was committed).
        committed: whether this sync committed a new version.
        commit_attempts: MERGE attempts, 1 unless concurrent writers conflicted.
        usdc_total: USDC held by the listed agents, each counted once.
    """

    agents_seen: int
    inserted: int
    updated: int
    unchanged: int
    duplicates: int
    pages: int
    seconds: float
    listing_seconds: float
    table_version: int
    committed: bool
    commit_attempts: int
    usdc_total: Decimal

    @property
    def rows_per_second(self) -> float:
        return self.agents_seen / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _MergeOutcome:
    agents_seen: int
    inserted: int
    updated: int
    table_version: int
    committed: bool
    usdc_total: Decimal


async def sync_from_api(
    client: PurpleFleaClient,
    uri: str,
    *,
    page_size: int = MAX_BATCH_SIZE,
    **options,
) -> SyncReport:
    """Lists every balance through ``client`` and MERGEs it into the table at ``uri``.

    Args:
        client: an open payments client whose key may list every agent (the treasury's).
        uri: the wallets table's location.
        page_size: balances per request, 1 to 1,000.
        **options: passed on to ``sync_wallets``.
    """
    return await sync_wallets(client.iter_balances(page_size=page_size), uri, **options)


async def sync_wallets(
    pages: AsyncIterable[list[Balance]],
    uri: str,
    *,
    storage_options: dict[str, str] | None = None,
    spill_dir: str | Path | None = None,
    parts: int = DEFAULT_PARTS,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
    on_page: PageHook | None = None,
    before_merge: MergeHook | None = None,
    commit_attempts: int | None = None,
) -> SyncReport:
    """Stages ``pages`` and MERGEs the new and changed wallets into the table at ``uri``.

    Args:
        pages: the listing, page by page (``PurpleFleaClient.iter_balances``).
        uri: the wallets table's location; the table is created when missing.
        storage_options: object-store settings for a cloud URI.
        spill_dir: local folder for the spill files; the system's temp folder when None.
        parts: how many parts the listing is split into; memory while comparing is about
            (agents / parts) rows.
        flush_rows: rows buffered before the spill writes them out.
        on_page: called after each page arrives, before the next is requested.
        before_merge: called before each MERGE attempt with its number.
        commit_attempts: MERGE attempts before giving up on commit conflicts; the shared
            Delta retry policy's when None.

    Returns:
        What the sync saw and did.

    Raises:
        WalletCommitConflictError: every attempt lost its commit to a concurrent writer.
        WalletDataError: a balance does not fit its column exactly; nothing was written.
        PurpleFleaError: listing failed after the client's retries; nothing was written.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pf-wallets-", dir=spill_dir) as folder:
        listing = ListingSpill(Path(folder) / "listing", parts, flush_rows)
        await _stage(pages, listing, on_page)
        listed = time.perf_counter()
        # In a thread: delta-rs blocks for the whole MERGE, and the event loop stays free.
        outcome, attempts = await asyncio.to_thread(
            _merge_with_retries,
            listing,
            uri,
            storage_options=storage_options,
            scratch=Path(folder),
            flush_rows=flush_rows,
            before_merge=before_merge,
            commit_attempts=commit_attempts,
        )
    return SyncReport(
        agents_seen=outcome.agents_seen,
        inserted=outcome.inserted,
        updated=outcome.updated,
        unchanged=outcome.agents_seen - outcome.inserted - outcome.updated,
        duplicates=listing.rows - outcome.agents_seen,
        pages=listing.pages,
        seconds=time.perf_counter() - started,
        listing_seconds=listed - started,
        table_version=outcome.table_version,
        committed=outcome.committed,
        commit_attempts=attempts,
        usdc_total=outcome.usdc_total,
    )


async def _stage(
    pages: AsyncIterable[list[Balance]], listing: ListingSpill, on_page: PageHook | None
) -> None:
    """Stages every page, fetching the next page while the current one is written."""
    iterator = aiter(pages)
    pending = asyncio.ensure_future(anext(iterator, None))
    try:
        while (page := await pending) is not None:
            seen_at = datetime.now(UTC)
            if on_page is not None:
                on_page(listing.pages + 1, page)
            pending = asyncio.ensure_future(anext(iterator, None))
            # In a thread, so the event loop sends the next request meanwhile.
            await asyncio.to_thread(listing.add, page, seen_at)
    finally:
        if not pending.done():
            pending.cancel()
        elif not pending.cancelled():
            # Marks a failure of the read-ahead as seen when staging failed first.
            pending.exception()
        listing.close()


def _merge_with_retries(
    listing: ListingSpill,
    uri: str,
    *,
    storage_options: dict[str, str] | None,
    scratch: Path,
    flush_rows: int,
    before_merge: MergeHook | None,
    commit_attempts: int | None,
) -> tuple[_MergeOutcome, int]:
    attempts = 0

    def attempt() -> _MergeOutcome:
        nonlocal attempts
        attempts += 1
        # Reloaded on every attempt: a retry compares against what the other writer committed.
        table = open_for_write(uri, storage_options)
        folder = scratch / f"attempt-{attempts}"
        try:
            return _merge_once(table, listing, folder, flush_rows, before_merge, attempts)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    retrying = retry_on_commit_conflict(attempt)
    if commit_attempts is not None:
        retrying = retrying.retry_with(stop=stop_after_attempt(commit_attempts))
    try:
        return retrying(), attempts
    except CommitFailedError as exc:
        raise WalletCommitConflictError(
            f"gave up on {uri} after {attempts} MERGE attempts, each losing its commit to a "
            f"concurrent writer; this sync committed nothing and the next one starts afresh "
            f"(last error: {exc})"
        ) from exc


def _merge_once(
    table: DeltaTable,
    listing: ListingSpill,
    folder: Path,
    flush_rows: int,
    before_merge: MergeHook | None,
    attempt: int,
) -> _MergeOutcome:
    current = split_current(
        table.to_pyarrow_dataset(filesystem=local_filesystem(table)).to_batches(
            columns=["agent_id", *TRACKED_COLUMNS]
        ),
        folder / "current",
        listing.parts,
        flush_rows,
    )

    seen = changed = 0
    usdc_total = Decimal(0)
    changes_path = folder / "changes.parquet"
    # Wide enough that the total of any number of DECIMAL(38,6) balances is never rounded.
    with pq.ParquetWriter(changes_path, LISTED_SCHEMA) as changes, localcontext(prec=80):
        for index in range(listing.parts):
            latest = listing.latest(index)
            rows = new_or_changed(latest, current.read(index))
            seen += latest.num_rows
            changed += rows.num_rows
            usdc_total += pc.sum(latest["usdc"]).as_py() or Decimal(0)
            if rows.num_rows:
                changes.write_table(rows)

    if changed == 0:
        return _MergeOutcome(seen, 0, 0, table.version(), False, usdc_total)

    if before_merge is not None:
        before_merge(attempt)
    source = ds.dataset(changes_path, format="parquet").scanner(columns=_SOURCE_COLUMNS)
    metrics = (
        table.merge(
            source.to_reader(),
            predicate="t.agent_id = s.agent_id",
            source_alias="s",
            target_alias="t",
            # Streamed, delta-rs treats the whole table as read, so any concurrent commit
            # conflicts with this one instead of slipping a duplicate agent in.
            streamed_exec=True,
            commit_properties=CommitProperties(
                custom_metadata={"pf_platform.operation": "agent_wallets sync"}
            ),
        )
        .when_matched_update(
            {name: f"s.{name}" for name in TRACKED_COLUMNS} | {"updated_at": "s.seen_at"},
            predicate=_CHANGED,
        )
        .when_not_matched_insert(
            {name: f"s.{name}" for name in ("agent_id", *BALANCE_COLUMNS, "last_tx_id")}
            | {"created_at": "s.seen_at", "updated_at": "s.seen_at"}
        )
        .execute()
    )
    return _MergeOutcome(
        agents_seen=seen,
        inserted=metrics["num_target_rows_inserted"],
        updated=metrics["num_target_rows_updated"],
        table_version=table.version(),
        committed=True,
        usdc_total=usdc_total,
    )
