"""Payout guarantees through Dagster over real HTTP: partial batches, insufficient funds, the spend
guard, overpayment, two runs of one day at once, and the reconciliation check.

Each test lands one small day: agents a and b agree on all four items, c disagrees once (3 of 4),
so with the default rate they are owed 0.008, 0.008 and 0.006 USDC.
"""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import pytest

from pf_platform import settings
from pf_platform.resources.lake import LakeResource
from pf_platform_tests.helpers import (
    ledger_paid_by_agent,
    materialization,
    run_day,
    run_twice_at_once,
)

DAY = "2026-11-05"
LABELS = ["happy", "sad"]
OWED = {"agent_a": Decimal("0.008"), "agent_b": Decimal("0.008"), "agent_c": Decimal("0.006")}


def land_day(name: str = "a_good.csv", items: range = range(4)) -> None:
    folder = settings.landing_root() / DAY
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["record_id,item_id,agent_id,label"]
    for item in items:
        for agent in ("agent_a", "agent_b", "agent_c"):
            label = "sad" if agent == "agent_c" and item == 0 else "happy"
            lines.append(f"{agent}-{item},item_{item},{agent},{label}")
    (folder / name).write_text("\n".join(lines) + "\n")


def run(instance, **config) -> dg.ExecuteInProcessResult:
    return run_day(DAY, LABELS, instance, **config)


def checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def failure(result) -> dg.Failure:
    data = result.failure_data_for_node("transfer_results")
    assert data is not None, "transfer_results did not fail"
    return data.user_failure_data


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def test_refused_item_is_recorded_and_the_rest_paid(project_home, sandbox, instance):
    land_day()
    sandbox.register(["agent_a", "agent_b"])  # agent_c has no wallet yet

    first = run(instance)

    assert first.success
    assert ledger_paid_by_agent([DAY]) == {"agent_a": OWED["agent_a"], "agent_b": OWED["agent_b"]}
    refused = checks(first)["check_no_failed_transfers"]
    assert refused.passed is False
    assert refused.metadata["by_reason"].value == {"unknown_agent": 1}
    assert "agent_c 0.006000 USDC: unknown_agent" in refused.metadata["examples"].value

    sandbox.register(["agent_c"])
    second = run(instance)

    assert second.success
    assert checks(second)["check_no_failed_transfers"].passed is True
    assert ledger_paid_by_agent([DAY]) == OWED
    assert sandbox.balances() == OWED
    assert sandbox.stats()["transfers_committed"] == 3
    keys = sorted(row.idempotency_key for row in LakeResource().ledger().read(DAY))
    assert keys == [
        "labeling:2026-11-05:agent_a:0",
        "labeling:2026-11-05:agent_b:0",
        "labeling:2026-11-05:agent_c:0",
        "labeling:2026-11-05:agent_c:1",
    ]


def test_insufficient_funds_stops_cleanly_and_the_next_run_finishes(
    project_home, sandbox, instance
):
    land_day()
    sandbox.register(["agent_a", "agent_b", "agent_c", "sink"])
    treasury = Decimal(sandbox.audit()["treasury_usdc"])
    drain = {
        "recipient_agent_id": "sink",
        "amount_usdc": treasury - Decimal("0.010"),
        "memo": "leave 0.010 USDC in the treasury",
        "idempotency_key": "test:drain",
    }
    sandbox.call("POST", "/wallet/batch-transfer", {"transfers": [drain]})
    one_at_a_time = {"batch_size": 1, "concurrency": 1}

    first = run(instance, purple_flea=one_at_a_time)

    assert not first.success
    assert "insufficient funds" in failure(first).description
    rows = {row.agent_id: row for row in LakeResource().ledger().read(DAY)}
    assert (rows["agent_a"].status, rows["agent_b"].status) == ("succeeded", "failed")
    assert rows["agent_b"].error == "insufficient_funds"
    assert rows["agent_c"].status == "pending"  # never sent: the run stopped first
    assert sandbox.stats()["transfers_committed"] == 2  # the drain and agent_a

    sandbox.call("POST", "/admin/fund", {"agent_id": "treasury", "amount_usdc": Decimal(1)})
    second = run(instance, purple_flea=one_at_a_time)

    assert second.success
    assert ledger_paid_by_agent([DAY]) == OWED
    balances = sandbox.balances()
    assert {agent: balances[agent] for agent in OWED} == OWED
    assert sandbox.stats()["transfers_committed"] == 4
    assert materialization(second, "transfer_results", "transfer_results")["transfers_sent"] == 2


def test_spend_guard_stops_before_any_request_and_approval_lasts_one_run(
    project_home, sandbox, instance
):
    land_day()
    sandbox.register(list(OWED))
    tight = {"payout_policy": {"max_usdc_per_day": "0.02", "max_usdc_per_agent": "0.007"}}
    requests_before = sandbox.stats()["requests"]

    blocked = run(instance, **tight)

    assert not blocked.success
    figures = failure(blocked).metadata
    assert figures["day_total_usdc"].value == "0.022000"
    assert figures["day_cap_usdc"].value == "0.020000"
    assert figures["agents_over_cap"].value == {"agent_a": "0.008000", "agent_b": "0.008000"}
    # Not one request reached the API: the only new one is this stats call itself.
    assert sandbox.stats()["requests"] == requests_before + 1
    assert LakeResource().ledger().read(DAY) == []

    approved = run(instance, **tight, approve=True)

    assert approved.success
    assert sandbox.balances() == OWED

    land_day("b_late.csv", range(4, 6))  # late labels: a top-up is owed
    blocked_again = run(instance, **tight)

    assert not blocked_again.success
    assert failure(blocked_again).metadata["day_total_usdc"].value == "0.034000"
    assert sandbox.balances() == OWED
    assert sandbox.stats()["transfers_committed"] == 3


def test_overpayment_fails_its_check_and_is_never_clawed_back(project_home, sandbox, instance):
    land_day()
    sandbox.register(list(OWED))
    assert run(instance).success

    halved = run(instance, labeling_task={"rate_usdc": "0.001"})

    assert halved.success
    over = checks(halved)["check_no_overpayment"]
    assert over.passed is False
    assert over.metadata["overpaid_usdc"].value == "0.011000"
    assert "agent_a +0.004000 USDC" in over.description
    assert "agent_c +0.003000 USDC" in over.description
    assert materialization(halved, "transfer_results", "transfer_results")["transfers_sent"] == 0
    assert sandbox.balances() == OWED


def test_reconciliation_check_matches_ledger_and_api(project_home, sandbox, instance):
    land_day()
    sandbox.register(list(OWED))

    result = run(instance)

    reconciliation = checks(result)["check_ledger_matches_api"]
    assert reconciliation.passed is True
    assert reconciliation.metadata["api_transactions"].value == 3
    assert reconciliation.metadata["api_usdc"].value == "0.022000"
    assert reconciliation.metadata["ledger_usdc"].value == "0.022000"


def _run_in_child(day: str, env: dict, barrier, queue) -> None:
    import os

    os.environ.update(env)
    barrier.wait()
    result = run_day(day, LABELS)
    queue.put(result.success)


def test_two_runs_of_one_day_at_once_pay_once(project_home, sandbox):
    land_day()
    sandbox.register(list(OWED))
    env = {
        name: value
        for name, value in __import__("os").environ.items()
        if name.startswith(("PF_", "DAGSTER_"))
    }
    outcomes = run_twice_at_once(_run_in_child, DAY, env)

    assert sorted(outcomes) == [True, True]
    assert sandbox.balances() == OWED
    assert sandbox.stats()["transfers_committed"] == 3
    for row in LakeResource().ledger().read(DAY):
        assert row.status == "succeeded"
        found = sandbox.call("GET", f"/wallet/transactions?idempotency_key={row.idempotency_key}")
        assert [tx["tx_id"] for tx in found["transactions"]] == [row.tx_id]


def test_labels_paid_on_one_day_are_never_paid_on_another(project_home, sandbox, instance):
    land_day()
    sandbox.register(list(OWED))
    assert run(instance).success
    later = settings.landing_root() / "2026-11-06"
    later.mkdir(parents=True)
    (later / "again.csv").write_text((settings.landing_root() / DAY / "a_good.csv").read_text())

    relanded = run_day("2026-11-06", LABELS, instance)

    assert relanded.success
    quarantined = LakeResource().read_partition("jobs", "quarantined_labels", "2026-11-06")
    assert set(quarantined["failed_expectations"].to_pylist()) == {"record_id_unique"}
    assert quarantined.num_rows == 12
    assert sandbox.balances() == OWED
    assert sandbox.stats()["transfers_committed"] == 3


def test_a_lost_ledger_never_pays_twice(project_home, sandbox, instance, monkeypatch, tmp_path):
    land_day()
    sandbox.register(list(OWED))
    assert run(instance).success

    # The same API and landing files, but the ledger is gone: the same keys are sent again.
    monkeypatch.setenv("PF_LAKE_ROOT", str(tmp_path / "lake-same"))
    same = run(instance)

    assert same.success
    metadata = materialization(same, "transfer_results", "transfer_results")
    assert (metadata["usdc_paid_this_run"], metadata["usdc_confirmed_this_run"]) == (
        "0",
        "0.022000",
    )
    assert sandbox.balances() == OWED

    # Lost again, and now the rate changed: the keys the API holds carry other amounts.
    monkeypatch.setenv("PF_LAKE_ROOT", str(tmp_path / "lake-other"))
    other = run(instance, labeling_task={"rate_usdc": "0.003"})

    assert not other.success
    assert "held by the API for another amount" in failure(other).description
    rows = LakeResource().ledger().read(DAY)
    assert {row.status for row in rows} == {"conflict"}
    assert sandbox.balances() == OWED
    assert sandbox.stats()["transfers_committed"] == 3

    still = run(instance, labeling_task={"rate_usdc": "0.003"})

    assert not still.success
    lookup = next(row for row in LakeResource().ledger().read(DAY) if row.agent_id == "agent_a")
    assert lookup.error.startswith("the API paid 0.008000 USDC to agent_a under this key")
    assert sandbox.stats()["transfers_committed"] == 3
