"""The escrow_releases asset: pays a bounty's winner and writes the payment back to MLflow."""

import asyncio

import dagster as dg
from pydantic import Field

from pf_platform.assets.escrow.escrows import escrow_partitions, escrow_tables, escrows
from pf_platform.assets.escrow.resources import MlflowResource
from pf_platform.escrow.rules import Crossing
from pf_platform.escrow.settlement import (
    escrow_record,
    expected_split,
    pending_release,
    release_memo,
)
from pf_platform.escrow.tables import (
    FAILED,
    REFUSED,
    RELEASED,
    EscrowRecord,
    EscrowTables,
    ReleaseRecord,
)
from pf_platform.escrow.tracking import (
    BOUNTY_TAG,
    ESCROW_ID_TAG,
    RELEASE_TX_TAG,
    release_tags,
    tag_release,
)
from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.errors import InvalidRequestError, PurpleFleaError
from pf_platform.resources.payments.models import Escrow, EscrowRelease
from pf_platform.resources.payments.resource import PurpleFleaResource

# Run tags the release sensor sets; the sensor finds earlier attempts by them.
BOUNTY_RUN_TAG = "pf/escrow_bounty"
AGENT_RUN_TAG = "pf/escrow_agent"
ATTEMPT_RUN_TAG = "pf/escrow_attempt"
MLFLOW_RUN_TAG = "pf/mlflow_run_id"


class EscrowReleaseConfig(dg.Config):
    """The winner to pay and the MLflow evidence, as the release sensor found them."""

    agent_id: str = Field(description="The winning agent, paid the escrow's share net of fees.")
    mlflow_run_id: str = Field(description="The agent's run that crossed the target.")
    metric_value: float = Field(description="The value that crossed the target.")
    metric_step: int = Field(description="The step at which it was logged.")
    metric_timestamp_ms: int = Field(description="When it was logged (epoch milliseconds).")


def _release_and_read(
    purple_flea: PurpleFleaResource, escrow_id: str, agent: str, memo: str
) -> tuple[EscrowRelease | InvalidRequestError, Escrow | None]:
    """Releases to ``agent``, then reads the escrow's state, over one connection.

    A refusal is returned, not raised, so the state after it is read too. A failure of the
    read alone returns no state: the release's outcome must not be lost to it.

    Raises:
        PurpleFleaError: the release itself got no usable answer.
    """

    async def call() -> tuple[EscrowRelease | InvalidRequestError, Escrow | None]:
        async with purple_flea.get_client() as client:
            try:
                outcome: EscrowRelease | InvalidRequestError = await client.release_escrow(
                    escrow_id, agent, memo
                )
            except InvalidRequestError as exc:
                outcome = exc
            try:
                return outcome, await client.get_escrow(escrow_id)
            except PurpleFleaError:
                return outcome, None

    return asyncio.run(call())


def _record_state(
    tables: EscrowTables, escrow: EscrowRecord, state: Escrow | None, run_id: str
) -> EscrowRecord:
    if state is None:
        return escrow  # the next sync of escrows brings it up to date
    record = escrow_record(escrow.bounty(), state, run_id=run_id)
    tables.write_escrow(record)
    return record


@dg.asset(
    partitions_def=escrow_partitions,
    group_name="escrow",
    kinds={"delta", "purpleflea", "mlflow"},
    deps=[escrows],
    check_specs=[
        dg.AssetCheckSpec(
            "check_release_fee_split",
            asset="escrow_releases",
            description="winner, referrer and platform legs follow the 1% / 15% fee rule exactly",
        ),
        dg.AssetCheckSpec(
            "check_release_lineage",
            asset="escrow_releases",
            description="the winning MLflow run carries the escrow id and the release tx id",
        ),
    ],
)
def escrow_releases(
    context: dg.AssetExecutionContext,
    config: EscrowReleaseConfig,
    lake: LakeResource,
    purple_flea: PurpleFleaResource,
    mlflow: MlflowResource,
):
    """Releases of an escrow to the agents whose MLflow runs crossed its target."""
    bounty_id = context.partition_key
    run_id = context.run.run_id
    tables = escrow_tables(lake)
    escrow = tables.escrow(bounty_id)
    if escrow is None:
        raise dg.Failure(
            description=f"no escrow is recorded for bounty {bounty_id}; materialize escrows first",
            allow_retries=False,
        )

    agent = config.agent_id
    prior = tables.release(bounty_id, agent)
    attempts = (prior.attempts if prior else 0) + 1
    if prior is not None and prior.status == RELEASED:
        # Paid before: the request below replays that payment, and the run it named stays the
        # evidence even if this run was launched with another.
        row = prior.with_outcome(attempts=attempts, dagster_run_id=run_id)
    else:
        crossing = Crossing(
            agent_id=agent,
            run_id=config.mlflow_run_id,
            value=config.metric_value,
            timestamp_ms=config.metric_timestamp_ms,
            step=config.metric_step,
        )
        row = pending_release(escrow, crossing, attempts=attempts, run_id=run_id)
        # Written before the request, so a crash leaves a trace the sensor acts on.
        tables.write_release(row)
    crossing = Crossing(
        agent_id=agent,
        run_id=row.mlflow_run_id,
        value=row.metric_value,
        timestamp_ms=round(row.metric_timestamp.timestamp() * 1000),
        step=row.metric_step,
    )

    try:
        outcome, state = _release_and_read(
            purple_flea, escrow.escrow_id, agent, release_memo(escrow, crossing)
        )
    except PurpleFleaError as exc:
        tables.write_release(
            row.with_outcome(
                status=FAILED, error_code=exc.code or type(exc).__name__, error_message=str(exc)
            )
        )
        raise dg.Failure(
            description=(
                f"release of {bounty_id} to {agent} got no usable answer ({exc}); the API pays "
                "an escrow and agent at most once, so the release sensor asks again"
            ),
        ) from exc
    if isinstance(outcome, InvalidRequestError):
        tables.write_release(
            row.with_outcome(status=REFUSED, error_code=outcome.code, error_message=str(outcome))
        )
        record = _record_state(tables, escrow, state, run_id)
        raise dg.Failure(
            description=(
                f"release of {bounty_id} to {agent} refused ({outcome.code}): {outcome.message}"
            ),
            metadata={"error_code": outcome.code or "-", "escrow_status": record.status},
            # The API decided; asking again gets the same answer.
            allow_retries=False,
        ) from outcome
    release = outcome

    share = release.share_usdc
    if share is None and release.amount_usdc is not None and release.fee_usdc is not None:
        share = release.amount_usdc + release.fee_usdc
    paid = row.with_outcome(
        status=RELEASED,
        tx_id=release.tx_id,
        share_usdc=share,
        amount_usdc=release.amount_usdc,
        fee_usdc=release.fee_usdc,
        referrer_fee_usdc=release.referrer_fee_usdc,
        platform_fee_usdc=release.platform_fee_usdc,
        error_code=None,
        error_message=None,
    )
    context.log.info(
        "bounty %s: released %s USDC to %s (fee %s), tx %s%s",
        bounty_id,
        release.amount_usdc,
        agent,
        release.fee_usdc,
        release.tx_id,
        " (replayed)" if release.replayed else "",
    )

    from mlflow.exceptions import MlflowException  # mlflow is slow to import; only here

    tag_error: Exception | None = None
    try:
        tag_release(
            mlflow.get_client(),
            paid.mlflow_run_id,
            bounty_id=bounty_id,
            escrow_id=escrow.escrow_id,
            tx_id=release.tx_id,
        )
    except (MlflowException, OSError) as exc:  # the payment is recorded either way
        tag_error = exc
    paid = paid.with_outcome(mlflow_tagged=tag_error is None)
    tables.write_release(paid)
    if tag_error is not None:
        raise dg.Failure(
            description=(
                f"{agent} was paid (tx {release.tx_id}) but MLflow run {paid.mlflow_run_id} could "
                f"not be tagged ({type(tag_error).__name__}: {tag_error}); the release sensor "
                "runs the release again, which replays the payment and tags the run"
            ),
        ) from tag_error
    record = _record_state(tables, escrow, state, run_id)

    yield dg.MaterializeResult(
        metadata={
            "agent_id": agent,
            "tx_id": release.tx_id,
            "replayed": release.replayed,
            "share_usdc": str(paid.share_usdc),
            "winner_net_usdc": str(paid.amount_usdc),
            "fee_usdc": str(paid.fee_usdc),
            "referrer_fee_usdc": str(paid.referrer_fee_usdc),
            "platform_fee_usdc": str(paid.platform_fee_usdc),
            "mlflow_run_id": paid.mlflow_run_id,
            "metric": f"{escrow.metric}={paid.metric_value!r} at step {paid.metric_step}",
            "crossed_at": paid.metric_timestamp.isoformat(),
            "escrow_status": record.status,
            "table": tables.releases_uri,
        }
    )
    yield _fee_check(escrow, paid)
    yield _lineage_check(mlflow, escrow, paid)


def _fee_check(escrow: EscrowRecord, paid: ReleaseRecord) -> dg.AssetCheckResult:
    expected = expected_split(escrow.share_usdc, has_referrer=escrow.referrer_agent_id is not None)
    legs = {
        "share_usdc": (expected.share_usdc, paid.share_usdc),
        "winner_net_usdc": (expected.net_usdc, paid.amount_usdc),
        "fee_usdc": (expected.fee_usdc, paid.fee_usdc),
        "referrer_fee_usdc": (expected.referrer_fee_usdc, paid.referrer_fee_usdc),
        "platform_fee_usdc": (expected.platform_fee_usdc, paid.platform_fee_usdc),
    }
    wrong = sorted(name for name, (want, got) in legs.items() if want != got)
    return dg.AssetCheckResult(
        check_name="check_release_fee_split",
        passed=not wrong,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"the API's split differs from the fee rule in {', '.join(wrong)}"
            if wrong
            else f"{paid.amount_usdc} to the winner, {paid.fee_usdc} fee "
            f"({paid.referrer_fee_usdc} referrer, {paid.platform_fee_usdc} platform)"
        ),
        metadata={
            name: dg.MetadataValue.json({"expected": str(want), "api": str(got)})
            for name, (want, got) in legs.items()
        },
    )


def _lineage_check(
    mlflow: MlflowResource, escrow: EscrowRecord, paid: ReleaseRecord
) -> dg.AssetCheckResult:
    tags = release_tags(mlflow.get_client(), paid.mlflow_run_id)
    want = {
        BOUNTY_TAG: escrow.bounty_id,
        ESCROW_ID_TAG: escrow.escrow_id,
        RELEASE_TX_TAG: paid.tx_id or "",
    }
    return dg.AssetCheckResult(
        check_name="check_release_lineage",
        passed=tags == want,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"MLflow run {paid.mlflow_run_id} links to escrow {escrow.escrow_id}, tx {paid.tx_id}"
            if tags == want
            else f"MLflow run {paid.mlflow_run_id} carries {tags}, expected {want}"
        ),
        metadata={"mlflow_run_id": paid.mlflow_run_id},
    )
