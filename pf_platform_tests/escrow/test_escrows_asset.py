"""escrows and escrow_bounty_sensor: locking once per bounty, syncing, refunds at expiry.

A late release is refused by the API with a reason that is recorded in escrow.releases, fails
the run with that reason, and is never asked for again.
"""

from __future__ import annotations

import shutil
import time
from decimal import Decimal

import dagster as dg

from pf_platform.escrow.bounties import declare_bounty
from pf_platform.escrow.demo import run_sensor_tick
from pf_platform_tests.escrow.conftest import EscrowWorld

T0 = 1_790_000_000_000


def test_bounty_sensor_adds_partitions_and_locks_each_escrow_once(world: EscrowWorld):
    ada, bo = world.agents("ada", "bo")
    first = world.bounty("first", [ada, bo], referrer_agent_id=bo, winners=2)
    declare_bounty(first)
    stats = world.sandbox.stats()

    results, cursor = run_sensor_tick(world.defs, "escrow_bounty_sensor", world.instance)
    assert [r.success for r in results] == [True]
    assert world.instance.get_dynamic_partitions("escrows") == [first.bounty_id]
    escrow = world.tables.escrow(first.bounty_id)
    assert (escrow.status, escrow.amount_usdc, escrow.share_usdc) == (
        "locked",
        Decimal(10),
        Decimal(5),
    )
    assert (escrow.winners, escrow.referrer_agent_id) == (2, bo)
    assert escrow.eligible_agents == [ada, bo]
    assert (escrow.metric, escrow.threshold, escrow.rule) == ("eval/f1", "0.9", "any")
    assert escrow.idempotency_key == f"pf-escrow:{first.bounty_id}"

    # Nothing new: no run. A second bounty: only its own partition and run.
    assert run_sensor_tick(world.defs, "escrow_bounty_sensor", world.instance, cursor)[0] == []
    second = world.bounty("second", [ada])
    declare_bounty(second)
    results, cursor = run_sensor_tick(world.defs, "escrow_bounty_sensor", world.instance, cursor)
    assert len(results) == 1
    assert sorted(world.instance.get_dynamic_partitions("escrows")) == sorted(
        [first.bounty_id, second.bounty_id]
    )
    assert world.sandbox.stats()["escrows_created"] - stats["escrows_created"] == 2

    # A lock that fails (an agent without a wallet) is asked for again once it can succeed.
    newcomer = f"{world.prefix}-newcomer"
    third = world.bounty("third", [ada, newcomer])
    declare_bounty(third)
    results, cursor = run_sensor_tick(world.defs, "escrow_bounty_sensor", world.instance, cursor)
    assert [r.success for r in results] == [False]
    assert world.tables.escrow(third.bounty_id) is None
    world.sandbox.register([newcomer])
    results, cursor = run_sensor_tick(world.defs, "escrow_bounty_sensor", world.instance, cursor)
    assert [(r.success, r.dagster_run.tags["dagster/partition"]) for r in results] == [
        (True, third.bounty_id)
    ]
    assert [r.dagster_run.tags["pf/escrow_attempt"] for r in results] == ["2"]
    assert world.tables.escrow(third.bounty_id).status == "locked"
    assert world.sandbox.stats()["escrows_created"] - stats["escrows_created"] == 3

    # With escrow.escrows lost, locking again gets the escrow first locked, not a second one.
    shutil.rmtree(world.tables.escrows_uri)
    assert world.materialize_escrow(first.bounty_id).success
    assert world.tables.escrow(first.bounty_id).escrow_id == escrow.escrow_id
    assert world.sandbox.stats()["escrows_created"] - stats["escrows_created"] == 3


def test_escrow_past_expiry_is_synced_as_refunded(own_world: EscrowWorld):
    world = own_world
    ada, bo = world.agents("ada", "bo")
    bounty = world.bounty("short", [ada, bo], expiry_seconds=1)
    escrow = world.lock(bounty)
    time.sleep(max(0.0, (escrow.expires_at.timestamp() - time.time()) + 0.05))
    world.log_run(bounty.experiment, ada, [(0, 0.99, T0)])

    first = world.tick()
    [sync] = first.run_requests
    assert sync.job_name == "escrows_job"
    assert sync.run_key.startswith(f"{bounty.bounty_id}:sync:")
    result = world.execute(sync)
    assert result.success

    refunded = world.tables.escrow(bounty.bounty_id)
    assert (refunded.status, refunded.refunded_usdc, refunded.remaining_usdc) == (
        "refunded",
        Decimal(10),
        Decimal(0),
    )
    assert refunded.refund_tx_id.startswith("tx_")
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["check_escrow_not_refunded"] is False
    assert world.sandbox.audit()["escrow_holding_usdc"] == 0
    # Refunded: nothing more is asked, neither a release nor another sync.
    assert world.tick(first.cursor).run_requests == []
    assert world.tick().run_requests == []


def test_a_late_release_is_refused_recorded_and_not_retried(own_world: EscrowWorld):
    world = own_world
    ada, bo = world.agents("ada", "bo")
    bounty = world.bounty("late", [ada, bo], expiry_seconds=3600)
    world.lock(bounty)
    # The API's clock passes the expiry; ours does not, so the sensor still asks.
    world.sandbox.call("POST", "/admin/clock", {"advance_seconds": 7200})
    world.log_run(bounty.experiment, ada, [(0, 0.99, T0)])

    first = world.tick()
    [request] = first.run_requests
    result = world.execute(request)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.message
    assert "refused (escrow_expired)" in message
    assert "expired at" in message

    [row] = world.tables.releases(bounty.bounty_id)
    assert (row.status, row.error_code, row.tx_id) == ("refused", "escrow_expired", None)
    assert world.tables.escrow(bounty.bounty_id).status == "refunded"
    assert world.sandbox.balances()[ada] == 0
    assert world.tick(first.cursor).run_requests == []
    assert world.tick(None).run_requests == []
