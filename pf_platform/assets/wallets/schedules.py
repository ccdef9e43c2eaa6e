"""The job and schedule that keep agents.wallets at most five minutes behind the API."""

from __future__ import annotations

import dagster as dg

wallet_snapshot_job = dg.define_asset_job(
    "wallet_snapshot_job",
    selection=dg.AssetSelection.assets("agent_wallets"),
    description="List every wallet balance from the API and MERGE the changes into agents.wallets.",
)

agent_wallets_schedule = dg.ScheduleDefinition(
    name="agent_wallets_schedule",
    job=wallet_snapshot_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    # On by default: the freshness policy of agent_wallets assumes a sync every five minutes.
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Snapshot every agent's balances into agents.wallets every five minutes.",
)
