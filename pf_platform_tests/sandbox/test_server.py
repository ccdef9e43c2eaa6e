"""Starting and stopping the sandbox process: the treasury key, the serve flags, failing fast.

Contract: the treasury key is printed once, on the first start of a ledger, and appears in no
output after that line; the key file is private; a restart reuses ledger and key; a start that
cannot succeed fails fast and says why.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pf_platform.sandbox.server import (
    SandboxProcess,
    SandboxStartError,
    free_port,
    is_running,
    key_file_for,
)
from pf_platform_tests.sandbox.conftest import SandboxApi, assert_ledger_sound, decode, transfer


def test_key_is_printed_once_and_never_again(db_path: Path) -> None:
    with SandboxProcess(db_path, treasury_usdc=250) as first:
        key = first.treasury_key
        api = SandboxApi(first.base_url, key)
        agent_key = api.register("agent-1")["agent-1"]
        api.transfer(transfer("agent-1", 1, "k1"))
        assert api.treasury() == 249
        api.close()
        first_out, first_err = first.stdout_text(), first.stderr_text()

    [line] = [line for line in first_out.splitlines() if key in line]
    assert line.startswith("created treasury with 250 USDC")
    assert first_out.count(key) == 1
    assert key not in first_err
    assert agent_key not in first_out + first_err
    assert key.startswith("pf_test_") and len(key) == 40
    key_file = key_file_for(db_path)
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    with SandboxProcess(db_path, treasury_usdc=999) as second:
        assert second.treasury_key == key
        api = SandboxApi(second.base_url, key)
        assert api.treasury() == 249  # the same ledger, not funded again
        assert api.transactions("k1")[0]["amount_usdc"] == 1
        assert_ledger_sound(api.audit())
        api.close()
        output = second.stdout_text() + second.stderr_text()

    assert key not in output
    assert agent_key not in output
    assert "created treasury" not in output
    assert "status=200" in output  # the request log is there, just without keys


def test_a_restart_on_the_same_port_keeps_the_line_that_showed_the_key(db_path: Path) -> None:
    with SandboxProcess(db_path) as first:
        key, port = first.treasury_key, first.port
    with SandboxProcess(db_path, port=port) as again:
        assert again.treasury_key == key
        log = again.stdout_path

    # Appended to, not truncated: the key's one line from the creation is still there, once.
    assert log.read_text().count(key) == 1
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_lost_key_file_gets_a_new_key(db_path: Path) -> None:
    with SandboxProcess(db_path) as first:
        old_key = first.treasury_key
    key_file_for(db_path).unlink()

    with SandboxProcess(db_path) as second:
        new_key = second.treasury_key
        old = SandboxApi(second.base_url, old_key).get("/admin/audit")
        new = SandboxApi(second.base_url, new_key).ok("GET", "/admin/audit")

    assert new_key != old_key
    assert old.status_code == 401
    assert new["treasury_usdc"] == 1_000_000
    assert second.stdout_text().count(new_key) == 1


def test_serve_flags_set_the_fault_knobs(db_path: Path) -> None:
    storm = {"count": 1, "retry_after": 7, "form": "seconds"}
    with SandboxProcess(
        db_path, rate_limit_rpm=6, burst=1, latency_ms=1, seed=5, storm_429=storm
    ) as process:
        api = SandboxApi(process.base_url, process.treasury_key)
        knobs = api.ok("GET", "/admin/faults")
        answers = [api.get("/wallet/transactions?idempotency_key=x") for _ in range(3)]
        api.close()

    assert (knobs["rate_limit_rpm"], knobs["burst"], knobs["latency_ms"], knobs["seed"]) == (
        6,
        1,
        1,
        5,
    )
    assert knobs["storm_429"] == storm
    assert [r.status_code for r in answers] == [429, 200, 429]
    assert [r.headers.get("retry-after") for r in answers] == ["7", None, "10"]
    assert decode(answers[2])["error"]["code"] == "rate_limited"


def test_start_fails_fast_with_the_server_error(db_path: Path) -> None:
    process = SandboxProcess(db_path, latency_ms=-1, startup_timeout=20)

    with pytest.raises(SandboxStartError, match="latency_ms"):
        process.start()

    with pytest.raises(TypeError, match="bogus"):
        SandboxProcess(db_path, bogus=1)


def test_is_running(sandbox_process: SandboxProcess) -> None:
    assert is_running(sandbox_process.base_url)
    assert not is_running(f"http://127.0.0.1:{free_port()}", timeout=0.5)
