"""The ledger on a real Delta table: intents are written once, outcomes update them."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
from deltalake import DeltaTable

from pf_platform.payouts.ledger import PENDING, SUCCEEDED, Ledger, LedgerRow


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
