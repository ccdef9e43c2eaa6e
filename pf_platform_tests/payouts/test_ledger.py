"""The ledger on a real Delta table: intents are written once, outcomes update them."""

from __future__ import annotations

import gc
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pf_platform.payouts.ledger import FAILED, PENDING, SUCCEEDED, Ledger, LedgerRow


def _intent(agent: str, day: str = "2026-11-01") -> LedgerRow:
    return LedgerRow(
        idempotency_key=f"labeling:{day}:{agent}:0",
        payout_kind="labeling",
        partition_date=day,
        agent_id=agent,
        sequence=0,
        amount_usdc=Decimal("123456789.000001"),
        memo="m",
    )


def test_intents_are_inserted_once_and_outcomes_update_them(tmp_path):
    ledger = Ledger(str(tmp_path / "transactions"))
    a, b = _intent("a"), _intent("b")
    ledger.write_intents([a, b])
    ledger.write_intents([a.settle(SUCCEEDED, tx_id="tx_wrong")])  # already there: ignored

    ledger.record([a.settle(SUCCEEDED, tx_id="tx_1", sent=True, run_id="run")])
    rows = {row.agent_id: row for row in ledger.read("2026-11-01")}

    assert rows["a"].status == SUCCEEDED and rows["a"].tx_id == "tx_1" and rows["a"].attempts == 1
    assert rows["b"].status == PENDING and rows["b"].tx_id is None
    assert rows["a"].amount_usdc == Decimal("123456789.000001")
    field = DeltaTable(ledger.uri).to_pyarrow_table().schema.field("amount_usdc")
    assert field.type == pa.decimal128(38, 6)


def test_partitions_are_read_apart(tmp_path):
    ledger = Ledger(str(tmp_path / "transactions"))
    ledger.write_intents([_intent("a", "2026-11-01")])
    ledger.write_intents([_intent("a", "2026-11-02"), _intent("b", "2026-11-02")])
    assert len(ledger.read("2026-11-01")) == 1
    assert len(ledger.read("2026-11-02")) == 2
    assert ledger.read("2026-11-03") == []
    assert Ledger(str(tmp_path / "absent")).read("2026-11-01") == []


def test_rows_built_for_speed_equal_rows_built_by_the_dataclass(tmp_path):
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    built = LedgerRow(**{**_intent("a").__dict__, "created_at": now, "updated_at": now})
    pending = LedgerRow.pending(
        idempotency_key=built.idempotency_key,
        payout_kind="labeling",
        partition_date="2026-11-01",
        agent_id="a",
        sequence=0,
        amount_usdc=Decimal("123456789.000001"),
        memo="m",
        now=now,
    )
    later = now + timedelta(seconds=5)
    settled = pending.settle(SUCCEEDED, tx_id="tx_1", sent=True, run_id="run", now=later)

    assert pending == built
    assert settled == replace(
        built, status=SUCCEEDED, tx_id="tx_1", attempts=1, run_id="run", updated_at=later
    )
    # Not sent and no run: the attempts and the run of the row stay as they were.
    assert settled.settle(FAILED, error="e", now=later) == replace(
        settled, status=FAILED, tx_id=None, error="e"
    )
    with pytest.raises(FrozenInstanceError):
        pending.status = SUCCEEDED  # type: ignore[misc]


def test_an_outcome_changes_only_the_outcome_columns(tmp_path):
    ledger = Ledger(str(tmp_path / "transactions"))
    a = _intent("a")
    ledger.write_intents([a])
    # An outcome row whose other fields disagree with the intent: only the outcome is taken.
    stray = replace(a, amount_usdc=Decimal(1), memo="other", agent_id="z")
    ledger.record([stray.settle(SUCCEEDED, tx_id="tx_1", sent=True, run_id="run")])

    (row,) = ledger.read("2026-11-01")
    assert (row.agent_id, row.amount_usdc, row.memo) == ("a", Decimal("123456789.000001"), "m")
    assert (row.status, row.tx_id, row.attempts, row.run_id) == (SUCCEEDED, "tx_1", 1, "run")
    assert row.created_at == a.created_at


def test_reading_leaves_the_cycle_collector_as_it_found_it(tmp_path):
    ledger = Ledger(str(tmp_path / "transactions"))
    a = _intent("a")
    ledger.write_intents([a])

    assert gc.isenabled()
    assert ledger.read("2026-11-01") == [a]
    assert gc.isenabled()
    gc.disable()
    try:
        assert ledger.read("2026-11-01") == [a]
        assert not gc.isenabled()
    finally:
        gc.enable()
