"""Batch transfers, balances and reconciliation over real HTTP against the sandbox server.

Contract: per-item outcomes in request order; a replayed key moves nothing; a key reused with
different content refuses the whole request and commits none of it; balances page by agent id
without repeats or gaps; every answer carries a request id.
"""

from __future__ import annotations

from decimal import Decimal

from pf_platform_tests.sandbox.conftest import SandboxApi, assert_ledger_sound, decode, transfer


def test_transfers_move_exact_amounts(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a", f"{prefix}-b")
    treasury = api.treasury()

    response = api.transfer(
        transfer(f"{prefix}-a", Decimal("0.002"), f"{prefix}-k1"),
        transfer(f"{prefix}-b", Decimal("1.5"), f"{prefix}-k2"),
        transfer(f"{prefix}-a", 3, f"{prefix}-k3"),
    )

    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    results = decode(response)["results"]
    assert [(r["agent_id"], r["success"], r["error"], r["replayed"]) for r in results] == [
        (f"{prefix}-a", True, None, False),
        (f"{prefix}-b", True, None, False),
        (f"{prefix}-a", True, None, False),
    ]
    assert [r["amount_usdc"] for r in results] == [Decimal("0.002"), Decimal("1.5"), 3]
    assert all(r["tx_id"].startswith("tx_") for r in results)
    assert b'"amount_usdc":0.002' in response.content  # a JSON number, not a string
    assert api.balance(keys[f"{prefix}-a"]) == Decimal("3.002")
    assert api.balance(keys[f"{prefix}-b"]) == Decimal("1.5")
    assert api.treasury() == treasury - Decimal("4.502")


def test_replay_returns_the_original_result_and_moves_nothing(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    item = transfer(f"{prefix}-a", Decimal("2.25"), f"{prefix}-k")
    first = decode(api.transfer(item))["results"][0]
    treasury = api.treasury()

    second = decode(api.transfer(item))["results"][0]

    assert second == {**first, "replayed": True}
    assert api.balance(keys[f"{prefix}-a"]) == Decimal("2.25")
    assert api.treasury() == treasury
    assert api.stats()["replays"] >= 1


def test_reused_key_with_other_content_refuses_the_whole_request(
    api: SandboxApi, prefix: str
) -> None:
    keys = api.register(f"{prefix}-a", f"{prefix}-b")
    api.transfer(transfer(f"{prefix}-a", 1, f"{prefix}-k1"))
    treasury = api.treasury()

    response = api.transfer(
        transfer(f"{prefix}-b", 5, f"{prefix}-fresh"),
        transfer(f"{prefix}-a", 2, f"{prefix}-k1"),  # same key, other amount
        transfer(f"{prefix}-b", 1, f"{prefix}-k1"),  # same key, other recipient
    )

    assert response.status_code == 409
    error = decode(response)["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["keys"] == [f"{prefix}-k1"]
    assert api.transactions(f"{prefix}-fresh") == []
    assert api.balance(keys[f"{prefix}-b"]) == 0
    assert api.treasury() == treasury


def test_duplicate_key_inside_one_batch(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    same = transfer(f"{prefix}-a", 1, f"{prefix}-k")

    results = decode(api.transfer(same, same))["results"]

    assert [r["replayed"] for r in results] == [False, True]
    assert results[0]["tx_id"] == results[1]["tx_id"]
    assert api.balance(keys[f"{prefix}-a"]) == 1

    response = api.transfer(
        transfer(f"{prefix}-a", 1, f"{prefix}-k2"), transfer(f"{prefix}-a", 7, f"{prefix}-k2")
    )
    assert response.status_code == 409
    assert decode(response)["error"]["keys"] == [f"{prefix}-k2"]
    assert api.transactions(f"{prefix}-k2") == []


def test_item_errors_do_not_stop_the_other_items(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    treasury = api.treasury()

    response = api.transfer(
        transfer(f"{prefix}-ghost", 1, f"{prefix}-k1"),
        transfer(f"{prefix}-a", 0, f"{prefix}-k2"),
        transfer(f"{prefix}-a", -1, f"{prefix}-k3"),
        transfer(f"{prefix}-a", Decimal("0.0000001"), f"{prefix}-k4"),
        transfer(f"{prefix}-a", "1", f"{prefix}-k5"),
        transfer(f"{prefix}-a", True, f"{prefix}-k6"),
        transfer(f"{prefix}-a", None, f"{prefix}-k7"),
        transfer(f"{prefix}-a", 1, None),
        transfer(f"{prefix}-a", treasury + 1, f"{prefix}-k9"),
        transfer(f"{prefix}-a", Decimal("0.5"), f"{prefix}-k10"),
    )

    assert response.status_code == 200
    results = decode(response)["results"]
    assert [r["error"] for r in results] == [
        "unknown_agent",
        "invalid_amount",
        "invalid_amount",
        "invalid_amount",
        "invalid_amount",
        "invalid_amount",
        "invalid_amount",
        "missing_idempotency_key",
        "insufficient_funds",
        None,
    ]
    assert [r["success"] for r in results] == [False] * 9 + [True]
    assert all(r["tx_id"] is None for r in results[:9])
    assert api.balance(keys[f"{prefix}-a"]) == Decimal("0.5")
    assert api.treasury() == treasury - Decimal("0.5")


def test_failed_item_does_not_bind_its_key(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    too_much = api.treasury() + 10
    item = transfer(f"{prefix}-a", too_much, f"{prefix}-k")

    assert decode(api.transfer(item))["results"][0]["error"] == "insufficient_funds"
    assert api.transactions(f"{prefix}-k") == []

    api.fund("treasury", 10)
    retried = decode(api.transfer(item))["results"][0]

    assert (retried["success"], retried["replayed"]) == (True, False)
    assert api.balance(keys[f"{prefix}-a"]) == too_much
    # The retry emptied the treasury; refill it for the tests that follow.
    api.fund("treasury", too_much)


def test_batch_size_limits(api: SandboxApi, prefix: str) -> None:
    api.register(f"{prefix}-a")
    items = [transfer(f"{prefix}-a", 1, f"{prefix}-{i}") for i in range(1001)]

    too_large = api.transfer(*items)
    assert too_large.status_code == 400
    assert decode(too_large)["error"]["code"] == "batch_too_large"
    assert api.transactions(f"{prefix}-0") == []

    empty = api.post("/wallet/batch-transfer", {"transfers": []})
    full = api.transfer(*items[:1000])

    assert empty.status_code == 400
    assert decode(empty)["error"]["code"] == "invalid_request"
    assert full.status_code == 200
    assert sum(r["success"] for r in decode(full)["results"]) == 1000


def test_transactions_lookup_by_idempotency_key(api: SandboxApi, prefix: str) -> None:
    api.register(f"{prefix}-a")
    result = decode(api.transfer(transfer(f"{prefix}-a", Decimal("4.2"), f"{prefix}-k", "hi")))

    found = api.transactions(f"{prefix}-k")

    assert len(found) == 1
    assert found[0]["tx_id"] == result["results"][0]["tx_id"]
    assert found[0]["kind"] == "transfer"
    assert found[0]["recipient_agent_id"] == f"{prefix}-a"
    assert found[0]["amount_usdc"] == Decimal("4.2")
    assert found[0]["memo"] == "hi"
    assert found[0]["created_at"].endswith("Z")
    assert api.transactions(f"{prefix}-unknown") == []
    assert api.get("/wallet/transactions").status_code == 400


def test_balances_pages_stay_stable_while_agents_are_added(api: SandboxApi, prefix: str) -> None:
    originals = [f"{prefix}-{i:03d}" for i in range(0, 40, 2)]
    api.register(*originals)
    seen: list[str] = []
    added_after: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/wallet/balances?limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = api.ok("GET", query)
        pages += 1
        rows = page["agents"]
        assert len(rows) <= 7
        assert [r["agent_id"] for r in rows] == sorted(r["agent_id"] for r in rows)
        seen += [r["agent_id"] for r in rows]
        if pages == 2:
            # Odd numbers land between the originals, on both sides of the cursor.
            newcomers = [f"{prefix}-{i:03d}" for i in range(1, 40, 2)]
            api.register(*newcomers)
            added_after = [a for a in newcomers if a > seen[-1]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen))
    assert [a for a in seen if a in originals] == originals
    assert all(a in seen for a in added_after)
    assert all(a > b for a, b in zip(seen[1:], seen[:-1], strict=True))


def test_balances_limits_and_row_shape(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    api.transfer(transfer(f"{prefix}-a", Decimal("7.000001"), f"{prefix}-k"))

    mine = api.as_key(keys[f"{prefix}-a"]).ok("GET", "/wallet/balances?limit=5")
    big = api.ok("GET", "/wallet/balances?limit=5000")

    assert mine["next_cursor"] is None
    [row] = mine["agents"]
    assert row["agent_id"] == f"{prefix}-a"
    assert row["usdc"] == Decimal("7.000001")
    assert (row["btc"], row["eth"]) == (0, 0)
    assert row["last_tx_id"] == api.transactions(f"{prefix}-k")[0]["tx_id"]
    assert len(big["agents"]) <= 1000
    assert api.get("/wallet/balances?limit=0").status_code == 400
    assert api.get("/wallet/balances?cursor=%21%21").status_code == 400


def test_keys_and_roles(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    item = transfer(f"{prefix}-a", 1, f"{prefix}-k")

    missing = api.as_key(None).transfer(item)
    wrong = api.as_key("pf_test_" + "0" * 32).transfer(item)
    agent = api.as_key(keys[f"{prefix}-a"]).transfer(item)
    agent_admin = api.as_key(keys[f"{prefix}-a"]).post("/admin/fund", {"agent_id": "x"})

    assert [r.status_code for r in (missing, wrong, agent, agent_admin)] == [401, 401, 403, 403]
    assert decode(missing)["error"]["code"] == "unauthorized"
    assert decode(wrong)["error"]["code"] == "unauthorized"
    assert decode(agent)["error"]["code"] == "forbidden"
    assert all(r.headers["x-request-id"].startswith("req_") for r in (missing, wrong, agent))
    assert api.transactions(f"{prefix}-k") == []
    assert api.as_key(None).get("/health").json() == {"status": "ok"}


def test_register_agents_is_idempotent(api: SandboxApi, prefix: str) -> None:
    first = api.ok("POST", "/admin/agents", {"agent_ids": [f"{prefix}-a", f"{prefix}-b"]})
    again = api.ok("POST", "/admin/agents", {"agent_ids": [f"{prefix}-b", f"{prefix}-c"]})

    assert first["created"] == 2 and set(first["keys"]) == {f"{prefix}-a", f"{prefix}-b"}
    assert again == {"created": 1, "keys": {f"{prefix}-c": again["keys"][f"{prefix}-c"]}}
    assert all(k.startswith("pf_test_") and len(k) == 40 for k in first["keys"].values())
    refused = api.post("/admin/agents", {"agent_ids": ["treasury"]})
    assert decode(refused)["error"]["code"] == "invalid_request"
    assert_ledger_sound(api.audit())
