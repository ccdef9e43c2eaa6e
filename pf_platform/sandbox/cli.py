"""``sandbox`` command group: ``serve`` runs the sandbox payments server.

Run it as ``pf-platform sandbox serve`` or ``python -m pf_platform.sandbox.cli serve``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import click

from pf_platform import settings
from pf_platform.payouts.money import InvalidAmountError, to_usdc


def _usdc(ctx: click.Context, param: click.Parameter, value: str) -> Decimal:
    try:
        amount = to_usdc(value)
    except InvalidAmountError as exc:
        raise click.BadParameter(str(exc)) from None
    if amount < 0:
        raise click.BadParameter("must be >= 0")
    return amount


@click.group(name="sandbox")
def sandbox() -> None:
    """The sandbox Purple Flea payments server."""


@sandbox.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port", type=int, default=settings.DEFAULT_SANDBOX_PORT, show_default=True, help="TCP port."
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite ledger.  [default: $PF_HOME/sandbox/ledger.db]",
)
@click.option(
    "--treasury-usdc",
    default="1000000",
    show_default=True,
    callback=_usdc,
    help="Treasury funding on first start.",
)
@click.option("--latency-ms", type=int, default=0, show_default=True, help="Added per request.")
@click.option(
    "--error-before-commit", type=float, default=0.0, show_default=True, help="503 rate, no work."
)
@click.option(
    "--error-after-commit", type=float, default=0.0, show_default=True, help="503 rate, committed."
)
@click.option(
    "--timeout-after-commit",
    type=float,
    default=0.0,
    show_default=True,
    help="Rate of committed POSTs whose response is held --hang-seconds.",
)
@click.option(
    "--drop-after-commit",
    type=float,
    default=0.0,
    show_default=True,
    help="Rate of committed POSTs whose connection is cut mid-response.",
)
@click.option("--hang-seconds", type=float, default=30.0, show_default=True)
@click.option(
    "--storm-429-count", type=int, default=0, show_default=True, help="Next N requests get 429."
)
@click.option("--storm-retry-after", type=int, default=1, show_default=True)
@click.option(
    "--storm-form",
    type=click.Choice(["seconds", "http-date"]),
    default="seconds",
    show_default=True,
)
@click.option("--rate-limit-rpm", type=int, default=None, help="Token bucket rate; 0 = no limit.")
@click.option("--burst", type=int, default=None, help="Token bucket size.  [default: rpm/60]")
@click.option("--seed", type=int, default=None, help="Seed of the fault schedule.")
def serve(
    host: str,
    port: int,
    db_path: Path | None,
    treasury_usdc: Decimal,
    latency_ms: int,
    error_before_commit: float,
    error_after_commit: float,
    timeout_after_commit: float,
    drop_after_commit: float,
    hang_seconds: float,
    storm_429_count: int,
    storm_retry_after: int,
    storm_form: str,
    rate_limit_rpm: int | None,
    burst: int | None,
    seed: int | None,
) -> None:
    """Serve the payments API over a SQLite double-entry ledger."""
    # Imported here so that `pf-platform --help` does not load the web server.
    from pf_platform.sandbox.faults import InvalidKnobError
    from pf_platform.sandbox.server import serve as serve_sandbox

    knobs = {
        "latency_ms": latency_ms,
        "error_before_commit_rate": error_before_commit,
        "error_after_commit_rate": error_after_commit,
        "timeout_after_commit_rate": timeout_after_commit,
        "drop_after_commit_rate": drop_after_commit,
        "hang_seconds": hang_seconds,
        "storm_429": {
            "count": storm_429_count,
            "retry_after": storm_retry_after,
            "form": storm_form,
        },
        "rate_limit_rpm": rate_limit_rpm,
        "burst": burst,
        "seed": seed,
    }
    try:
        serve_sandbox(
            db_path or settings.sandbox_dir() / "ledger.db",
            host=host,
            port=port,
            treasury_usdc=treasury_usdc,
            knobs=knobs,
        )
    except InvalidKnobError as exc:
        raise click.UsageError(str(exc)) from None


if __name__ == "__main__":
    sandbox()
