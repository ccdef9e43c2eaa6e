"""Running the sandbox: in this process (``serve``) or as a child process (``SandboxProcess``).

The demo, the tests and the benchmarks use ``SandboxProcess``: the server then runs exactly as
``pf-platform sandbox serve`` does, and the client talks to it over real HTTP.

Example::

    with SandboxProcess(tmp_path / "ledger.db", latency_ms=5) as sandbox:
        headers = {"Authorization": f"Bearer {sandbox.treasury_key}"}
        httpx.get(f"{sandbox.base_url}/wallet/balances", headers=headers)
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pf_platform.payouts.money import to_micros
from pf_platform.settings import DEFAULT_SANDBOX_PORT

logger = logging.getLogger("pf_platform.sandbox")

KEY_FILE_NAME = "treasury.key"
DEFAULT_TREASURY_USDC = Decimal(1_000_000)

# How each fault knob is spelled on the ``serve`` command line (``storm_429`` is spread over
# three flags, see ``_knob_args``).
KNOB_FLAGS = {
    "latency_ms": "--latency-ms",
    "error_before_commit_rate": "--error-before-commit",
    "error_after_commit_rate": "--error-after-commit",
    "timeout_after_commit_rate": "--timeout-after-commit",
    "drop_after_commit_rate": "--drop-after-commit",
    "hang_seconds": "--hang-seconds",
    "rate_limit_rpm": "--rate-limit-rpm",
    "burst": "--burst",
    "seed": "--seed",
}


class SandboxStartError(RuntimeError):
    """The sandbox process died or did not answer ``/health`` in time."""


def key_file_for(db_path: Path | str) -> Path:
    """Where the treasury key of the ledger at ``db_path`` is kept."""
    return Path(db_path).parent / KEY_FILE_NAME


def serve(
    db_path: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_SANDBOX_PORT,
    treasury_usdc: Decimal = DEFAULT_TREASURY_USDC,
    knobs: Mapping[str, Any] | None = None,
) -> None:
    """Serves the sandbox API until interrupted.

    On first start with an empty ledger, creates the treasury, writes its key next to the
    database (``treasury.key``, mode 0600) and prints the key once to stdout.

    Args:
        db_path: the SQLite ledger; created when missing.
        host: interface to bind; loopback by default.
        port: TCP port.
        treasury_usdc: the treasury's funding on first start.
        knobs: fault knobs, see ``pf_platform.sandbox.faults``.

    Raises:
        InvalidKnobError: a knob is unknown or out of range.
    """
    # Imported here so that building the CLI does not pay for the server's imports.
    import uvicorn

    from pf_platform.sandbox.app import create_app
    from pf_platform.sandbox.faults import FaultInjector
    from pf_platform.sandbox.ledger import Ledger, plain_decimal

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    faults = FaultInjector()
    faults.update(knobs or {})

    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(db_path)
    key_file = key_file_for(db_path)
    issued = ledger.bootstrap(to_micros(treasury_usdc), key_file)
    # The only place a key is ever shown; it is not logged, here or anywhere else.
    if issued is not None and issued.created_treasury:
        amount = plain_decimal(treasury_usdc)
        print(
            f"created treasury with {amount} USDC in {db_path}; key: {issued.key} "
            f"(saved to {key_file})",
            flush=True,
        )
    elif issued is not None:
        print(
            f"{key_file} was missing, so the treasury got a new key: {issued.key}",
            flush=True,
        )

    config = uvicorn.Config(
        create_app(ledger, faults),
        host=host,
        port=port,
        access_log=False,
        # None keeps uvicorn from installing its own handlers; its records reach ours.
        log_config=None,
        log_level="info",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        ledger.close()


def is_running(base_url: str, *, timeout: float = 1.0) -> bool:
    """Whether a sandbox (or the live API) answers ``GET /health`` at ``base_url``."""
    # Imported here: the server process imports this module too and has no use for httpx.
    import httpx

    try:
        with httpx.Client(trust_env=False, timeout=timeout) as client:
            response = client.get(f"{base_url.rstrip('/')}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SandboxProcess:
    """The sandbox server as a child process, for the demo, tests and benchmarks.

    Args:
        db_path: the SQLite ledger; its folder also receives ``treasury.key``.
        port: TCP port; a free one when None.
        host: interface to bind.
        treasury_usdc: the treasury's funding on first start; the server's default when None.
        startup_timeout: seconds to wait for ``/health``.
        log_dir: where the child's stdout and stderr go; the database folder when None.
        **knobs: fault knobs passed as ``serve`` flags, e.g. ``latency_ms=5``,
            ``rate_limit_rpm=600``, ``storm_429={"count": 3, "retry_after": 1}``.
    """

    def __init__(
        self,
        db_path: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        treasury_usdc: Decimal | int | None = None,
        startup_timeout: float = 30.0,
        log_dir: Path | str | None = None,
        **knobs: Any,
    ) -> None:
        unknown = sorted(set(knobs) - set(KNOB_FLAGS) - {"storm_429"})
        if unknown:
            raise TypeError(f"unknown sandbox knobs: {', '.join(unknown)}")
        self.db_path = Path(db_path)
        self.host = host
        self.treasury_usdc = treasury_usdc
        self.startup_timeout = startup_timeout
        self.log_dir = Path(log_dir) if log_dir is not None else self.db_path.parent
        self.knobs = knobs
        self._requested_port = port
        self.port: int | None = port
        self._process: subprocess.Popen[bytes] | None = None
        self._treasury_key: str | None = None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server."""
        if self.port is None:
            raise RuntimeError("the sandbox has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def treasury_key(self) -> str:
        """The treasury's API key, read from the key file at start."""
        if self._treasury_key is None:
            raise RuntimeError("the sandbox has not been started")
        return self._treasury_key

    @property
    def stdout_path(self) -> Path:
        """The file that receives the child's stdout."""
        return self.log_dir / f"sandbox-{self.port}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        """The file that receives the child's stderr (its log)."""
        return self.log_dir / f"sandbox-{self.port}.stderr.log"

    def stdout_text(self) -> str:
        """What the child has written to stdout so far."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        """What the child has written to stderr so far."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def command(self) -> list[str]:
        """The command line that starts the server."""
        args = [
            sys.executable,
            "-m",
            "pf_platform.sandbox.cli",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
        ]
        if self.treasury_usdc is not None:
            args += ["--treasury-usdc", str(self.treasury_usdc)]
        return args + _knob_args(self.knobs)

    def start(self) -> Self:
        """Starts the server and waits until it answers.

        Raises:
            SandboxStartError: the process exited or did not answer within ``startup_timeout``;
                the message ends with the tail of its stderr.
        """
        if self._process is not None:
            raise RuntimeError("the sandbox is already running")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

        # A free port can be taken by someone else before the child binds it; try a few.
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port(self.host)
            self._spawn()
            try:
                self._wait_until_healthy()
                break
            except SandboxStartError:
                in_use = "address already in use" in self.stderr_text().lower()
                self.stop()
                if not in_use or attempt == attempts:
                    raise

        self._treasury_key = key_file_for(self.db_path).read_text().strip()
        logger.info("sandbox started base_url=%s db=%s", self.base_url, self.db_path)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the server: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with _private_file(self.stdout_path) as out, _private_file(self.stderr_path) as err:
            # The child keeps its own copies of the descriptors; ours can close right away.
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise SandboxStartError(
                    f"sandbox exited with code {code} during start:\n{self._stderr_tail()}"
                )
            if is_running(self.base_url, timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise SandboxStartError(
                    f"sandbox did not answer {self.base_url}/health within "
                    f"{self.startup_timeout} s:\n{self._stderr_tail()}"
                )
            time.sleep(0.05)

    def _stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


def _knob_args(knobs: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in knobs.items():
        if value is None:
            continue
        if name == "storm_429":
            args += ["--storm-429-count", str(value.get("count", 0))]
            args += ["--storm-retry-after", str(value.get("retry_after", 1))]
            args += ["--storm-form", str(value.get("form", "seconds"))]
        else:
            args += [KNOB_FLAGS[name], str(value)]
    return args


def _private_file(path: Path) -> Any:
    """Opens ``path`` for appending, readable by the owner only.

    The first start of a ledger prints the treasury key to stdout, so the log is kept as
    private as the key file itself, and appended to: a restart must not wipe that line.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "wb")
