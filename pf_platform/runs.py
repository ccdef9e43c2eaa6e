"""Runs this project executes in its own process, and what a killed one leaves behind.

A run that ``pf-platform`` executes in process (``execute_in_process``) is tagged with the
process running it. If that process dies without ending the run (SIGKILL, the OOM killer, a
lost machine), Dagster keeps the run ``STARTED`` and its payout step keeps the one slot of the
``purple_flea_payouts`` pool; every later payout step on the instance then waits for that slot
forever. ``fail_runs_of_dead_processes`` finds such runs by their tag, marks them failed and
frees their slots. Whatever the dead run paid is safe: its intents are in the ledger and the
next run looks them up before sending anything.
"""

from __future__ import annotations

import socket

import dagster as dg
import psutil

PROCESS_TAG = "pf_platform/process"

_ALIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _process_id(pid: int) -> str:
    """``host:pid:start time``: a pid alone may be taken again by a later process."""
    started = psutil.Process(pid).create_time()
    return f"{socket.gethostname()}:{pid}:{started:.2f}"


def process_tags() -> dict[str, str]:
    """The tags that name this process as the one executing a run."""
    return {PROCESS_TAG: _process_id(psutil.Process().pid)}


def _is_gone(process: str) -> bool:
    host, _, rest = process.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        # Another machine's process, or a tag not written here: not ours to judge.
        return False
    try:
        return _process_id(int(pid_text)) != process
    except psutil.NoSuchProcess:
        return True


def fail_runs_of_dead_processes(instance: dg.DagsterInstance) -> list[str]:
    """Marks failed the unfinished runs whose executing process on this host is gone.

    Returns:
        The ids of the runs marked failed; their concurrency slots are freed.
    """
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=_ALIVE_STATUSES))
    failed = []
    for record in records:
        run = record.dagster_run
        process = run.tags.get(PROCESS_TAG)
        if process is None or not _is_gone(process):
            continue
        instance.report_run_failed(
            run,
            message=(
                f"the process that executed this run ({process}) is gone, killed or crashed; "
                "marked failed so that its concurrency slots are freed"
            ),
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed
