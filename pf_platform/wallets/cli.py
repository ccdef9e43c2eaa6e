"""``pf-platform wallets``: read agents.wallets as of a version or a time, and its changes.

Both commands read the lake the settings point at (``PF_LAKE_ROOT``, else ``$PF_HOME/lake``).
Neither imports Dagster, and pyarrow and deltalake are imported only when a command runs, so
adding this group costs the other ``pf-platform`` commands nothing at start-up.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING

import click

from pf_platform import settings

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = click.Choice(["table", "csv"])


class _AsOf(click.ParamType):
    name = "VERSION|TIMESTAMP"

    def convert(self, value, param, ctx):
        if isinstance(value, int | datetime):
            return value
        from pf_platform.wallets.table import parse_as_of

        try:
            return parse_as_of(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group()
def wallets() -> None:
    """Read agent wallet snapshots (agents.wallets): time travel and the change feed."""


@wallets.command("as-of")
@click.argument("as_of", type=_AsOf())
@click.option("--agent", "agents", multiple=True, help="Only this agent; repeat for more.")
@click.option("--format", "output", type=FORMATS, default="table", show_default=True)
def as_of_command(as_of: int | datetime, agents: tuple[str, ...], output: str) -> None:
    """Print every wallet as of a table VERSION or an ISO 8601 TIMESTAMP (UTC unless given).

    A timestamp selects the last version committed at or before it, as Delta resolves it (on
    the commit file's time, which can trail the printed commit time by milliseconds).
    """
    from pf_platform.wallets.table import WalletTableError, read_as_of, wallets_uri

    uri = wallets_uri(settings.lake_root())
    try:
        snapshot = read_as_of(uri, as_of, agents=agents)
    except WalletTableError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"agents.wallets version {snapshot.version}, committed "
        f"{_text(snapshot.committed_at)}: {snapshot.rows.num_rows} wallets",
        err=True,
    )
    _print(snapshot.rows, output)


@wallets.command("changes")
@click.option(
    "--since", required=True, type=click.IntRange(0), help="First table version to include."
)
@click.option("--until", type=click.IntRange(0), help="Last version to include [latest].")
@click.option("--agent", "agents", multiple=True, help="Only this agent; repeat for more.")
@click.option("--format", "output", type=FORMATS, default="table", show_default=True)
def changes_command(since: int, until: int | None, agents: tuple[str, ...], output: str) -> None:
    """Print the change feed from version SINCE: each insert, and each update before and after."""
    from pf_platform.wallets.table import WalletTableError, read_changes, wallets_uri

    uri = wallets_uri(settings.lake_root())
    try:
        rows = read_changes(uri, since, until, agents=agents)
    except WalletTableError as exc:
        raise click.ClickException(str(exc)) from exc
    leading = ["_commit_version", "_commit_timestamp", "_change_type"]
    rows = rows.select(leading + [name for name in rows.column_names if name not in leading])
    click.echo(f"{rows.num_rows} changes from version {since}", err=True)
    _print(rows, output)


def _print(rows: pa.Table, output: str) -> None:
    header = rows.column_names
    lines = [[_text(value) for value in row.values()] for row in rows.to_pylist()]
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
        return
    _print_table(header, lines)


def _print_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> None:
    widths = [len(name) for name in header]
    for line in lines:
        widths = [max(width, len(cell)) for width, cell in zip(widths, line, strict=True)]
    for line in [header, *lines]:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _text(value: object) -> str:
    """One cell: amounts in plain decimal notation, exactly; times in UTC ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        # As many digits as the value has, so nothing is rounded; and no exponent, so 1E-18
        # reads 0.000000000000000001 and a zero of any scale reads 0.
        with localcontext(prec=max(len(value.as_tuple().digits), 1)):
            return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)
