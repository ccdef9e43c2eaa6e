"""The ``pf-platform`` command."""

from __future__ import annotations

from datetime import date

import click

from pf_platform.escrow.cli import escrow
from pf_platform.partitions import FIRST_PAYOUT_DAY
from pf_platform.sandbox.cli import sandbox
from pf_platform.wallets.cli import wallets


@click.group()
def main() -> None:
    """Pay agents through the Purple Flea API from a Dagster asset graph."""


main.add_command(sandbox)
main.add_command(wallets)
main.add_command(escrow)


@main.command()
@click.option(
    "--dataset",
    default="face-sentiment",
    show_default=True,
    help="A bundled dataset (face-sentiment, dog-breeds, product-matching) or a folder "
    "holding answers.csv and truth.csv.",
)
@click.option(
    "--start-date",
    default=FIRST_PAYOUT_DAY,
    show_default=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The first landing day.",
)
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366))
def demo(dataset: str, start_date, days: int) -> None:
    """Land a dataset over days, start the sandbox if needed and pay every day through Dagster."""
    from pf_platform.demo import format_summary, run_demo

    try:
        summary = run_demo(
            dataset, date.fromisoformat(start_date.date().isoformat()), days, click.echo
        )
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_summary(summary))
    if not summary.succeeded:
        raise SystemExit(1)


@main.command()
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI.")
def dev(port: int) -> None:
    """Start the sandbox (unless one runs) and the Dagster UI on the project-local instance.

    The bundled face-sentiment dataset is landed first, so any of its seven days can be
    materialized from the UI.
    """
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from pf_platform import settings
    from pf_platform.demo import ensure_dagster_home, is_loopback, payments_api, register_agents
    from pf_platform.labeling.landing import resolve_dataset, spread_over_days

    ensure_dagster_home()
    dataset = resolve_dataset("face-sentiment")
    start = date.fromisoformat(FIRST_PAYOUT_DAY)
    days = spread_over_days(dataset, settings.landing_root(), start)
    click.echo(f"landed {dataset.name} for {days[0]} .. {days[-1]} in {settings.landing_root()}")
    with payments_api() as (base_url, api_key):
        if is_loopback(base_url):
            register_agents(base_url, api_key, dataset)
        env = dict(os.environ, PF_API_KEY=api_key, PF_API_BASE_URL=base_url)
        workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
        dagster = Path(sys.executable).with_name("dagster")
        click.echo(f"payments API at {base_url}; Dagster UI at http://127.0.0.1:{port}")
        command = [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
        # A shell's `cmd &` starts us with SIGINT ignored, which exec passes on. A handled
        # signal is reset to its default at exec, so handling it here restores it for dagster.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        process = subprocess.Popen(command, env=env, cwd=workspace.parent)
        # SIGTERM is passed on as the Ctrl-C that `dagster dev` shuts down cleanly on; then the
        # sandbox this command started is stopped on the way out.
        signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGINT))
        try:
            process.wait()
        except KeyboardInterrupt:
            process.wait()


@main.command()
@click.option("--from", "first", type=click.DateTime(formats=["%Y-%m-%d"]), help="First day.")
@click.option("--to", "last", type=click.DateTime(formats=["%Y-%m-%d"]), help="Last day.")
@click.option("--missed", is_flag=True, help="Backfill every complete day never paid.")
@click.option(
    "--webserver",
    default="http://127.0.0.1:3000",
    show_default=True,
    envvar="PF_DAGSTER_WEBSERVER",
    help="The running Dagster webserver (make dev starts one).",
)
@click.option("--wait/--no-wait", default=False, help="Wait until the backfill finishes.")
@click.option("--timeout", default=1800, show_default=True, help="Seconds to wait at most.")
def backfill(first, last, missed: bool, webserver: str, wait: bool, timeout: int) -> None:
    """Launch a backfill of payout_job's days on the running Dagster instance."""
    from pf_platform import backfill as backfills

    if missed:
        import dagster as dg

        from pf_platform.demo import ensure_dagster_home

        ensure_dagster_home()
        with dg.DagsterInstance.get() as instance:
            days = backfills.missed_days(instance)
    elif first and last:
        days = backfills.days_between(first.date(), last.date())
    else:
        raise click.UsageError("give --from and --to, or --missed")
    if not days:
        click.echo("no missed days: nothing to backfill")
        return
    try:
        backfill_id = backfills.launch_backfill(webserver, days)
        click.echo(f"backfill {backfill_id}: {len(days)} days, {days[0]} .. {days[-1]}")
        if wait:
            status = backfills.wait_for(webserver, backfill_id, timeout)
            click.echo(f"backfill {backfill_id}: {status}")
            if status not in ("COMPLETED", "COMPLETED_SUCCESS"):
                raise SystemExit(1)
    except backfills.BackfillError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("missed-days")
def missed_days() -> None:
    """List the complete days whose payout was never materialized on this instance."""
    import dagster as dg

    from pf_platform.backfill import missed_days as find_missed
    from pf_platform.demo import ensure_dagster_home

    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        days = find_missed(instance)
    for day in days:
        click.echo(day)
    click.echo(f"{len(days)} missed days", err=True)
