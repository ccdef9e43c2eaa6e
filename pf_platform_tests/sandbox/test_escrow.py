"""Escrow over real HTTP: locking, the fee split to the micro-USDC, replays and expiry refunds.

Fee rule under test (see ``pf_platform.sandbox.ledger``): fee = share // 100, the referrer gets
fee * 15 // 100, the platform the rest of the fee, the winner share - fee; integer micro-USDC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pf_platform_tests.sandbox.conftest import SandboxApi, assert_ledger_sound, decode

DAY = 86_400


def escrow_body(amount: Any, eligible: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "amount_usdc": amount,
        "eligible_agents": eligible,
        "release_condition": {"metric": "f1", "threshold": Decimal("0.9")},
        "expiry_seconds": DAY,
        "memo": "bounty",
        **extra,
    }


def release(api: SandboxApi, escrow_id: str, recipient: str):
    return api.post(
        "/escrow/release",
        {"escrow_id": escrow_id, "recipient_agent_id": recipient, "memo": "won"},
    )


def test_release_splits_the_fee_with_the_referrer(api: SandboxApi, prefix: str) -> None:
    w1, w2, ref = f"{prefix}-w1", f"{prefix}-w2", f"{prefix}-ref"
    keys = api.register(w1, w2, ref)
    treasury = api.treasury()
    platform = api.audit()["platform_fees_usdc"]

    created = api.ok("POST", "/escrow/create", escrow_body(10, [w1, w2], referrer_agent_id=ref))

    assert created["status"] == "locked"
    assert created["escrow_id"].startswith("esc_")
    assert (created["amount_usdc"], created["winners"]) == (10, 1)
    assert created["eligible_agents"] == [w1, w2]
    assert created["referrer_agent_id"] == ref
    assert created["release_condition"] == {"metric": "f1", "threshold": Decimal("0.9")}
    assert created["released"] == []
    assert created["expires_at"].endswith("Z")
    assert api.treasury() == treasury - 10

    result = decode(release(api, created["escrow_id"], w1))

    assert result["tx_id"].startswith("tx_")
    assert result["recipient_agent_id"] == w1
    assert result["amount_usdc"] == Decimal("9.9")
    assert result["fee_usdc"] == Decimal("0.1")
    assert result["referrer_fee_usdc"] == Decimal("0.015")
    assert result["platform_fee_usdc"] == Decimal("0.085")
    assert (result["status"], result["replayed"]) == ("released", False)
    assert api.balance(keys[w1]) == Decimal("9.9")
    assert api.balance(keys[ref]) == Decimal("0.015")
    assert api.audit()["platform_fees_usdc"] == platform + Decimal("0.085")

    replay = decode(release(api, created["escrow_id"], w1))
    assert replay == {**result, "replayed": True}
    assert api.balance(keys[w1]) == Decimal("9.9")

    no_slot = release(api, created["escrow_id"], w2)
    assert no_slot.status_code == 409
    assert decode(no_slot)["error"]["code"] == "escrow_not_locked"

    state = api.ok("GET", f"/escrow/{created['escrow_id']}")
    assert state["status"] == "released"
    assert state["remaining_usdc"] == 0
    assert [r["tx_id"] for r in state["released"]] == [result["tx_id"]]
    assert_ledger_sound(api.audit())


def test_split_among_winners_and_rounding_down_to_the_micro(api: SandboxApi, prefix: str) -> None:
    w1, w2 = f"{prefix}-w1", f"{prefix}-w2"
    keys = api.register(w1, w2)
    platform = api.audit()["platform_fees_usdc"]

    shared = api.ok("POST", "/escrow/create", escrow_body(3, [w1, w2], winners=2))
    first = decode(release(api, shared["escrow_id"], w1))
    second = decode(release(api, shared["escrow_id"], w2))

    assert (first["amount_usdc"], first["fee_usdc"], first["referrer_fee_usdc"]) == (
        Decimal("1.485"),
        Decimal("0.015"),
        0,
    )
    assert (first["status"], second["status"]) == ("locked", "released")

    # 150 micro-USDC: the 1% fee is 1.5 micros, rounded down to 1 and taken by the platform.
    tiny = api.ok("POST", "/escrow/create", escrow_body(Decimal("0.00015"), [w1]))
    small = decode(release(api, tiny["escrow_id"], w1))

    assert (small["amount_usdc"], small["fee_usdc"], small["platform_fee_usdc"]) == (
        Decimal("0.000149"),
        Decimal("0.000001"),
        Decimal("0.000001"),
    )
    assert api.balance(keys[w1]) == Decimal("1.485") + Decimal("0.000149")
    assert api.balance(keys[w2]) == Decimal("1.485")
    assert api.audit()["platform_fees_usdc"] == platform + Decimal("0.030001")


def test_create_validation(api: SandboxApi, prefix: str) -> None:
    w1, w2 = f"{prefix}-w1", f"{prefix}-w2"
    api.register(w1, w2)
    treasury = api.treasury()

    cases = {
        "uneven": escrow_body(1, [w1, w2], winners=3),
        "not_divisible": escrow_body(Decimal("0.000001"), [w1, w2], winners=2),
        "unknown": escrow_body(1, [w1, f"{prefix}-ghost"]),
        "unknown_referrer": escrow_body(1, [w1], referrer_agent_id=f"{prefix}-ghost"),
        "string_amount": escrow_body("1", [w1]),
        "too_rich": escrow_body(treasury + 1, [w1]),
    }
    answers = {name: api.post("/escrow/create", body) for name, body in cases.items()}

    codes = {name: (r.status_code, decode(r)["error"]["code"]) for name, r in answers.items()}
    assert codes == {
        "uneven": (400, "invalid_request"),
        "not_divisible": (400, "invalid_amount"),
        "unknown": (400, "unknown_agent"),
        "unknown_referrer": (400, "unknown_agent"),
        "string_amount": (400, "invalid_amount"),
        "too_rich": (400, "insufficient_funds"),
    }
    assert api.treasury() == treasury

    escrow = api.ok("POST", "/escrow/create", escrow_body(1, [w1]))
    outsider = release(api, escrow["escrow_id"], w2)
    missing = release(api, "esc_missing", w1)
    assert (outsider.status_code, decode(outsider)["error"]["code"]) == (400, "not_eligible")
    assert (missing.status_code, decode(missing)["error"]["code"]) == (404, "not_found")
    assert api.get("/escrow/esc_missing").status_code == 404


def test_create_is_idempotent_per_key(api: SandboxApi, prefix: str) -> None:
    w1 = f"{prefix}-w1"
    keys = api.register(w1)
    treasury = api.treasury()
    body = escrow_body(5, [w1], idempotency_key=f"{prefix}-e1")

    first = api.ok("POST", "/escrow/create", body)
    again = api.ok("POST", "/escrow/create", body)
    by_header = api.post(
        "/escrow/create",
        escrow_body(5, [w1]),
        headers={"Idempotency-Key": f"{prefix}-e1"},
    )
    conflict = api.post("/escrow/create", {**body, "amount_usdc": 6})

    assert again["escrow_id"] == first["escrow_id"]
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert decode(by_header)["escrow_id"] == first["escrow_id"]
    assert conflict.status_code == 409
    assert decode(conflict)["error"] == {
        "code": "idempotency_conflict",
        "message": decode(conflict)["error"]["message"],
        "keys": [f"{prefix}-e1"],
    }
    assert api.treasury() == treasury - 5
    [lock] = api.transactions(f"{prefix}-e1")
    assert (lock["kind"], lock["amount_usdc"], lock["escrow_id"]) == (
        "escrow_lock",
        5,
        first["escrow_id"],
    )
    agent = api.as_key(keys[w1]).post("/escrow/create", escrow_body(1, [w1]))
    assert agent.status_code == 403
    assert api.as_key(keys[w1]).ok("GET", f"/escrow/{first['escrow_id']}")["status"] == "locked"


def test_expiry_refunds_the_payer_and_late_release_is_gone(api: SandboxApi, prefix: str) -> None:
    w1, w2 = f"{prefix}-w1", f"{prefix}-w2"
    keys = api.register(w1, w2)
    treasury = api.treasury()
    escrow = api.ok(
        "POST", "/escrow/create", escrow_body(4, [w1, w2], winners=2, expiry_seconds=60)
    )
    untouched = api.ok("POST", "/escrow/create", escrow_body(1, [w1], expiry_seconds=60))
    swept = api.ok("POST", "/escrow/create", escrow_body(2, [w1], expiry_seconds=60))
    decode(release(api, escrow["escrow_id"], w1))
    assert api.treasury() == treasury - 7

    api.ok("POST", "/admin/clock", {"advance_seconds": 61})

    state = api.ok("GET", f"/escrow/{escrow['escrow_id']}")
    assert state["status"] == "refunded"
    assert state["remaining_usdc"] == 0
    assert state["refund_tx_id"].startswith("tx_")
    assert api.treasury() == treasury - 5  # the unreleased half (2) came back

    late = release(api, escrow["escrow_id"], w2)
    assert late.status_code == 410
    error = decode(late)["error"]
    assert error["code"] == "escrow_expired"
    assert "expired" in error["message"] and "refunded" in error["message"]

    # A release attempt is also an access: the untouched escrow is refunded on the way.
    assert release(api, untouched["escrow_id"], w1).status_code == 410
    assert api.treasury() == treasury - 4

    sweep = api.ok("POST", "/admin/escrow/sweep")
    assert swept["escrow_id"] in sweep["refunded"]
    assert api.ok("GET", f"/escrow/{swept['escrow_id']}")["status"] == "refunded"
    assert api.treasury() == treasury - 2  # only the winner's share of 2 is gone
    assert api.balance(keys[w1]) == Decimal("1.98")
    assert api.balance(keys[w2]) == 0
    assert_ledger_sound(api.audit())
