"""A real `dagster dev` (webserver and daemon) on loopback, over the sandbox and landed data."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest

from pf_platform.labeling.landing import resolve_dataset, spread_over_days
from pf_platform.sandbox.server import SandboxProcess, free_port
from pf_platform_tests.conftest import Sandbox

REPO = Path(__file__).resolve().parents[2]
DAYS = 7


@dataclass
class DagsterUI:
    url: str
    home: Path
    env: dict[str, str]
    sandbox: Sandbox


def _wait_until_loaded(url: str, process: subprocess.Popen, log: Path, timeout: float = 120):
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name "
    query += "locationOrLoadError { __typename } } } } }"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited:\n{log.read_text()[-3000:]}")
        try:
            data = httpx.post(f"{url}/graphql", json={"query": query}, timeout=5).json()
            entries = data["data"]["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                return
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"dagster dev did not load in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="package")
def dagster_ui(tmp_path_factory):
    """`dagster dev` with a project home of its own, the face-sentiment days landed."""
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    with SandboxProcess(root / "sandbox" / "ledger.db") as process:
        sandbox = Sandbox(process)
        dataset = resolve_dataset("face-sentiment")
        spread_over_days(dataset, home / "landing", date(2026, 11, 1), DAYS)
        with dataset.answers.open(newline="") as handle:
            sandbox.register({row["agent_id"] for row in csv.DictReader(handle)})
        (home / "dagster").mkdir(parents=True)
        (home / "dagster" / "dagster.yaml").write_text(
            "concurrency:\n  pools:\n    default_limit: 1\n"
        )
        port = free_port()
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PF_", "DAGSTER_"))
        }
        env.update(
            PF_HOME=str(home),
            DAGSTER_HOME=str(home / "dagster"),
            PF_API_BASE_URL=sandbox.base_url,
            PF_API_KEY=sandbox.key,
        )
        log = root / "dagster-dev.log"
        command = [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        with log.open("wb") as output:
            dev = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_loaded(url, dev, log)
            yield DagsterUI(url=url, home=home, env=env, sandbox=sandbox)
        finally:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                dev.kill()
