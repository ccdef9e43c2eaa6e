"""`pf-platform demo` as a user runs it: a subprocess that starts its own sandbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pf_platform.sandbox.server import free_port


def _demo(home: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name in ("PF_API_KEY", "DAGSTER_HOME", "PF_LAKE_ROOT", "PF_LANDING_ROOT", "PF_PROFILE"):
        env.pop(name, None)
    env.update(PF_HOME=str(home), PF_API_BASE_URL=f"http://127.0.0.1:{port}")
    command = [str(Path(sys.executable).with_name("pf-platform")), "demo", *args]
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
