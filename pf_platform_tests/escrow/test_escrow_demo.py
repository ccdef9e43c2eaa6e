"""The escrow demo end to end: a real training loop, exactly one winner, paid exactly once.

Also checks that the escrow definitions load with their assets, checks, jobs and sensors.
"""

from __future__ import annotations

from decimal import Decimal

from pf_platform.escrow.demo import DEMO_REFERRER, format_escrow_summary, run_escrow_demo
from pf_platform_tests.escrow.conftest import EscrowWorld


def test_escrow_definitions_load(world: EscrowWorld) -> None:
    graph = world.defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "escrows",
        "escrow_releases",
    }
    assert {key.name for key in graph.asset_check_keys} == {
        "check_escrow_matches_bounty",
        "check_escrow_not_refunded",
        "check_release_fee_split",
        "check_release_lineage",
    }
    for name in ("escrows_job", "escrow_release_job"):
        assert world.defs.resolve_job_def(name).partitions_def.name == "escrows"
    release_sensor = world.defs.resolve_sensor_def("escrow_release_sensor")
    assert sorted(target.job_name for target in release_sensor.targets) == [
        "escrow_release_job",
        "escrows_job",
    ]
    assert world.defs.resolve_sensor_def("escrow_bounty_sensor").job_name == "escrows_job"


def test_demo_trains_three_agents_and_pays_the_one_that_crosses(world: EscrowWorld) -> None:
    lines: list[str] = []

    summary = run_escrow_demo(
        world.sandbox.base_url, world.sandbox.key, world.instance, lines.append
    )

    assert summary.succeeded, format_escrow_summary(summary)
    crossed = [r.agent_id for r in summary.trained if r.best_f1 >= 0.93]
    assert crossed == ["agent-cy"]
    assert all(len(r.f1_by_epoch) == 8 for r in summary.trained)
    [release] = summary.releases
    assert (release.agent_id, release.status) == ("agent-cy", "released")
    assert (release.amount_usdc, release.fee_usdc) == (Decimal("9.9"), Decimal("0.1"))
    assert (release.referrer_fee_usdc, release.platform_fee_usdc) == (
        Decimal("0.015"),
        Decimal("0.085"),
    )
    winner_run = next(r.run_id for r in summary.trained if r.agent_id == "agent-cy")
    assert release.mlflow_run_id == winner_run
    assert world.mlflow.get_run(winner_run).data.tags["pf.release_tx_id"] == release.tx_id
    assert summary.escrow.status == "released"
    assert summary.line() == (
        f"digits-f1: 9.900000 USDC to agent-cy (fee 0.100000), tx {release.tx_id}"
    )
    assert any(line.startswith("escrow esc_") for line in lines)

    balances = world.sandbox.balances()
    expected = {
        "agent-ada": Decimal(0),
        "agent-bo": Decimal(0),
        "agent-cy": Decimal("9.9"),
        DEMO_REFERRER: Decimal("0.015"),
    }
    assert {agent: balances[agent] for agent in expected} == expected

    # A second demo on the same home trains again and pays nothing more.
    again = run_escrow_demo(world.sandbox.base_url, world.sandbox.key, world.instance, print)
    assert again.succeeded
    assert [r.tx_id for r in again.releases] == [release.tx_id]
    assert {agent: world.sandbox.balances()[agent] for agent in expected} == expected
