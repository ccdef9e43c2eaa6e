"""Two processes writing one new Delta table at the same moment leave one copy of the rows.

Without the table created empty first, delta-rs commits both first writes and the partition
holds both writers' rows: two runs of a new day planned every transfer twice.
"""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from pf_platform.payouts.ledger import LedgerRow
from pf_platform.resources.lake import LakeResource
from pf_platform_tests.helpers import run_twice_at_once

DAY = "2026-11-05"
TRIALS = 6


def _overwrite(root: str, barrier, results) -> None:
    rows = pa.table({"agent_id": ["a", "b", "c"], "amount": [1, 2, 3]})
    barrier.wait()
    LakeResource(root=root).overwrite_partition("agents", "payout_summary", DAY, rows)
    results.put("ok")


def _write_intents(root: str, barrier, results) -> None:
    rows = [
        LedgerRow(
            idempotency_key=f"labeling:{DAY}:{agent}:0",
            payout_kind="labeling",
            partition_date=DAY,
            agent_id=agent,
            sequence=0,
            amount_usdc=Decimal("0.008"),
            memo="m",
        )
        for agent in ("a", "b", "c")
    ]
    barrier.wait()
    LakeResource(root=root).ledger().write_intents(rows)
    results.put("ok")


def _race(target, root: str) -> None:
    assert run_twice_at_once(target, root, timeout=120) == ["ok", "ok"]


@pytest.mark.parametrize("trial", range(TRIALS))
def test_two_first_writes_of_a_partition_leave_one_copy(tmp_path, trial):
    root = str(tmp_path / "lake")

    _race(_overwrite, root)

    table = LakeResource(root=root).read_partition("agents", "payout_summary", DAY)
    assert sorted(table.column("agent_id").to_pylist()) == ["a", "b", "c"]


@pytest.mark.parametrize("trial", range(TRIALS))
def test_two_first_writes_of_intents_leave_one_row_per_key(tmp_path, trial):
    root = str(tmp_path / "lake")

    _race(_write_intents, root)

    rows = LakeResource(root=root).ledger().read(DAY)
    assert sorted(row.agent_id for row in rows) == ["a", "b", "c"]
    assert {row.amount_usdc for row in rows} == {Decimal("0.008")}
