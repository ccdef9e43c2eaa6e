"""The nightly schedule pays yesterday, in the partitions' timezone, each day exactly once."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from pf_platform.definitions import build_definitions
from pf_platform.partitions import daily_partitions_for
from pf_platform.schedules import nightly_schedule_for


def _tick(schedule, defs, when: datetime) -> list[str]:
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            repository_def=defs.get_repository_def(),
        )
        return [request.partition_key for request in schedule.evaluate_tick(context).run_requests]


def test_nightly_schedule_pays_yesterday_in_utc():
    defs = build_definitions("local")
    schedule = defs.resolve_schedule_def("nightly_payout_schedule")

    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 1 * * *", "UTC")
    when = datetime(2026, 11, 8, 1, 0, tzinfo=ZoneInfo("UTC"))
    assert _tick(schedule, defs, when) == ["2026-11-07"]


def test_daylight_saving_days_are_paid_once_each():
    zone = "America/New_York"
    partitions = daily_partitions_for(zone)

    @dg.asset(partitions_def=partitions)
    def day_marker() -> None:
        """A stand-in partitioned asset."""

    job = dg.define_asset_job("zone_job", selection=[day_marker])
    schedule = nightly_schedule_for(job, "zone_schedule")
    defs = dg.Definitions(assets=[day_marker], jobs=[job], schedules=[schedule])
    resolved = defs.resolve_schedule_def("zone_schedule")
    assert resolved.execution_timezone == zone

    # Ticks at 01:00 local over both clock changes: 2026-11-01 falls back (25 hours) and
    # 2027-03-14 springs forward (23 hours).
    tz = ZoneInfo(zone)
    ticks = [datetime(2026, 11, 2, 1, 0, tzinfo=tz) + timedelta(days=n) for n in range(2)]
    ticks += [datetime(2027, 3, 14, 1, 0, tzinfo=tz) + timedelta(days=n) for n in range(2)]
    paid = [key for when in ticks for key in _tick(resolved, defs, when)]
    assert paid == ["2026-11-01", "2026-11-02", "2027-03-13", "2027-03-14"]

    def length(key: str) -> timedelta:
        window = partitions.time_window_for_partition_key(key)
        # Timestamps, not wall-clock subtraction, which ignores an offset change in one zone.
        return timedelta(seconds=window.end.timestamp() - window.start.timestamp())

    hours = {key: length(key) for key in paid}
    assert hours["2026-11-01"] == timedelta(hours=25)
    assert hours["2027-03-14"] == timedelta(hours=23)
    assert hours["2026-11-02"] == hours["2027-03-13"] == timedelta(hours=24)
