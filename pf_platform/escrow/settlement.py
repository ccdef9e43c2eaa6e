"""From API answers to escrow rows: the escrow's state, the fee split, the release records.

The fee rule is the API's: on a release the winner's share pays a 1% platform fee rounded down
to the micro-USDC (a rounding residue favours the winner); when the escrow names a referrer, 15%
of that fee (rounded down) goes to the referrer and the platform keeps the rest. The three credits
add up to the share exactly. ``expected_split`` restates the rule so a check can hold the API to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from pf_platform.escrow.bounties import Bounty
from pf_platform.escrow.rules import Crossing
from pf_platform.escrow.tables import (
    EXPIRED,
    LOCKED,
    PENDING,
    REFUNDED,
    EscrowRecord,
    ReleaseRecord,
    utc_now,
)
from pf_platform.payouts.money import from_micros, to_micros
from pf_platform.resources.payments.models import Escrow

FEE_DIVISOR = 100
REFERRER_PERCENT = 15


@dataclass(frozen=True)
class FeeSplit:
    """Where one winner's share goes."""

    share_usdc: Decimal
    net_usdc: Decimal
    fee_usdc: Decimal
    referrer_fee_usdc: Decimal
    platform_fee_usdc: Decimal


def expected_split(share_usdc: Decimal, *, has_referrer: bool) -> FeeSplit:
    """The split the API's fee rule gives for a share (see the module docstring)."""
    share = to_micros(share_usdc)
    fee = share // FEE_DIVISOR
    referrer_fee = fee * REFERRER_PERCENT // 100 if has_referrer else 0
    return FeeSplit(
        share_usdc=from_micros(share),
        net_usdc=from_micros(share - fee),
        fee_usdc=from_micros(fee),
        referrer_fee_usdc=from_micros(referrer_fee),
        platform_fee_usdc=from_micros(fee - referrer_fee),
    )


def parse_time(text: str | None) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` for UTC) as an aware datetime."""
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def escrow_status(api_status: str, expires_at: datetime | None, now: datetime) -> str:
    """Our state for what the API reports.

    An escrow the API still calls locked after its expiry is ``expired``: its refund is due but
    not yet reported, and no release should be attempted.
    """
    if api_status == LOCKED and expires_at is not None and expires_at <= now:
        return EXPIRED
    return api_status


def escrow_record(
    bounty: Bounty, escrow: Escrow, *, run_id: str | None = None, now: datetime | None = None
) -> EscrowRecord:
    """The escrow.escrows row for a bounty and the API's view of its escrow."""
    now = now or utc_now()
    amount = escrow.amount_usdc if escrow.amount_usdc is not None else bounty.amount_usdc
    winners = escrow.winners or bounty.winners
    share = amount / winners
    released = escrow.raw.get("released")
    if isinstance(released, list):
        released_count = len(released)
    else:
        remaining = escrow.remaining_usdc if escrow.remaining_usdc is not None else amount
        released_count = int((amount - remaining) / share)
    expires_at = parse_time(escrow.expires_at)
    status = escrow_status(escrow.status, expires_at, now)
    refunded = amount - share * released_count if status == REFUNDED else Decimal(0)
    return EscrowRecord(
        bounty_id=bounty.bounty_id,
        escrow_id=escrow.escrow_id,
        status=status,
        experiment=bounty.experiment,
        metric=bounty.metric,
        threshold=str(bounty.threshold),
        direction=bounty.direction,
        rule=bounty.rule,
        agent_tag=bounty.agent_tag,
        eligible_agents=list(bounty.eligible_agents),
        winners=winners,
        released_count=released_count,
        amount_usdc=amount,
        share_usdc=share,
        remaining_usdc=(
            escrow.remaining_usdc
            if escrow.remaining_usdc is not None
            else amount - share * released_count
        ),
        refunded_usdc=refunded,
        referrer_agent_id=escrow.referrer_agent_id,
        expiry_seconds=bounty.expiry_seconds,
        memo=bounty.memo,
        idempotency_key=bounty.idempotency_key,
        lock_tx_id=escrow.raw.get("lock_tx_id"),
        refund_tx_id=escrow.raw.get("refund_tx_id"),
        created_at=parse_time(escrow.created_at),
        expires_at=expires_at,
        synced_at=now,
        dagster_run_id=run_id,
    )


def pending_release(
    escrow: EscrowRecord, crossing: Crossing, *, attempts: int, run_id: str | None
) -> ReleaseRecord:
    """The row written before a release request is sent."""
    return ReleaseRecord(
        bounty_id=escrow.bounty_id,
        escrow_id=escrow.escrow_id,
        agent_id=crossing.agent_id,
        status=PENDING,
        mlflow_run_id=crossing.run_id,
        metric=escrow.metric,
        metric_value=crossing.value,
        metric_step=crossing.step,
        metric_timestamp=datetime.fromtimestamp(crossing.timestamp_ms / 1000, UTC),
        referrer_agent_id=escrow.referrer_agent_id,
        attempts=attempts,
        dagster_run_id=run_id,
    )


def release_memo(escrow: EscrowRecord, crossing: Crossing) -> str:
    """The memo stored with the release transaction: the bounty and the MLflow evidence."""
    return (
        f"bounty {escrow.bounty_id}: {escrow.metric}={crossing.value!r} at step {crossing.step} "
        f"({escrow.direction} {escrow.threshold}), MLflow run {crossing.run_id}"
    )
