"""Bounty declarations, the crossing rules and the fee rule, as plain functions.

The file is read exactly (no float ever holds an amount or a threshold); a metric history is
judged by ``any`` or ``final``; contested slots go to the earliest crossing.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from pf_platform.escrow.bounties import (
    Bounty,
    BountyError,
    bounties_path,
    declare_bounty,
    load_bounties,
)
from pf_platform.escrow.cli import escrow
from pf_platform.escrow.rules import Crossing, MetricPoint, choose_winners, crossing_point
from pf_platform.escrow.settlement import expected_split
from pf_platform.escrow.tracking import tracking_uri

YAML = """\
# bounties of the digits team
- bounty_id: digits-f1
  experiment: digits
  metric: eval/f1
  threshold: 0.93
  eligible_agents: [agent-a, agent-b]
  amount_usdc: 10.10
  winners: 2
  expiry: 36h
  referrer_agent_id: agent-r
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PF_HOME", str(tmp_path))
    for name in ("PF_BOUNTIES_FILE", "PF_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_yaml_bounties_read_exact_decimals_and_defaults(home: Path) -> None:
    (home / "bounties.yaml").write_text(YAML)

    [bounty] = load_bounties().values()

    assert bounty.threshold == Decimal("0.93") and isinstance(bounty.threshold, Decimal)
    assert bounty.amount_usdc == Decimal("10.10")
    assert bounty.share_usdc == Decimal("5.05")
    assert (bounty.direction, bounty.rule, bounty.agent_tag) == ("above", "any", "pf.agent_id")
    assert (bounty.expiry_seconds, bounty.winners) == (36 * 3600, 2)
    assert bounty.idempotency_key == "pf-escrow:digits-f1"


def test_json_bounties_and_the_default_tracking_store(home: Path) -> None:
    (home / "bounties.json").write_text(
        '{"bounties": [{"bounty_id": "loss", "experiment": "e", "metric": "eval.loss", '
        '"threshold": 0.05, "direction": "below", "rule": "final", "eligible_agents": ["a"], '
        '"amount_usdc": 0.000001, "expiry": 60}]}'
    )
    [bounty] = load_bounties().values()
    assert (bounty.threshold, bounty.amount_usdc) == (Decimal("0.05"), Decimal("0.000001"))
    assert bounties_path() == home / "bounties.json"
    assert tracking_uri() == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount_usdc": "0.0000001"}, "more than 6 decimal places"),
        ({"amount_usdc": "0.000003", "winners": 2}, "does not split into 2 equal shares"),
        ({"winners": 3}, "winners must be between 1 and 2"),
        ({"direction": "sideways"}, "direction must be above or below"),
        ({"rule": "best"}, "rule must be any or final"),
        ({"expiry": "soon"}, "expiry must be"),
        ({"bounty_id": "a:b"}, "bounty id"),
        ({"threshold": "NaN"}, "threshold must be a finite number"),
        ({"treshold": 1}, "unknown field(s) treshold"),
        ({"eligible_agents": ["a", "a"]}, "lists an agent twice"),
    ],
)
def test_invalid_bounties_are_refused_with_the_reason(change: dict, message: str) -> None:
    record = {
        "bounty_id": "b",
        "experiment": "e",
        "metric": "m",
        "threshold": "1",
        "eligible_agents": ["a", "b"],
        "amount_usdc": "10",
        "expiry": "1d",
        **change,
    }
    with pytest.raises(BountyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Bounty.from_record(record)


def test_cli_appends_keeps_comments_and_refuses_other_terms_under_a_known_id(home: Path):
    (home / "bounties.yaml").write_text(YAML)
    runner = CliRunner()
    args = [
        "create",
        "loss-drop",
        "--experiment=digits",
        "--metric=eval/loss",
        "--threshold=0.125",
        "--direction=below",
        "--rule=final",
        "--agent=agent-a,agent-b",
        "--agent=agent-c",
        "--amount=2.5",
        "--expiry=90m",
    ]

    created = runner.invoke(escrow, args)
    assert created.exit_code == 0, created.output
    assert "declared loss-drop" in created.output
    text = (home / "bounties.yaml").read_text()
    assert text.startswith("# bounties of the digits team\n")
    bounties = load_bounties()
    assert list(bounties) == ["digits-f1", "loss-drop"]
    loss = bounties["loss-drop"]
    assert loss.eligible_agents == ("agent-a", "agent-b", "agent-c")
    assert (loss.threshold, loss.amount_usdc, loss.expiry_seconds) == (
        Decimal("0.125"),
        Decimal("2.5"),
        5400,
    )

    assert "already declared" in runner.invoke(escrow, args).output
    assert (home / "bounties.yaml").read_text() == text
    changed = runner.invoke(escrow, [*args[:-2], "--amount=3", "--expiry=90m"])
    assert changed.exit_code != 0
    assert "already declared" in changed.output and "other terms" in changed.output

    listed = runner.invoke(escrow, ["list"])
    assert "loss-drop: eval/loss below 0.125 (final step), 2.5 USDC; not locked yet" in (
        listed.output
    )


def test_declare_into_an_empty_home_round_trips(home: Path) -> None:
    bounty = Bounty(
        bounty_id="x",
        experiment="e",
        metric="eval/f1",
        threshold=Decimal("0.9"),
        eligible_agents=("a",),
        amount_usdc=Decimal("1.5"),
        expiry_seconds=90,
    )
    assert declare_bounty(bounty) is True
    assert declare_bounty(bounty) is False
    assert load_bounties() == {"x": bounty}


# -- crossing rules ------------------------------------------------------------------------


def points(*values: float) -> list[MetricPoint]:
    return [MetricPoint(value=v, timestamp_ms=1000 + i, step=i) for i, v in enumerate(values)]


def test_any_takes_the_first_crossing_and_final_the_last_step() -> None:
    history = points(0.5, 0.95, 0.97, 0.80)
    threshold = Decimal("0.9")

    assert crossing_point(history, threshold, "above", "any") == history[1]
    assert crossing_point(history, threshold, "above", "final") is None
    assert crossing_point(points(0.8, 0.91), threshold, "above", "final").step == 1
    assert crossing_point(points(0.3, 0.1), Decimal("0.1"), "below", "any").step == 1


def test_exact_threshold_and_values_that_never_count() -> None:
    threshold = Decimal("0.93")
    assert crossing_point(points(0.93), threshold, "above", "any") is not None
    assert crossing_point(points(0.9299999999999999), threshold, "above", "any") is None
    # NaN, infinities and the sqlite store's stand-in for them never cross, in either direction.
    never = points(math.nan, math.inf, -math.inf, 1.7976931348623157e308, -1.7976931348623157e308)
    assert crossing_point(never, threshold, "above", "any") is None
    assert crossing_point(never, threshold, "below", "any") is None
    assert crossing_point(points(0.99, math.nan), threshold, "above", "final") is None


def test_winners_are_the_earliest_by_time_then_step_then_run_id() -> None:
    crossings = [
        Crossing("a", "run-9", 0.95, timestamp_ms=2000, step=1),
        Crossing("b", "run-5", 0.91, timestamp_ms=1000, step=7),
        Crossing("c", "run-4", 0.99, timestamp_ms=1000, step=7),
        Crossing("d", "run-1", 0.99, timestamp_ms=1000, step=8),
        Crossing("a", "run-2", 0.92, timestamp_ms=900, step=9),
    ]
    assert [c.agent_id for c in choose_winners(crossings, 3)] == ["a", "c", "b"]
    assert [c.run_id for c in choose_winners(crossings, 1)] == ["run-2"]
    assert [c.agent_id for c in choose_winners(crossings, 2, exclude={"a"})] == ["c", "b"]
    assert choose_winners(crossings, 0) == []


def test_the_fee_rule_restated_for_the_check() -> None:
    split = expected_split(Decimal(10), has_referrer=True)
    assert (split.net_usdc, split.fee_usdc, split.referrer_fee_usdc, split.platform_fee_usdc) == (
        Decimal("9.9"),
        Decimal("0.1"),
        Decimal("0.015"),
        Decimal("0.085"),
    )
    tiny = expected_split(Decimal("0.000099"), has_referrer=True)
    assert (tiny.net_usdc, tiny.fee_usdc, tiny.referrer_fee_usdc) == (
        Decimal("0.000099"),
        Decimal(0),
        Decimal(0),
    )
