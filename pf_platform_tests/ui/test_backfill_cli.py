"""`pf-platform backfill` and `missed-days` against a running `dagster dev`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pf_platform.payouts.ledger import Ledger

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]


def _cli(ui, *args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("pf-platform")), *args]
    return subprocess.run(
        command, env=ui.env, capture_output=True, text=True, timeout=900, check=False
    )


def _paid(ui) -> dict:
    ledger = Ledger(str(ui.home / "lake" / "agents" / "transactions"))
    paid = {}
    for day in DAYS:
        for row in ledger.read(day):
            assert row.status == "succeeded", row
            paid[row.agent_id] = paid.get(row.agent_id, 0) + row.amount_usdc
    return paid


@pytest.mark.timeout(1500)
def test_backfill_three_missed_days_then_again_pays_nothing(dagster_ui):
    before = _cli(dagster_ui, "missed-days")
    assert before.returncode == 0, before.stderr
    assert set(DAYS) <= set(before.stdout.split())

    first = _cli(dagster_ui, "backfill", "--from", DAYS[0], "--to", DAYS[-1], "--wait",
                 "--webserver", dagster_ui.url)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 days, 2026-11-02 .. 2026-11-04" in first.stdout
    assert "COMPLETED" in first.stdout
    paid = _paid(dagster_ui)
    committed = dagster_ui.sandbox.stats()["transfers_committed"]
    balances = dagster_ui.sandbox.balances()
    assert len(paid) > 10
    for agent, amount in paid.items():
        assert balances[agent] >= amount

    after = _cli(dagster_ui, "missed-days")
    assert not set(DAYS) & set(after.stdout.split())

    again = _cli(dagster_ui, "backfill", "--from", DAYS[0], "--to", DAYS[-1], "--wait",
                 "--webserver", dagster_ui.url)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert dagster_ui.sandbox.stats()["transfers_committed"] == committed
    assert dagster_ui.sandbox.balances() == balances
    assert _paid(dagster_ui) == paid


def test_backfill_without_days_is_a_usage_error(dagster_ui):
    result = _cli(dagster_ui, "backfill", "--webserver", dagster_ui.url)
    assert result.returncode == 2
    assert "give --from and --to, or --missed" in result.stderr
