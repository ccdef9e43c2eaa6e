"""Partitions shared by the asset graph."""

from __future__ import annotations

import os

import dagster as dg

# The first day the platform pays for; the bundled demo lands its seven days from here.
FIRST_PAYOUT_DAY = "2026-11-01"


def daily_partitions_for(timezone: str) -> dg.DailyPartitionsDefinition:
    """One partition per calendar day in ``timezone``; a daylight-saving day is still one day."""
    return dg.DailyPartitionsDefinition(start_date=FIRST_PAYOUT_DAY, timezone=timezone)


daily_partitions = daily_partitions_for(os.getenv("PF_TIMEZONE", "UTC"))
