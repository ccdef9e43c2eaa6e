"""Partitions shared by the asset graph."""

from __future__ import annotations

import os

import dagster as dg

# The first day the platform pays for; the bundled demo lands its seven days from here.
FIRST_PAYOUT_DAY = "2026-11-01"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=FIRST_PAYOUT_DAY, timezone=os.getenv("PF_TIMEZONE", "UTC")
)
