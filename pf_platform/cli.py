"""The ``pf-platform`` command."""

from __future__ import annotations

from datetime import date

import click

from pf_platform.partitions import FIRST_PAYOUT_DAY
from pf_platform.sandbox.cli import sandbox


@click.group()
def main() -> None:
    """Pay agents through the Purple Flea API from a Dagster asset graph."""


main.add_command(sandbox)


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
        summary = run_demo(dataset, date.fromisoformat(start_date.date().isoformat()), days, click.echo)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_summary(summary))
    if not summary.succeeded:
        raise SystemExit(1)
