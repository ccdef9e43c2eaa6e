"""escrow_release_sensor against a real MLflow sqlite store, real Delta tables and the sandbox.

The contract: exactly one release run per (escrow, winner) across ticks, restarts and ticks that
fail halfway; a failed release is asked for again under a new run key, never dropped; metric
keys match exactly; NaN and infinities never count; ``any`` and ``final`` judge a run that
crosses and falls back differently; the earliest crossing wins a contested slot.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

from pf_platform_tests.escrow.conftest import EscrowWorld

T0 = 1_790_000_000_000  # a metric timestamp, in epoch milliseconds


def keys(result) -> list[str]:
    return [request.run_key for request in result.run_requests]


def test_one_release_per_winner_across_ticks_and_restarts(world: EscrowWorld) -> None:
    ada, bo = world.agents("ada", "bo")
    bounty = world.bounty("f1", [ada, bo])
    escrow = world.lock(bounty)

    first = world.tick()
    assert keys(first) == []
    assert first.skip_reason is not None

    run_id = world.log_run(bounty.experiment, ada, [(0, 0.5, T0), (1, 0.93, T0 + 10)])
    world.log_run(bounty.experiment, bo, [(0, 0.7, T0 + 5)])
    second = world.tick(first.cursor)

    assert keys(second) == [f"{bounty.bounty_id}:{ada}"]
    request = second.run_requests[0]
    assert request.job_name == "escrow_release_job"
    assert request.partition_key == bounty.bounty_id
    assert request.tags == {
        "pf/escrow_bounty": bounty.bounty_id,
        "pf/escrow_agent": ada,
        "pf/escrow_attempt": "1",
        "pf/mlflow_run_id": run_id,
    }
    assert request.run_config["ops"]["escrow_releases"]["config"] == {
        "agent_id": ada,
        "mlflow_run_id": run_id,
        "metric_value": 0.93,
        "metric_step": 1,
        "metric_timestamp_ms": T0 + 10,
    }
    assert json.loads(second.cursor)["requested"] == {bounty.bounty_id: {ada: 1}}

    # Requested but not launched yet: the next tick waits for it.
    assert keys(world.tick(second.cursor)) == []

    assert world.execute(request).success
    # A restart with the cursor lost still finds the run and the paid row.
    assert keys(world.tick(None)) == []
    assert keys(world.tick(second.cursor)) == []
    # The run crossing later again changes nothing: the slot is taken.
    world.log_run(bounty.experiment, bo, [(0, 0.99, T0 + 20)])
    assert keys(world.tick(None)) == []

    [paid] = world.tables.releases(bounty.bounty_id)
    assert (paid.agent_id, paid.status, paid.escrow_id) == (ada, "released", escrow.escrow_id)
    assert world.sandbox.balances()[ada] == Decimal("9.9")
    assert world.tables.escrow(bounty.bounty_id).status == "released"


def test_metric_keys_match_exactly(world: EscrowWorld) -> None:
    ada, bo, cy = world.agents("ada", "bo", "cy")
    slash = world.bounty("slash", [ada, bo, cy], experiment=f"{world.prefix}-keys")
    dash = world.bounty("dash", [ada, bo, cy], experiment=slash.experiment, metric="eval-f1")
    dot = world.bounty("dot", [ada, bo, cy], experiment=slash.experiment, metric="eval.f1")
    for bounty in (slash, dash, dot):
        world.lock(bounty)

    # Each agent is excellent on a look-alike key only, except one per bounty's own key.
    world.log_run(slash.experiment, ada, [(0, 0.95, T0)], metric="eval/f1")
    world.log_run(slash.experiment, bo, [(0, 0.95, T0)], metric="eval-f1")
    world.log_run(slash.experiment, cy, [(0, 0.95, T0)], metric="eval.f1")
    world.log_run(slash.experiment, ada, [(0, 0.2, T0)], metric="eval_f1")

    assert sorted(keys(world.tick())) == sorted(
        [f"{slash.bounty_id}:{ada}", f"{dash.bounty_id}:{bo}", f"{dot.bounty_id}:{cy}"]
    )


def test_nan_and_infinities_never_count(world: EscrowWorld) -> None:
    ada, bo, cy = world.agents("ada", "bo", "cy")
    f1 = world.bounty("f1", [ada, bo, cy])
    loss = world.bounty(
        "loss",
        [ada, bo, cy],
        experiment=f1.experiment,
        metric="eval/loss",
        threshold=Decimal("0.1"),
        direction="below",
    )
    world.lock(f1)
    world.lock(loss)

    world.log_run(f1.experiment, ada, [(0, float("nan"), T0), (1, float("inf"), T0 + 1)])
    world.log_run(f1.experiment, bo, [(0, float("nan"), T0)], metric="eval/loss")
    world.log_run(f1.experiment, cy, [(0, float("-inf"), T0)], metric="eval/loss")
    # No agent logged a real crossing: nothing is requested.
    assert keys(world.tick()) == []

    world.log_run(f1.experiment, bo, [(0, 0.91, T0 + 2)])
    world.log_run(f1.experiment, cy, [(0, 0.05, T0 + 3)], metric="eval/loss")
    assert sorted(keys(world.tick())) == sorted([f"{f1.bounty_id}:{bo}", f"{loss.bounty_id}:{cy}"])


def test_any_counts_a_crossing_that_falls_back_and_final_does_not(world: EscrowWorld) -> None:
    ada, bo = world.agents("ada", "bo")
    experiment = f"{world.prefix}-fallback"
    any_rule = world.bounty("any", [ada, bo], experiment=experiment)
    final_rule = world.bounty("final", [ada, bo], experiment=experiment, rule="final")
    world.lock(any_rule)
    world.lock(final_rule)

    world.log_run(experiment, ada, [(0, 0.5, T0), (1, 0.95, T0 + 1), (2, 0.80, T0 + 2)])
    late = world.log_run(
        experiment, bo, [(0, 0.80, T0), (1, 0.85, T0 + 1), (2, 0.96, T0 + 2)], finished=False
    )

    first = world.tick()
    [request] = first.run_requests
    assert request.run_key == f"{any_rule.bounty_id}:{ada}"
    config = request.run_config["ops"]["escrow_releases"]["config"]
    assert (config["metric_value"], config["metric_step"]) == (0.95, 1)

    # Under `final`, a run still training has no final value yet.
    assert keys(world.tick(first.cursor)) == []
    world.mlflow.set_terminated(late, "FINISHED")
    second = world.tick(first.cursor)
    assert keys(second) == [f"{final_rule.bounty_id}:{bo}"]
    config = second.run_requests[0].run_config["ops"]["escrow_releases"]["config"]
    assert (config["metric_value"], config["metric_step"]) == (0.96, 2)


def test_the_earliest_crossing_wins_a_contested_slot(world: EscrowWorld) -> None:
    ada, bo, cy, dee = world.agents("ada", "bo", "cy", "dee")
    one_slot = world.bounty("one", [ada, bo, cy])
    two_slots = world.bounty("two", [ada, bo, cy, dee], winners=2)
    world.lock(one_slot)
    world.lock(two_slots)

    # Seen in the same tick. One slot: ada and bo crossed at the same time, ada at an earlier
    # step. Two slots: ada crossed first; bo and cy tie on time and step, so the smaller run id.
    world.log_run(one_slot.experiment, ada, [(3, 0.95, T0 + 5)])
    world.log_run(one_slot.experiment, bo, [(4, 0.99, T0 + 5)])
    tied = {
        agent: world.log_run(two_slots.experiment, agent, [(1, 0.95, T0)]) for agent in (bo, cy)
    }
    # An agent's several runs: its earliest crossing is the one that competes.
    world.log_run(two_slots.experiment, ada, [(0, 0.93, T0 + 3)])
    world.log_run(two_slots.experiment, ada, [(0, 0.5, T0 - 9), (1, 0.92, T0 - 1)])
    world.log_run(two_slots.experiment, dee, [(0, 0.5, T0 - 20)])
    first_tied = min(tied, key=tied.get)

    expected = [
        f"{one_slot.bounty_id}:{ada}",
        f"{two_slots.bounty_id}:{ada}",
        f"{two_slots.bounty_id}:{first_tied}",
    ]
    first = world.tick()
    assert sorted(keys(first)) == sorted(expected)
    # The same store read again (a re-evaluated tick) picks the same winners.
    assert sorted(keys(world.tick())) == sorted(expected)

    for request in first.run_requests:
        if request.partition_key == two_slots.bounty_id:
            assert world.execute(request).success
    balances = world.sandbox.balances()
    assert (balances[ada], balances[first_tied]) == (Decimal("4.95"), Decimal("4.95"))
    assert world.tables.escrow(two_slots.bounty_id).status == "released"


def test_a_tick_that_launched_part_of_its_runs_then_died(world: EscrowWorld) -> None:
    ada, bo = world.agents("ada", "bo")
    one = world.bounty("one", [ada, bo])
    two = world.bounty("two", [ada, bo])
    world.lock(one)
    world.lock(two)
    stored_cursor = world.tick().cursor  # the last tick whose cursor was stored
    world.log_run(one.experiment, ada, [(0, 0.95, T0)])
    world.log_run(two.experiment, bo, [(0, 0.95, T0)])

    crashed = world.tick(stored_cursor)
    assert sorted(keys(crashed)) == sorted([f"{one.bounty_id}:{ada}", f"{two.bounty_id}:{bo}"])
    # Only the first run was launched before the process died; this tick's cursor was lost.
    launched = next(r for r in crashed.run_requests if r.partition_key == one.bounty_id)
    assert world.execute(launched).success

    after = world.tick(stored_cursor)
    assert keys(after) == [f"{two.bounty_id}:{bo}"]
    assert keys(world.tick(after.cursor)) == []


def test_a_tick_that_fails_on_one_escrow_requests_the_rest_then_only_what_is_missing(
    world: EscrowWorld,
) -> None:
    ada, bo = world.agents("ada", "bo")
    good = world.bounty("good", [ada, bo])
    bad = world.bounty("bad", [ada, bo])
    world.lock(good)
    locked = world.lock(bad)
    world.log_run(good.experiment, ada, [(0, 0.95, T0)])
    world.log_run(bad.experiment, bo, [(0, 0.95, T0)])
    # Another writer leaves the second escrow's terms unreadable.
    world.tables.write_escrow(replace(locked, threshold="ninety percent"))

    first = world.tick()
    assert keys(first) == [f"{good.bounty_id}:{ada}"]
    assert bad.bounty_id not in json.loads(first.cursor)["requested"]

    world.tables.write_escrow(locked)
    second = world.tick(first.cursor)
    assert keys(second) == [f"{bad.bounty_id}:{bo}"]
    assert keys(world.tick(second.cursor)) == []


def test_a_failed_release_is_requested_again_and_pays_once(world: EscrowWorld) -> None:
    ada, bo = world.agents("ada", "bo")
    bounty = world.bounty("retry", [ada, bo])
    world.lock(bounty)
    world.log_run(bounty.experiment, ada, [(0, 0.95, T0)])
    first = world.tick()
    [request] = first.run_requests

    # The API commits the release, then every answer is lost.
    world.sandbox.call("POST", "/admin/faults", {"error_after_commit_rate": 1})
    try:
        assert not world.execute(request).success
    finally:
        world.sandbox.call("POST", "/admin/faults", {"error_after_commit_rate": 0})
    [row] = world.tables.releases(bounty.bounty_id)
    assert (row.status, row.error_code) == ("failed", "injected_error")
    assert world.sandbox.balances()[ada] == Decimal("9.9")

    second = world.tick(first.cursor)
    assert keys(second) == [f"{bounty.bounty_id}:{ada}:attempt-2"]
    assert second.run_requests[0].tags["pf/escrow_attempt"] == "2"
    # Lost cursor: the failed run on the instance still asks for the same second attempt.
    assert keys(world.tick(None)) == [f"{bounty.bounty_id}:{ada}:attempt-2"]

    result = world.execute(second.run_requests[0])
    assert result.success
    materialization = result.asset_materializations_for_node("escrow_releases")[0]
    assert materialization.metadata["replayed"].value is True
    [row] = world.tables.releases(bounty.bounty_id)
    assert (row.status, row.attempts, row.mlflow_tagged) == ("released", 2, True)
    assert world.sandbox.balances()[ada] == Decimal("9.9")
    assert keys(world.tick(second.cursor)) == []
