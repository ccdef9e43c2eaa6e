"""The API key appears nowhere a person or a table could see it.

A day is paid with the real key, and another day is run with a wrong key so that the client's
authentication error travels through Dagster. Then every place is searched for both keys: the
process's captured output and log records, the Dagster event log and run config of both runs,
every Delta table (its rows and its transaction log), and every exception text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from pf_platform import settings
from pf_platform_tests.helpers import run_day
from pf_platform_tests.test_payout_guarantees import DAY, LABELS, OWED, land_day

WRONG_KEY = "pf_test_" + "0123456789abcdef" * 2


def _table_texts(root: Path) -> list[str]:
    texts = []
    for log_dir in root.rglob("_delta_log"):
        texts.extend(path.read_text(errors="replace") for path in log_dir.glob("*.json"))
        table = DeltaTable(str(log_dir.parent)).to_pyarrow_table()
        for column in table.columns:
            if pa.types.is_string(column.type):
                texts.extend(value for value in column.to_pylist() if value)
    return texts


def _run_texts(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    run = instance.get_run_by_id(run_id)
    texts = [repr(run.run_config), repr(run.tags)]
    for entry in instance.all_logs(run_id):
        texts.append(entry.user_message or "")
        event = entry.dagster_event
        if event is None:
            continue
        texts.append(repr(event.event_specific_data))
        failure = event.step_failure_data if event.is_step_failure else None
        if failure is not None and failure.error is not None:
            texts.append(failure.error.to_string())
    return texts


def test_api_key_never_leaks(project_home, sandbox, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    land_day()
    sandbox.register(list(OWED))
    other_day = "2026-11-06"
    other = settings.landing_root() / other_day
    other.mkdir(parents=True)
    header, *rows = (settings.landing_root() / DAY / "a_good.csv").read_text().splitlines()
    # Other record ids: a label validated on one day is never paid on another.
    (other / "x.csv").write_text("\n".join([header] + [f"x-{row}" for row in rows]) + "\n")

    with dg.DagsterInstance.ephemeral() as instance:
        paid = run_day(DAY, LABELS, instance)
        monkeypatch.setenv("PF_API_KEY", WRONG_KEY)
        refused = run_day(other_day, LABELS, instance)
        texts = _run_texts(instance, paid.run_id) + _run_texts(instance, refused.run_id)

    assert paid.success and sandbox.balances() == OWED
    assert not refused.success
    error = refused.failure_data_for_node("transfer_results").error.to_string()
    assert "AuthenticationError" in error
    texts += [error]
    texts += [record.getMessage() for record in caplog.records]
    texts += list(capfd.readouterr())
    texts += _table_texts(Path(settings.lake_root()))
    assert len(texts) > 100
    for key in (sandbox.key, WRONG_KEY):
        leaks = [text[:200] for text in texts if key in text]
        assert leaks == []
