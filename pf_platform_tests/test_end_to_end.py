"""The real face-sentiment dataset, paid end to end over real HTTP, exactly once.

Expected amounts are recomputed here from answers.csv with plain Python (majority vote per item,
agreement per agent), independently of the SQL models the pipeline runs. Both fan-outs (in
process, and Spark tasks on a local session) must give the same ledger, balances and transfers.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal

import dagster as dg
import pytest

from pf_platform import settings
from pf_platform.labeling.landing import resolve_dataset, spread_over_days
from pf_platform_tests.helpers import ledger_paid_by_agent, materialization, run_day

THRESHOLD = Decimal("0.7")
RATE = Decimal("0.002")
START = date(2026, 11, 1)


def expected_owed(dataset, days: int = 7) -> dict[str, Decimal]:
    with dataset.answers.open(newline="") as handle:
        answers = list(csv.DictReader(handle))
    order: dict[str, int] = {}
    for row in answers:
        order.setdefault(row["item_id"], len(order))
    owed: dict[str, Decimal] = defaultdict(Decimal)
    for day in range(days):
        rows = [r for r in answers if order[r["item_id"]] * days // len(order) == day]
        votes: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            votes[r["item_id"]][r["label"]] += 1
        consensus = {}
        for item, counter in votes.items():
            (top, n), *rest = counter.most_common()
            if sum(counter.values()) >= 2 and not (rest and rest[0][1] == n):
                consensus[item] = top
        judged: dict[str, list[bool]] = defaultdict(list)
        for r in rows:
            if r["item_id"] in consensus:
                judged[r["agent_id"]].append(r["label"] == consensus[r["item_id"]])
        for agent, agreements in judged.items():
            agree = sum(agreements)
            if agree >= THRESHOLD * len(agreements) and agree:
                owed[agent] += agree * RATE
    return dict(owed)


@pytest.mark.parametrize("fan_out", ["in_process", "spark"])
def test_real_dataset_is_paid_exactly_once(project_home, sandbox, fan_out, request):
    if fan_out == "spark":
        request.getfixturevalue("spark")
    sent_from = {"purple_flea": {"fan_out": fan_out}}
    dataset = resolve_dataset("face-sentiment")
    days = [d.isoformat() for d in spread_over_days(dataset, settings.landing_root(), START)]
    with dataset.answers.open(newline="") as handle:
        sandbox.register({row["agent_id"] for row in csv.DictReader(handle)})
    treasury_before = Decimal(sandbox.audit()["treasury_usdc"])
    instance = dg.DagsterInstance.ephemeral()

    first = [run_day(day, instance=instance, **sent_from) for day in days]

    assert all(result.success for result in first)
    labels_in = sum(
        materialization(r, "label_submissions", "label_submissions")["rows"] for r in first
    )
    quarantined = sum(
        materialization(r, "validate_labels", "quarantined_labels")["rows"] for r in first
    )
    assert (labels_in, quarantined) == (5242, 0)
    want = expected_owed(dataset)
    paid = ledger_paid_by_agent(days)
    assert paid == want
    total = sum(want.values(), Decimal(0))
    assert total > Decimal(5)
    balances = sandbox.balances()
    assert {agent: amount for agent, amount in balances.items() if amount} == want
    assert treasury_before - Decimal(sandbox.audit()["treasury_usdc"]) == total
    sent = sum(
        materialization(r, "transfer_results", "transfer_results")["transfers_sent"] for r in first
    )
    transfers_on_server = sandbox.stats()["transfers_committed"]
    assert (
        sent
        == transfers_on_server
        == sum(1 for day in days for row in _ledger_rows(day) if row.status == "succeeded")
    )

    again = [run_day(day, instance=instance, **sent_from) for day in days]

    assert all(result.success for result in again)
    assert [
        materialization(r, "transfer_results", "transfer_results")["transfers_sent"] for r in again
    ] == [0] * 7
    assert sandbox.stats()["transfers_committed"] == transfers_on_server
    assert sandbox.balances() == balances
    assert sandbox.audit()["entries_sum_micros"] == 0


def _ledger_rows(day):
    from pf_platform.resources.lake import LakeResource

    return LakeResource().ledger().read(day)
