"""Schedules: the nightly payout of yesterday's partition."""

from __future__ import annotations

import dagster as dg

from pf_platform.jobs import payout_job

# An hour past midnight in the partitions' timezone, so late files of the day have landed.
NIGHTLY_HOUR = 1


def nightly_schedule_for(job, name: str) -> dg.ScheduleDefinition:
    """Each night, one run of ``job`` for the day that just ended in the partitions' timezone.

    The schedule follows the job's daily partitions: its cron runs in their timezone and each
    tick asks for the last complete partition, so a 23- or 25-hour day is paid exactly once.
    """
    return dg.build_schedule_from_partitioned_job(
        job,
        name=name,
        hour_of_day=NIGHTLY_HOUR,
        minute_of_hour=0,
        description="Pays yesterday's partition of label submissions.",
    )


nightly_payout_schedule = nightly_schedule_for(payout_job, "nightly_payout_schedule")
