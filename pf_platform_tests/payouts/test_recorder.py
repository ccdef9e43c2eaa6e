"""The outcome recorder: background commits to a real Delta ledger, and what a failure leaves."""

from __future__ import annotations

from decimal import Decimal

import pytest
from deltalake import DeltaTable

from pf_platform.payouts.execution import OutcomeRecorder
from pf_platform.payouts.ledger import PENDING, SUCCEEDED, Ledger, LedgerRow

DAY = "2026-11-01"


def _intents(count: int) -> list[LedgerRow]:
    return [
        LedgerRow.pending(
            idempotency_key=f"labeling:{DAY}:agent-{n}:0",
            payout_kind="labeling",
            partition_date=DAY,
            agent_id=f"agent-{n}",
            sequence=0,
            amount_usdc=Decimal("0.000001") * (n + 1),
            memo="m",
        )
        for n in range(count)
    ]


def _outcome_commits(ledger: Ledger) -> int:
    return sum(1 for entry in DeltaTable(ledger.uri).history() if entry["operation"] == "MERGE")


def _statuses(ledger: Ledger) -> dict[str, str]:
    return {row.agent_id: row.status for row in ledger.read(DAY)}


def test_every_row_is_recorded_and_progress_counts_what_is_committed(tmp_path):
    ledger = Ledger(str(tmp_path / "transactions"))
    intents = _intents(10)
    ledger.write_intents(intents)
    before = _outcome_commits(ledger)
    seen: list[int] = []

    with OutcomeRecorder(ledger, min_rows=3, min_seconds=0, on_recorded=seen.append) as recorder:
        for start in range(0, 10, 2):
            recorder.add(
                [
                    row.settle(SUCCEEDED, tx_id=f"tx_{row.agent_id}", sent=True)
                    for row in intents[start : start + 2]
                ]
            )

    assert _statuses(ledger) == {f"agent-{n}": SUCCEEDED for n in range(10)}
    assert recorder.recorded == 10
    assert seen == sorted(seen) and seen[-1] == 10
    # A commit starts at the 4th row and, if the first is done by then, at the 8th; the rest go
    # in on exit.
    assert 2 <= _outcome_commits(ledger) - before <= 3


def test_commits_wait_for_the_interval_and_the_rest_is_committed_on_exit(tmp_path):
    ledger = Ledger(str(tmp_path / "transactions"))
    intents = _intents(6)
    ledger.write_intents(intents)
    before = _outcome_commits(ledger)

    with OutcomeRecorder(ledger, min_rows=1, min_seconds=3600) as recorder:
        for row in intents:
            recorder.add([row.settle(SUCCEEDED, tx_id="tx", sent=True)])

    # The first add starts one commit; the hour never passes, so the other five go in on exit.
    assert _outcome_commits(ledger) - before == 2
    assert set(_statuses(ledger).values()) == {SUCCEEDED}


class _FailsOnce(Ledger):
    """A ledger whose first outcome commit fails, as a lost storage connection would."""

    failed = False

    def record(self, rows):
        if not self.failed:
            self.failed = True
            raise OSError("storage went away")
        super().record(rows)


def test_a_failed_commit_is_raised_and_leaves_its_rows_pending_for_the_next_run(tmp_path):
    ledger = _FailsOnce(str(tmp_path / "transactions"))
    intents = _intents(4)
    ledger.write_intents(intents)

    recorder = OutcomeRecorder(ledger, min_rows=2, min_seconds=3600)
    with pytest.raises(OSError, match="storage went away"), recorder:
        recorder.add([row.settle(SUCCEEDED, tx_id="tx", sent=True) for row in intents[:2]])
        recorder.add([row.settle(SUCCEEDED, tx_id="tx", sent=True) for row in intents[2:]])

    # The failed commit's rows stay pending (the next run asks the API about them); the rows
    # gathered after it were still committed before the error rose.
    assert _statuses(ledger) == {
        "agent-0": PENDING,
        "agent-1": PENDING,
        "agent-2": SUCCEEDED,
        "agent-3": SUCCEEDED,
    }
    assert recorder.recorded == 2
