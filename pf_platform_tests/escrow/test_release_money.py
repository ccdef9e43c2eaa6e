"""escrow_releases over real HTTP: the fee split to the micro-USDC, lineage, no double payment.

The sandbox's rule (see ``pf_platform.sandbox.ledger``): the winner's share pays a 1% fee rounded
down to the micro-USDC, 15% of which (rounded down) goes to the referrer, the rest to the
platform. Every figure below is written out by hand, not recomputed with the code under test.
"""

from __future__ import annotations

from decimal import Decimal

from pf_platform_tests.escrow.conftest import EscrowWorld

T0 = 1_790_000_000_000


def release_once(world: EscrowWorld, amount: str, *, referrer: bool):
    ada, bo, ref = world.agents("ada", "bo", "ref")
    bounty = world.bounty(
        "fee",
        [ada, bo],
        amount_usdc=Decimal(amount),
        referrer_agent_id=ref if referrer else None,
    )
    escrow = world.lock(bounty)
    run_id = world.log_run(bounty.experiment, ada, [(0, 0.5, T0), (1, 0.97, T0 + 1)])
    [request] = world.tick().run_requests
    result = world.execute(request)
    assert result.success
    return bounty, escrow, run_id, request, result, (ada, bo, ref)


def test_ten_usdc_with_a_referrer_pays_all_three_legs_and_tags_the_run(world: EscrowWorld):
    platform_before = world.sandbox.audit()["platform_fees_usdc"]

    bounty, escrow, run_id, _, result, (ada, bo, ref) = release_once(world, "10", referrer=True)

    [row] = world.tables.releases(bounty.bounty_id)
    assert (row.agent_id, row.status, row.mlflow_run_id) == (ada, "released", run_id)
    assert (row.metric_value, row.metric_step) == (0.97, 1)
    assert (row.share_usdc, row.amount_usdc, row.fee_usdc) == (
        Decimal(10),
        Decimal("9.9"),
        Decimal("0.1"),
    )
    assert (row.referrer_fee_usdc, row.platform_fee_usdc) == (Decimal("0.015"), Decimal("0.085"))
    assert row.tx_id.startswith("tx_")

    balances = world.sandbox.balances()
    assert (balances[ada], balances[bo], balances[ref]) == (
        Decimal("9.9"),
        Decimal(0),
        Decimal("0.015"),
    )
    assert world.sandbox.audit()["platform_fees_usdc"] - platform_before == Decimal("0.085")

    tags = world.mlflow.get_run(run_id).data.tags
    assert tags["pf.escrow_id"] == escrow.escrow_id
    assert tags["pf.release_tx_id"] == row.tx_id
    assert tags["pf.bounty_id"] == bounty.bounty_id
    assert row.mlflow_tagged

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"check_release_fee_split": True, "check_release_lineage": True}
    state = world.tables.escrow(bounty.bounty_id)
    assert (state.status, state.released_count, state.remaining_usdc) == ("released", 1, 0)


def test_an_amount_that_rounds_splits_to_the_micro_usdc(world: EscrowWorld):
    bounty, *_, (ada, _, ref) = release_once(world, "1.234567", referrer=True)

    [row] = world.tables.releases(bounty.bounty_id)
    # fee = 1234567 // 100 = 12345 micro; referrer 12345 * 15 // 100 = 1851; platform 10494.
    assert (row.amount_usdc, row.fee_usdc) == (Decimal("1.222222"), Decimal("0.012345"))
    assert (row.referrer_fee_usdc, row.platform_fee_usdc) == (
        Decimal("0.001851"),
        Decimal("0.010494"),
    )
    balances = world.sandbox.balances()
    assert (balances[ada], balances[ref]) == (Decimal("1.222222"), Decimal("0.001851"))


def test_without_a_referrer_the_platform_keeps_the_whole_fee(world: EscrowWorld):
    bounty, *_, (ada, _, ref) = release_once(world, "0.999999", referrer=False)

    [row] = world.tables.releases(bounty.bounty_id)
    assert (row.amount_usdc, row.fee_usdc) == (Decimal("0.99"), Decimal("0.009999"))
    assert (row.referrer_fee_usdc, row.platform_fee_usdc) == (Decimal(0), Decimal("0.009999"))
    assert row.referrer_agent_id is None
    balances = world.sandbox.balances()
    assert (balances[ada], balances[ref]) == (Decimal("0.99"), Decimal(0))


def test_rerunning_releases_and_escrows_pays_nothing_twice(world: EscrowWorld):
    bounty, escrow, _, request, _, (ada, _, ref) = release_once(world, "10", referrer=True)
    [paid] = world.tables.releases(bounty.bounty_id)
    stats = world.sandbox.stats()

    again = world.execute(request)
    assert again.success
    metadata = again.asset_materializations_for_node("escrow_releases")[0].metadata
    assert metadata["replayed"].value is True
    assert metadata["tx_id"].value == paid.tx_id
    assert world.materialize_escrow(bounty.bounty_id).success

    after = world.sandbox.stats()
    assert (after["escrows_created"], after["escrow_releases"]) == (
        stats["escrows_created"],
        stats["escrow_releases"],
    )
    balances = world.sandbox.balances()
    assert (balances[ada], balances[ref]) == (Decimal("9.9"), Decimal("0.015"))
    [row] = world.tables.releases(bounty.bounty_id)
    assert (row.tx_id, row.amount_usdc, row.attempts) == (paid.tx_id, Decimal("9.9"), 2)
    assert world.tables.escrow(bounty.bounty_id).escrow_id == escrow.escrow_id
    assert world.tick().run_requests == []
