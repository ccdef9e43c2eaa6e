"""agent_wallets: every agent's balances, MERGEd from the payments API into agents.wallets."""

import asyncio
from datetime import timedelta

import dagster as dg
from pydantic import Field

from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.models import MAX_BATCH_SIZE
from pf_platform.resources.payments.resource import PurpleFleaResource
from pf_platform.wallets.staging import DEFAULT_PARTS, WalletDataError
from pf_platform.wallets.sync import SyncReport, WalletCommitConflictError, sync_from_api
from pf_platform.wallets.table import SCHEMA_NAME, TABLE_NAME

# Synced every 5 minutes: one missed tick is a warning, two in a row a failure.
WALLET_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=5)
)

PROGRESS_EVERY_PAGES = 25


class WalletSyncConfig(dg.Config):
    """Run configuration of a wallet sync."""

    page_size: int = Field(
        default=MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE, description="Balances per request."
    )
    spill_parts: int = Field(
        default=DEFAULT_PARTS,
        ge=1,
        description="Parts the listing is split into on local disk; more parts, less memory.",
    )


@dg.asset(
    key="agent_wallets",
    group_name="wallets",
    kinds={"delta", "purpleflea"},
    freshness_policy=WALLET_FRESHNESS,
)
def agent_wallets(
    context: dg.AssetExecutionContext,
    config: WalletSyncConfig,
    lake: LakeResource,
    purple_flea: PurpleFleaResource,
) -> dg.MaterializeResult:
    """Every agent's USDC, BTC and ETH balances, upserted from the payments API."""
    uri = lake.uri(SCHEMA_NAME, TABLE_NAME)

    def progress(page_number: int, page: list) -> None:
        if page_number % PROGRESS_EVERY_PAGES == 0:
            context.log.info("listed %d pages of balances", page_number)

    async def run() -> SyncReport:
        async with purple_flea.get_client() as client:
            return await sync_from_api(
                client,
                uri,
                page_size=config.page_size,
                storage_options=dict(lake.storage_options) or None,
                parts=config.spill_parts,
                on_page=progress,
            )

    try:
        report = asyncio.run(run())
    except WalletCommitConflictError as exc:
        # The next tick is five minutes away and starts afresh; retrying now would race again.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except WalletDataError as exc:
        raise dg.Failure(
            description=f"{exc}; agents.wallets was left as it was", allow_retries=False
        ) from exc

    context.log.info(
        "wallets synced: %d agents, %d inserted, %d updated, %d unchanged in %.1f s",
        report.agents_seen,
        report.inserted,
        report.updated,
        report.unchanged,
        report.seconds,
    )
    return dg.MaterializeResult(metadata=sync_metadata(report, uri))


def sync_metadata(report: SyncReport, uri: str) -> dict[str, dg.MetadataValue]:
    """What a person reads in the UI about one sync."""
    return {
        "agents_seen": dg.MetadataValue.int(report.agents_seen),
        "inserted": dg.MetadataValue.int(report.inserted),
        "updated": dg.MetadataValue.int(report.updated),
        "unchanged": dg.MetadataValue.int(report.unchanged),
        "duplicates_dropped": dg.MetadataValue.int(report.duplicates),
        "pages": dg.MetadataValue.int(report.pages),
        "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "listing_seconds": dg.MetadataValue.float(round(report.listing_seconds, 3)),
        "agents_per_second": dg.MetadataValue.float(round(report.rows_per_second, 1)),
        "table_version": dg.MetadataValue.int(report.table_version),
        "committed_new_version": dg.MetadataValue.bool(report.committed),
        "commit_attempts": dg.MetadataValue.int(report.commit_attempts),
        # Text, not a float: the total must read exactly as the ledger would add it up.
        "usdc_total": dg.MetadataValue.text(str(report.usdc_total)),
        "table_uri": dg.MetadataValue.path(uri),
    }
