"""`pf-platform demo` as a user runs it: a subprocess that starts its own sandbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg

from pf_platform.partitions import FIRST_PAYOUT_DAY
from pf_platform.resources.lake import LakeResource
from pf_platform.sandbox.server import free_port

PAYOUT_POOL = "purple_flea_payouts"


def _demo_command(home: Path, port: int, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    for name in ("PF_API_KEY", "DAGSTER_HOME", "PF_LAKE_ROOT", "PF_LANDING_ROOT", "PF_PROFILE"):
        env.pop(name, None)
    env.update(PF_HOME=str(home), PF_API_BASE_URL=f"http://127.0.0.1:{port}")
    return [str(Path(sys.executable).with_name("pf-platform")), "demo", *args], env


def _demo(home: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    command, env = _demo_command(home, port, *args)
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _figure(output: str, name: str) -> str:
    match = re.search(rf"^{name}\s+(\S+)", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_demo_pays_once_then_sends_nothing(tmp_path):
    port = free_port()
    first = _demo(tmp_path, port, "--dataset", "dog-breeds", "--days", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _figure(first.stdout, "days") == "3"
    assert _figure(first.stdout, "labels in") == "8070"
    assert int(_figure(first.stdout, "transfers sent")) > 0
    assert "default_limit: 1" in (tmp_path / "dagster" / "dagster.yaml").read_text()
    assert (tmp_path / "lake" / "agents" / "transactions" / "_delta_log").is_dir()

    second = _demo(tmp_path, port, "--dataset", "dog-breeds", "--days", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _figure(second.stdout, "transfers sent") == "0"
    assert _figure(second.stdout, "USDC paid") == "0"
    assert "0 transfers sent" in second.stdout


def test_demo_names_a_missing_dataset(tmp_path):
    result = _demo(tmp_path, free_port(), "--dataset", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "answers.csv and truth.csv" in result.stderr


def test_a_demo_killed_mid_payout_leaves_no_payout_waiting_forever(tmp_path, sandbox):
    # The sandbox sits where the demo looks for its key (PF_HOME/sandbox); slow requests keep
    # the payout step, and the pool's one slot, busy long enough to be killed in it.
    sandbox.call("POST", "/admin/faults", {"latency_ms": 400})
    port = urlsplit(sandbox.base_url).port
    command, env = _demo_command(tmp_path, port, "--dataset", "dog-breeds", "--days", "1")
    demo = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    holders = _wait_for_slot_holders(tmp_path / "dagster", demo)
    demo.kill()
    demo.wait(timeout=30)
    # The dead run still holds the slot: every later payout step would wait for it.
    assert _slot_holders(tmp_path / "dagster") == holders

    again = _demo(tmp_path, port, "--dataset", "dog-breeds", "--days", "1")

    assert again.returncode == 0, again.stderr[-3000:]
    (dead_run,) = holders
    assert f"run {dead_run} was left unfinished by a process that is gone" in again.stdout
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE
    assert _slot_holders(tmp_path / "dagster") == set()
    # Paid exactly once in all: the day's ledger, the API and what the day owes agree.
    lake = LakeResource(root=str(tmp_path / "lake"))
    rows = lake.ledger().read(FIRST_PAYOUT_DAY)
    owed = lake.read_partition("agents", "payout_summary", FIRST_PAYOUT_DAY)
    assert rows and {row.status for row in rows} == {"succeeded"}
    assert sum(row.amount_usdc for row in rows) == sum(owed.column("amount_owed_usdc").to_pylist())
    assert sandbox.stats()["transfers_committed"] == len(rows)
    for row in rows:
        found = sandbox.call("GET", f"/wallet/transactions?idempotency_key={row.idempotency_key}")
        assert [tx["tx_id"] for tx in found["transactions"]] == [row.tx_id]


def _slot_holders(dagster_home: Path) -> set[str]:
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        info = instance.event_log_storage.get_concurrency_info(PAYOUT_POOL)
        return {slot.run_id for slot in info.claimed_slots}


def _wait_for_slot_holders(dagster_home: Path, demo: subprocess.Popen) -> set[str]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and demo.poll() is None:
        if (dagster_home / "dagster.yaml").exists() and (dagster_home / "storage").exists():
            holders = _slot_holders(dagster_home)
            if holders:
                return holders
        time.sleep(0.05)
    raise AssertionError(f"the demo never held the {PAYOUT_POOL} slot (exit {demo.poll()})")
