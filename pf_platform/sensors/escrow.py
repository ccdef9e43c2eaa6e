"""Escrow sensors: lock declared bounties, and release them when MLflow shows a winner.

``escrow_bounty_sensor`` reads the bounties file, adds a partition of ``escrows`` for each new
bounty and requests the run that locks its escrow (again, under a new run key, if that run
failed). A bounties file that cannot be read fails the tick, so the reason shows in the UI.

``escrow_release_sensor`` polls the MLflow tracking store for every open escrow and requests one
``escrow_releases`` run per winner (run key ``<bounty>:<agent>``), plus a sync of ``escrows``
for an escrow past its expiry. The planning, and why a winner is never paid twice nor dropped,
is in ``pf_platform.escrow.planning``.
"""

import json
from collections import defaultdict

import dagster as dg

from pf_platform.assets.escrow.escrows import escrow_partitions, escrow_tables
from pf_platform.assets.escrow.jobs import escrow_release_job, escrows_job
from pf_platform.assets.escrow.releases import (
    AGENT_RUN_TAG,
    ATTEMPT_RUN_TAG,
    BOUNTY_RUN_TAG,
    MLFLOW_RUN_TAG,
)
from pf_platform.assets.escrow.resources import MlflowResource
from pf_platform.escrow.bounties import load_bounties
from pf_platform.escrow.planning import (
    ACTIVE,
    FAILED,
    SUCCEEDED,
    Cursor,
    ReleaseRequest,
    RunState,
    plan_tick,
)
from pf_platform.escrow.tables import TERMINAL, EscrowRecord, ReleaseRecord
from pf_platform.escrow.tracking import find_crossings
from pf_platform.resources.lake import LakeResource

SYNC_RUN_TAG = "pf/escrow_sync"
LOCK_RUN_TAG = "pf/escrow_lock"
MAX_LOCK_ATTEMPTS = 3
POLL_SECONDS = 30

_RUN_STATE = {
    dg.DagsterRunStatus.SUCCESS: SUCCEEDED,
    dg.DagsterRunStatus.FAILURE: FAILED,
    dg.DagsterRunStatus.CANCELED: FAILED,
}
# When two runs carry the same attempt (a run launched twice by hand), the most hopeful wins.
_PREFERENCE = {FAILED: 0, ACTIVE: 1, SUCCEEDED: 2}


def _run_state(run: dg.DagsterRun) -> RunState:
    return RunState(
        attempt=int(run.tags.get(ATTEMPT_RUN_TAG, "1")),
        status=_RUN_STATE.get(run.status, ACTIVE),
    )


def _later(state: RunState, held: RunState | None) -> bool:
    """Whether ``state`` supersedes ``held``: a higher attempt, or the same one doing better."""
    if held is None:
        return True
    return (state.attempt, _PREFERENCE[state.status]) > (held.attempt, _PREFERENCE[held.status])


def _latest_lock_run(instance: dg.DagsterInstance, bounty_id: str) -> RunState | None:
    latest = None
    for run in instance.get_runs(filters=dg.RunsFilter(tags={LOCK_RUN_TAG: bounty_id})):
        if _later(state := _run_state(run), latest):
            latest = state
    return latest


def _lock_cursor(text: str | None) -> dict[str, int]:
    try:
        data = json.loads(text) if text else {}
        return {str(bounty): int(attempt) for bounty, attempt in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}  # the runs on the instance still say what was asked


@dg.sensor(
    name="escrow_bounty_sensor",
    job=escrows_job,
    minimum_interval_seconds=POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def escrow_bounty_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Adds a partition for every newly declared bounty and requests the lock of its escrow.

    A lock run that failed (the API was down, the payer short of funds, an agent without a
    wallet) is requested again on a later tick, up to ``MAX_LOCK_ATTEMPTS`` runs in all.
    """
    declared = load_bounties()
    known = set(context.instance.get_dynamic_partitions(escrow_partitions.name))
    recorded = escrow_tables(lake).escrows()
    asked = _lock_cursor(context.cursor)

    requests = []
    for bounty_id in declared:
        if bounty_id in recorded:
            continue
        latest = _latest_lock_run(context.instance, bounty_id)
        attempt = max(asked.get(bounty_id, 0), latest.attempt if latest else 0)
        if attempt and (latest is None or latest.attempt < attempt or latest.status != FAILED):
            continue  # asked for, and not (yet) failed
        if attempt >= MAX_LOCK_ATTEMPTS:
            context.log.warning(
                "bounty %s: locking its escrow failed %d times; fix the cause shown in its last "
                "run, then materialize its partition of escrows",
                bounty_id,
                attempt,
            )
            continue
        run_key = f"{bounty_id}:lock" if attempt == 0 else f"{bounty_id}:lock:attempt-{attempt + 1}"
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                partition_key=bounty_id,
                tags={LOCK_RUN_TAG: bounty_id, ATTEMPT_RUN_TAG: str(attempt + 1)},
            )
        )
        asked[bounty_id] = attempt + 1

    new_partitions = [bounty_id for bounty_id in declared if bounty_id not in known]
    if not new_partitions and not requests:
        return dg.SkipReason(f"{len(declared)} bounties declared, none to lock")
    context.log.info("locking escrows for %s", ", ".join(r.partition_key for r in requests) or "-")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [escrow_partitions.build_add_request(new_partitions)] if new_partitions else []
        ),
        cursor=json.dumps(asked, sort_keys=True),
    )


def _release_runs(
    instance: dg.DagsterInstance, bounty_ids: list[str]
) -> dict[str, dict[str, RunState]]:
    """The latest release run per bounty and agent, found by the tags the sensor sets."""
    found: dict[str, dict[str, RunState]] = {}
    for bounty_id in bounty_ids:
        latest: dict[str, RunState] = {}
        for run in instance.get_runs(filters=dg.RunsFilter(tags={BOUNTY_RUN_TAG: bounty_id})):
            agent = run.tags.get(AGENT_RUN_TAG)
            if agent and _later(state := _run_state(run), latest.get(agent)):
                latest[agent] = state
        found[bounty_id] = latest
    return found


def release_run_request(request: ReleaseRequest) -> dg.RunRequest:
    """The ``escrow_releases`` run for one winner: config and tags name the agent and run."""
    crossing = request.crossing
    return dg.RunRequest(
        run_key=request.run_key,
        job_name=escrow_release_job.name,
        partition_key=request.bounty_id,
        run_config={
            "ops": {
                "escrow_releases": {
                    "config": {
                        "agent_id": crossing.agent_id,
                        "mlflow_run_id": crossing.run_id,
                        "metric_value": crossing.value,
                        "metric_step": crossing.step,
                        "metric_timestamp_ms": crossing.timestamp_ms,
                    }
                }
            }
        },
        tags={
            BOUNTY_RUN_TAG: request.bounty_id,
            AGENT_RUN_TAG: crossing.agent_id,
            ATTEMPT_RUN_TAG: str(request.attempt),
            MLFLOW_RUN_TAG: crossing.run_id,
        },
    )


def _needs_run_lookup(escrow: EscrowRecord, rows: list[ReleaseRecord], cursor: Cursor) -> bool:
    return (
        escrow.status not in TERMINAL
        or escrow.bounty_id in cursor.requested
        or not all(row.is_final for row in rows)
    )


@dg.sensor(
    name="escrow_release_sensor",
    jobs=[escrow_release_job, escrows_job],
    minimum_interval_seconds=POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def escrow_release_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource, mlflow: MlflowResource
):
    """Requests one release run per winner as soon as an eligible MLflow run crosses a target."""
    tables = escrow_tables(lake)
    escrows = tables.escrows()
    if not escrows:
        return dg.SkipReason("no escrow is recorded yet")
    releases: dict[str, list[ReleaseRecord]] = defaultdict(list)
    for row in tables.releases():
        releases[row.bounty_id].append(row)
    cursor = Cursor.from_json(context.cursor)
    watched = [
        bounty_id
        for bounty_id, escrow in sorted(escrows.items())
        if _needs_run_lookup(escrow, releases[bounty_id], cursor)
    ]

    plan = plan_tick(
        {bounty_id: escrows[bounty_id] for bounty_id in watched},
        releases,
        _release_runs(context.instance, watched),
        cursor,
        lambda bounty: find_crossings(mlflow.get_client(), bounty),
    )
    for bounty_id, error in sorted(plan.errors.items()):
        context.log.error("bounty %s could not be evaluated this tick: %s", bounty_id, error)
    for note in plan.notes:
        context.log.warning(note)
    for request in plan.releases:
        context.log.info(
            "bounty %s: %s crossed in MLflow run %s (%s=%r, step %d); requesting release "
            "attempt %d",
            request.bounty_id,
            request.agent_id,
            request.crossing.run_id,
            escrows[request.bounty_id].metric,
            request.crossing.value,
            request.crossing.step,
            request.attempt,
        )

    run_requests = [release_run_request(request) for request in plan.releases]
    run_requests += [
        dg.RunRequest(
            run_key=sync.run_key,
            job_name=escrows_job.name,
            partition_key=sync.bounty_id,
            tags={SYNC_RUN_TAG: "expiry"},
        )
        for sync in plan.syncs
    ]
    # Settled bounties were left out of the plan; their cursor entries are already gone.
    next_cursor = plan.cursor.to_json()
    if not run_requests:
        return dg.SensorResult(
            skip_reason=f"{len(watched)} escrows watched, no new winner", cursor=next_cursor
        )
    return dg.SensorResult(run_requests=run_requests, cursor=next_cursor)
