"""``pf-platform wallets as-of`` and ``wallets changes``, run with click's CliRunner.

Contract: both read the lake the settings name (PF_HOME, or PF_LAKE_ROOT over it); as-of takes
a version or an ISO 8601 time and prints the wallets of that version, exactly; changes prints
the change feed with _change_type, _commit_version and _commit_timestamp; mistakes are told
plainly, with a non-zero exit.
"""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner

from pf_platform.wallets.cli import wallets as wallets_cli
from pf_platform.wallets.table import read_as_of


@pytest.fixture
def history(wallets, tmp_path, monkeypatch):
    """Version 1: agent -01 holds 5 USDC; version 2: it holds 5.000001 and 1 wei more ETH."""
    monkeypatch.setenv("PF_HOME", str(tmp_path))
    monkeypatch.delenv("PF_LAKE_ROOT", raising=False)
    agent, other = wallets.agent(1), wallets.agent(2)
    wallets.register(agent, other)
    wallets.pay(agent, "5")
    wallets.sync()
    wallets.pay(agent, "0.000001")
    wallets.set_crypto(agent, eth="0.000000000000000001")
    wallets.sync()
    return agent, other


def _invoke(*args: str):
    return CliRunner().invoke(wallets_cli, list(args), catch_exceptions=False)


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_as_of_a_version_prints_that_versions_wallets(wallets, history):
    agent, other = history

    old = _invoke("as-of", "1", "--agent", agent)
    new = _invoke("as-of", "2", "--agent", agent, "--agent", other, "--format", "csv")

    assert old.exit_code == 0, old.output
    assert "agents.wallets version 1" in old.stderr
    header, line = old.stdout.splitlines()
    assert header.split() == [
        "agent_id",
        "usdc",
        "btc",
        "eth",
        "last_tx_id",
        "created_at",
        "updated_at",
    ]
    assert line.split()[:4] == [agent, "5", "0", "0"]
    rows = _csv(new.stdout)
    assert [(row["agent_id"], row["usdc"], row["eth"]) for row in rows] == [
        (agent, "5.000001", "0.000000000000000001"),
        (other, "0", "0"),
    ]
    assert rows[1]["last_tx_id"] == ""


def test_as_of_a_time_picks_the_last_version_committed_by_then(wallets, history):
    agent, _ = history
    first, second = read_as_of(wallets.uri, 1).committed_at, read_as_of(wallets.uri, 2).committed_at
    # Midway: Delta resolves a time on the commit file's modification time, a few ms late.
    between = (first + (second - first) / 2).isoformat().replace("+00:00", "Z")

    result = _invoke("as-of", between, "--agent", agent, "--format", "csv")
    latest = _invoke("as-of", "2999-01-01T00:00:00", "--agent", agent, "--format", "csv")

    assert "version 1" in result.stderr
    assert _csv(result.stdout)[0]["usdc"] == "5"
    assert "version 2" in latest.stderr
    assert _csv(latest.stdout)[0]["usdc"] == "5.000001"


def test_changes_prints_the_feed_with_its_change_columns(wallets, history):
    agent, _ = history

    result = _invoke("changes", "--since", "2", "--format", "csv")
    everything = _invoke("changes", "--since", "0", "--agent", agent, "--format", "csv")
    table = _invoke("changes", "--since", "2")

    assert result.exit_code == 0, result.output
    rows = _csv(result.stdout)
    assert list(rows[0])[:3] == ["_commit_version", "_commit_timestamp", "_change_type"]
    assert [(row["_change_type"], row["agent_id"], row["usdc"], row["eth"]) for row in rows] == [
        ("update_preimage", agent, "5", "0"),
        ("update_postimage", agent, "5.000001", "0.000000000000000001"),
    ]
    assert {row["_commit_version"] for row in rows} == {"2"}
    committed = read_as_of(wallets.uri, 2).committed_at
    assert rows[0]["_commit_timestamp"] == committed.isoformat().replace("+00:00", "Z")
    assert [(row["_commit_version"], row["_change_type"]) for row in _csv(everything.stdout)] == [
        ("1", "insert"),
        ("2", "update_preimage"),
        ("2", "update_postimage"),
    ]
    assert table.stdout.splitlines()[0].split()[:3] == [
        "_commit_version",
        "_commit_timestamp",
        "_change_type",
    ]
    assert "update_postimage" in table.stdout.splitlines()[2]
    after_the_last = _invoke("changes", "--since", "3")
    assert after_the_last.exit_code == 0
    assert len(after_the_last.stdout.splitlines()) == 1  # the header, no rows
    assert "0 changes from version 3" in after_the_last.stderr


def test_the_lake_root_setting_wins_over_pf_home(wallets, history, tmp_path, monkeypatch):
    monkeypatch.setenv("PF_LAKE_ROOT", str(tmp_path / "elsewhere"))

    result = _invoke("as-of", "1")

    assert result.exit_code == 1
    assert "no wallets table" in result.output
    assert str(tmp_path / "elsewhere") in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["as-of", "9"], 1, "has no version 9; it has versions 0 to 2"),
        (["as-of", "2001-01-01T00:00:00Z"], 1, "did not exist yet at 2001-01-01T00:00:00+00:00"),
        (["as-of", "last tuesday"], 2, "neither a table version"),
        (["changes", "--since", "-1"], 2, "--since"),
    ],
)
def test_mistakes_are_told_plainly(history, args, code, message):
    result = _invoke(*args)

    assert result.exit_code == code
    assert message in result.output
