"""The escrows asset: one escrow per declared bounty, locked through the API, state kept in sync."""

import asyncio

import dagster as dg

from pf_platform.escrow.bounties import Bounty, BountyError, bounties_path, load_bounties
from pf_platform.escrow.settlement import escrow_record
from pf_platform.escrow.tables import REFUNDED, EscrowRecord, EscrowTables
from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.errors import (
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidRequestError,
)
from pf_platform.resources.payments.models import Escrow
from pf_platform.resources.payments.resource import PurpleFleaResource

escrow_partitions = dg.DynamicPartitionsDefinition(name="escrows")


def escrow_tables(lake: LakeResource) -> EscrowTables:
    """escrow.escrows and escrow.releases in the lake."""
    return EscrowTables(
        lake.uri("escrow", "escrows"),
        lake.uri("escrow", "releases"),
        dict(lake.storage_options) or None,
    )


def escrow_memo(bounty: Bounty) -> str:
    """The memo an escrow is created with: the bounty's own, or its target spelled out."""
    return bounty.memo or f"bounty {bounty.bounty_id}: {bounty.describe()}"


async def _lock_or_read(
    purple_flea: PurpleFleaResource, bounty: Bounty, recorded: EscrowRecord | None
) -> Escrow:
    async with purple_flea.get_client() as client:
        if recorded is not None:
            return await client.get_escrow(recorded.escrow_id)
        # The key derives from the bounty id alone, so a re-run, a retry or a second sensor
        # tick gets the escrow first locked instead of locking the money again.
        return await client.create_escrow(
            bounty.amount_usdc,
            bounty.eligible_agents,
            bounty.release_condition(),
            bounty.expiry_seconds,
            escrow_memo(bounty),
            referrer_agent_id=bounty.referrer_agent_id,
            winners=bounty.winners,
            idempotency_key=bounty.idempotency_key,
        )


def _declared(context: dg.AssetExecutionContext, bounty_id: str) -> Bounty | None:
    try:
        return load_bounties().get(bounty_id)
    except BountyError as exc:
        context.log.warning("the bounties file cannot be read: %s", exc)
        return None


@dg.asset(
    partitions_def=escrow_partitions,
    group_name="escrow",
    kinds={"delta", "purpleflea"},
    check_specs=[
        dg.AssetCheckSpec(
            "check_escrow_matches_bounty",
            asset="escrows",
            description="the escrow on the API holds the terms the bounty declares",
        ),
        dg.AssetCheckSpec(
            "check_escrow_not_refunded",
            asset="escrows",
            description="the escrow did not expire and go back to the payer without its winners",
        ),
    ],
)
def escrows(context: dg.AssetExecutionContext, lake: LakeResource, purple_flea: PurpleFleaResource):
    """The escrow of one declared bounty, locked through the payments API, with its state."""
    bounty_id = context.partition_key
    tables = escrow_tables(lake)
    recorded = tables.escrow(bounty_id)
    declared = _declared(context, bounty_id)
    if recorded is None and declared is None:
        raise dg.Failure(
            description=(
                f"bounty {bounty_id!r} is not declared in {bounties_path()}; declare it "
                "(pf-platform escrow create) before locking its escrow"
            ),
            allow_retries=False,
        )
    # Once locked, the recorded terms are the contract; a later edit of the file does not
    # change what is watched or paid (check_escrow_matches_bounty flags the edit).
    bounty = recorded.bounty() if recorded is not None else declared

    try:
        escrow = asyncio.run(_lock_or_read(purple_flea, bounty, recorded))
    except IdempotencyConflictError as exc:
        raise dg.Failure(
            description=(
                f"an escrow was already locked for bounty {bounty_id!r} with other terms: {exc}. "
                "Terms never change after locking; declare the new terms under a new bounty id."
            ),
            allow_retries=False,
        ) from exc
    except InsufficientFundsError as exc:
        raise dg.Failure(
            description=f"the payer cannot lock {bounty.amount_usdc} USDC for {bounty_id}: {exc}",
            allow_retries=False,
        ) from exc
    except InvalidRequestError as exc:
        raise dg.Failure(
            description=f"the API refused the escrow of {bounty_id} ({exc.code}): {exc}",
            allow_retries=False,
        ) from exc

    record = escrow_record(bounty, escrow, run_id=context.run.run_id)
    tables.write_escrow(record)
    context.log.info(
        "bounty %s: escrow %s is %s (%s of %s USDC still locked)",
        bounty_id,
        record.escrow_id,
        record.status,
        record.remaining_usdc,
        record.amount_usdc,
    )

    yield dg.MaterializeResult(
        metadata={
            "escrow_id": record.escrow_id,
            "status": record.status,
            "target": bounty.describe(),
            "experiment": bounty.experiment,
            "amount_usdc": str(record.amount_usdc),
            "winners": record.winners,
            "released_count": record.released_count,
            "remaining_usdc": str(record.remaining_usdc),
            "refunded_usdc": str(record.refunded_usdc),
            "eligible_agents": len(record.eligible_agents),
            "expires_at": record.expires_at.isoformat() if record.expires_at else "-",
            "created_now": recorded is None and not escrow.replayed,
            "table": tables.escrows_uri,
        }
    )
    yield _matches_check(declared, escrow)
    yield _refund_check(record)


def _matches_check(declared: Bounty | None, escrow: Escrow) -> dg.AssetCheckResult:
    if declared is None:
        return dg.AssetCheckResult(
            check_name="check_escrow_matches_bounty",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="the bounty is no longer declared; escrow.escrows keeps its terms",
        )
    expected = {
        "amount_usdc": declared.amount_usdc,
        "winners": declared.winners,
        "eligible_agents": sorted(declared.eligible_agents),
        "referrer_agent_id": declared.referrer_agent_id,
    }
    actual = {
        "amount_usdc": escrow.amount_usdc,
        "winners": escrow.winners,
        "eligible_agents": sorted(escrow.eligible_agents),
        "referrer_agent_id": escrow.referrer_agent_id,
    }
    differ = sorted(name for name in expected if expected[name] != actual[name])
    return dg.AssetCheckResult(
        check_name="check_escrow_matches_bounty",
        passed=not differ,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"the bounty file now says other {', '.join(differ)} than the escrow locked; the "
            "locked terms apply"
            if differ
            else "the escrow holds the declared terms"
        ),
        metadata={
            name: dg.MetadataValue.json({"declared": str(expected[name]), "api": str(actual[name])})
            for name in differ
        },
    )


def _refund_check(record: EscrowRecord) -> dg.AssetCheckResult:
    refunded = record.status == REFUNDED
    return dg.AssetCheckResult(
        check_name="check_escrow_not_refunded",
        passed=not refunded,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"expired at {record.expires_at:%Y-%m-%d %H:%M} UTC with {record.released_count} of "
            f"{record.winners} winners; {record.refunded_usdc} USDC went back to the payer"
            if refunded and record.expires_at
            else f"status {record.status}"
        ),
        metadata={"refunded_usdc": str(record.refunded_usdc), "status": record.status},
    )
