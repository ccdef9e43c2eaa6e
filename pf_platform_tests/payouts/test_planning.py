"""Owed minus paid: keys are deterministic, unsettled intents resume, overpayment is reported."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pf_platform.payouts.ledger import FAILED, PENDING, SUCCEEDED, UNKNOWN, LedgerRow
from pf_platform.payouts.planning import RESUME, SEND, idempotency_key, plan_payouts

DAY = "2026-11-01"


def _row(agent, sequence, amount, status):
    return LedgerRow(
        idempotency_key=idempotency_key("labeling", DAY, agent, sequence),
        payout_kind="labeling",
        partition_date=DAY,
        agent_id=agent,
        sequence=sequence,
        amount_usdc=Decimal(amount),
        memo="m",
        status=status,
    )


def _plan(owed, ledger=(), batch_size=1000):
    return plan_payouts(
        {k: Decimal(v) for k, v in owed.items()},
        ledger,
        payout_kind="labeling",
        partition_date=DAY,
        batch_size=batch_size,
    )


def test_first_plan_pays_everyone_owed_with_sequence_zero_keys():
    plan = _plan({"b": "0.004", "a": "0.002", "c": "0"})
    assert [(t.agent_id, t.amount_usdc, t.idempotency_key, t.action) for t in plan.transfers] == [
        ("a", Decimal("0.002"), "labeling:2026-11-01:a:0", SEND),
        ("b", Decimal("0.004"), "labeling:2026-11-01:b:0", SEND),
    ]


def test_plan_is_the_same_every_time():
    owed = {f"agent_{i}": f"0.{i:03d}" for i in range(1, 50)}
    assert _plan(owed).transfers == _plan(dict(reversed(owed.items()))).transfers


def test_paid_agents_get_nothing_and_late_labels_get_a_top_up():
    ledger = [_row("a", 0, "0.002", SUCCEEDED), _row("b", 0, "0.004", SUCCEEDED)]
    plan = _plan({"a": "0.002", "b": "0.010"}, ledger)
    assert [(t.idempotency_key, t.amount_usdc) for t in plan.transfers] == [
        ("labeling:2026-11-01:b:1", Decimal("0.006"))
    ]
    assert plan.paid == {"a": Decimal("0.002"), "b": Decimal("0.004")}


def test_unsettled_intents_resume_under_their_own_key():
    ledger = [_row("a", 0, "0.002", PENDING), _row("b", 0, "0.004", UNKNOWN)]
    plan = _plan({"a": "0.002", "b": "0.006"}, ledger)
    assert [(t.idempotency_key, t.amount_usdc, t.action) for t in plan.transfers] == [
        ("labeling:2026-11-01:a:0", Decimal("0.002"), RESUME),
        ("labeling:2026-11-01:b:0", Decimal("0.004"), RESUME),
        ("labeling:2026-11-01:b:1", Decimal("0.002"), SEND),
    ]


def test_refused_transfer_is_planned_again_under_a_new_key():
    plan = _plan({"a": "0.002"}, [_row("a", 0, "0.002", FAILED)])
    assert [(t.idempotency_key, t.action) for t in plan.transfers] == [
        ("labeling:2026-11-01:a:1", SEND)
    ]


def test_overpayment_is_reported_and_never_clawed_back():
    plan = _plan({"a": "0.002"}, [_row("a", 0, "0.010", SUCCEEDED)])
    assert plan.transfers == []
    assert plan.overpaid == {"a": Decimal("0.008")}


def test_batches_hold_at_most_batch_size():
    plan = _plan({f"agent_{i:04d}": "0.002" for i in range(2500)}, batch_size=1000)
    sizes = [sum(1 for t in plan.transfers if t.batch_number == n) for n in range(plan.batch_count)]
    assert sizes == [1000, 1000, 500]
    with pytest.raises(ValueError):
        _plan({"a": "1"}, batch_size=1001)
