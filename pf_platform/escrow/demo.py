"""The escrow demo: lock a bonus, let three agents train, release it to the one that hits the target.

Unlike the rest of ``pf_platform.escrow`` this module drives Dagster: it evaluates the two escrow
sensors with ``build_sensor_context`` and executes the runs they request in this process, on the
instance it is given, so the runs and materializations show in the UI afterwards.

Running it again on the same PF_HOME pays nothing more: the bounty is already declared, its
escrow already released, and the agents' new runs find no free slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import dagster as dg
import httpx

from pf_platform.escrow.bounties import Bounty, declare_bounty
from pf_platform.escrow.rules import reaches
from pf_platform.escrow.tables import RELEASED, EscrowRecord, ReleaseRecord
from pf_platform.escrow.tracking import tracking_client, tracking_uri
from pf_platform.escrow.training import DEMO_RECIPES, TrainingResult, train_agents
from pf_platform.runs import process_tags

DEMO_EXPERIMENT = "digits-finetune"
DEMO_METRIC = "eval/f1"
DEMO_REFERRER = "agent-ref"
DEMO_BOUNTY = Bounty(
    bounty_id="digits-f1",
    experiment=DEMO_EXPERIMENT,
    metric=DEMO_METRIC,
    threshold=Decimal("0.93"),
    eligible_agents=tuple(recipe.agent_id for recipe in DEMO_RECIPES),
    amount_usdc=Decimal(10),
    expiry_seconds=24 * 3600,
    referrer_agent_id=DEMO_REFERRER,
    memo="digits fine-tuning bonus: macro F1 >= 0.93 on the held-out split",
)
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class EscrowDemoSummary:
    """What the escrow demo did."""

    bounty: Bounty
    escrow: EscrowRecord | None = None
    trained: list[TrainingResult] = field(default_factory=list)
    releases: list[ReleaseRecord] = field(default_factory=list)
    runs_failed: int = 0
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        """The escrow is recorded, every run succeeded and every winner was paid."""
        return (
            self.escrow is not None
            and self.runs_failed == 0
            and all(release.status == RELEASED for release in self.releases)
        )

    def line(self) -> str:
        """One line for the main demo's summary: what was released to whom."""
        paid = [r for r in self.releases if r.status == RELEASED]
        if not paid:
            state = self.escrow.status if self.escrow else "not locked"
            return f"{self.bounty.bounty_id}: nothing released (escrow {state})"
        return "; ".join(
            f"{self.bounty.bounty_id}: {r.amount_usdc} USDC to {r.agent_id} "
            f"(fee {r.fee_usdc}), tx {r.tx_id}"
            for r in paid
        )


def escrow_definitions(
    base_url: str, api_key: str, *, purple_flea: dg.ConfigurableResource | None = None
) -> dg.Definitions:
    """The escrow assets, jobs, sensors and resources, talking to the API at ``base_url``.

    Args:
        base_url: the payments API.
        api_key: the payer's key.
        purple_flea: a configured ``PurpleFleaResource`` to use instead (other retry settings).
    """
    from pf_platform.assets.escrow import (
        ESCROW_ASSETS,
        MlflowResource,
        escrow_release_job,
        escrows_job,
    )
    from pf_platform.resources.lake import LakeResource
    from pf_platform.resources.payments.resource import PurpleFleaResource
    from pf_platform.sensors.escrow import escrow_bounty_sensor, escrow_release_sensor

    return dg.Definitions(
        assets=ESCROW_ASSETS,
        jobs=[escrows_job, escrow_release_job],
        sensors=[escrow_bounty_sensor, escrow_release_sensor],
        resources={
            "purple_flea": purple_flea or PurpleFleaResource(base_url=base_url, api_key=api_key),
            "lake": LakeResource(),
            "mlflow": MlflowResource(),
        },
    )


def run_sensor_tick(
    defs: dg.Definitions, sensor_name: str, instance: dg.DagsterInstance, cursor: str | None = None
) -> tuple[list[dg.ExecuteInProcessResult], str | None]:
    """Evaluates a sensor once and executes the runs it requests, in this process.

    The partitions the sensor adds are added to the instance first, as the daemon would.

    Returns:
        The results of the runs, in the order requested, and the sensor's next cursor.
    """
    sensor = defs.resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        sensor_name=sensor_name,
        resources=defs.resources,
    )
    result = sensor(context)
    if not isinstance(result, dg.SensorResult):
        return [], cursor
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    outcomes = []
    for request in result.run_requests or []:
        job = defs.resolve_job_def(request.job_name or sensor.job_name)
        outcomes.append(
            job.execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                run_config={**(request.run_config or {}), **_QUIET},
                tags={**request.tags, **process_tags()},
                raise_on_error=False,
            )
        )
    return outcomes, result.cursor


def _register_agents(base_url: str, api_key: str, agents: list[str]) -> None:
    response = httpx.post(
        f"{base_url}/admin/agents",
        json={"agent_ids": agents},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    response.raise_for_status()


def run_escrow_demo(
    base_url: str,
    api_key: str,
    instance: dg.DagsterInstance,
    echo: Callable[[str], None] = print,
) -> EscrowDemoSummary:
    """Locks the demo bounty, trains three agents, and releases the bounty to the winner.

    Args:
        base_url: the payments API; on a loopback sandbox the agents' wallets are opened first.
        api_key: the payer's key.
        instance: the Dagster instance the runs are recorded on.
        echo: where progress lines go.

    Returns:
        The escrow, the agents' scores and what was released to whom.
    """
    from pf_platform.assets.escrow import escrow_tables
    from pf_platform.resources.lake import LakeResource

    started = time.perf_counter()
    bounty = DEMO_BOUNTY
    summary = EscrowDemoSummary(bounty=bounty)
    if base_url.startswith("http://127.0.0.1:"):
        _register_agents(base_url, api_key, [*bounty.eligible_agents, DEMO_REFERRER])
    declare_bounty(bounty)
    defs = escrow_definitions(base_url, api_key)
    tables = escrow_tables(LakeResource())

    # The bonus is locked before anyone trains: the agents can see the money is there.
    locked, _ = run_sensor_tick(defs, "escrow_bounty_sensor", instance)
    if not locked:
        # Declared and locked by an earlier demo: re-read its state instead.
        locked = [
            defs.resolve_job_def("escrows_job").execute_in_process(
                instance=instance,
                partition_key=bounty.bounty_id,
                run_config=_QUIET,
                tags=process_tags(),
                raise_on_error=False,
            )
        ]
    summary.runs_failed += sum(not result.success for result in locked)
    escrow = tables.escrow(bounty.bounty_id)
    if escrow is None:
        summary.seconds = time.perf_counter() - started
        return summary
    echo(
        f"escrow {escrow.escrow_id} {escrow.status}: {escrow.amount_usdc} USDC for the first of "
        f"{', '.join(escrow.eligible_agents)} to reach {bounty.describe()}"
    )

    summary.trained = train_agents(tracking_client(), bounty.experiment, metric=bounty.metric)
    for recipe, result in zip(DEMO_RECIPES, summary.trained, strict=True):
        echo(
            f"{result.agent_id} ({recipe.describe()}): best {bounty.metric} "
            f"{result.best_f1:.4f} over {len(result.f1_by_epoch)} epochs, logged to "
            f"{tracking_uri()}"
        )

    released, _ = run_sensor_tick(defs, "escrow_release_sensor", instance)
    summary.runs_failed += sum(not result.success for result in released)
    summary.escrow = tables.escrow(bounty.bounty_id)
    summary.releases = sorted(tables.releases(bounty.bounty_id), key=lambda r: r.created_at)
    summary.seconds = time.perf_counter() - started
    return summary


def format_escrow_summary(summary: EscrowDemoSummary) -> str:
    """The closing lines of the escrow demo."""
    bounty = summary.bounty
    lines = [
        (
            f"bounty             {bounty.bounty_id}: {bounty.describe()}, "
            f"{bounty.amount_usdc} USDC, {bounty.winners} winner(s)"
        ),
        "escrow             "
        + (
            f"{summary.escrow.escrow_id} {summary.escrow.status}"
            if summary.escrow
            else "not locked"
        ),
    ]
    for result in summary.trained:
        crossed = any(
            reaches(score, bounty.threshold, bounty.direction) for score in result.f1_by_epoch
        )
        lines.append(
            f"{result.agent_id:<18} best {bounty.metric} {result.best_f1:.4f}"
            + ("  crossed" if crossed else "")
        )
    for release in summary.releases:
        if release.status == RELEASED:
            lines.append(
                f"released to        {release.agent_id}: {release.amount_usdc} USDC net, fee "
                f"{release.fee_usdc} (referrer {release.referrer_fee_usdc}, platform "
                f"{release.platform_fee_usdc}), tx {release.tx_id}, MLflow run "
                f"{release.mlflow_run_id}"
            )
        else:
            lines.append(
                f"not released       {release.agent_id}: {release.status} "
                f"({release.error_code or '-'})"
            )
    if not summary.releases:
        lines.append("released to        nobody")
    lines.append(f"seconds            {summary.seconds:.1f}")
    if summary.runs_failed:
        lines.append(f"FAILED runs: {summary.runs_failed} (see the runs in the Dagster UI)")
    return "\n".join(lines)
