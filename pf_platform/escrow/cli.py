"""``escrow`` command group: declare bounties, list them with their state, run the escrow demo."""

from __future__ import annotations

import click

from pf_platform.escrow.bounties import (
    ABOVE,
    ANY,
    DEFAULT_AGENT_TAG,
    DIRECTIONS,
    RULES,
    Bounty,
    BountyError,
    bounties_path,
    declare_bounty,
    load_bounties,
)
from pf_platform.resources.payments.models import wire_amount


@click.group(name="escrow")
def escrow() -> None:
    """Bonuses locked in escrow and released when an MLflow run crosses its target."""


@escrow.command()
@click.argument("bounty_id")
@click.option("--experiment", required=True, help="MLflow experiment whose runs compete.")
@click.option("--metric", required=True, help="Exact metric key, e.g. eval/f1.")
@click.option("--threshold", required=True, help="The target, an exact decimal.")
@click.option(
    "--direction",
    type=click.Choice(DIRECTIONS),
    default=ABOVE,
    show_default=True,
    help="above: value >= threshold wins; below: value <= threshold wins.",
)
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default=ANY,
    show_default=True,
    help="any: the first crossing counts; final: the last step of a finished run.",
)
@click.option(
    "--agent",
    "agents",
    multiple=True,
    required=True,
    help="An eligible agent; repeat, or separate with commas.",
)
@click.option(
    "--agent-tag",
    default=DEFAULT_AGENT_TAG,
    show_default=True,
    help="The MLflow run tag that names the agent.",
)
@click.option("--amount", required=True, help="USDC locked, up to six decimals.")
@click.option("--winners", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--expiry", default="24h", show_default=True, help="Seconds, or 90m, 36h, 7d.")
@click.option("--referrer", default=None, help="Agent earning 15% of the 1% fee.")
@click.option("--memo", default="", help="Text stored with the escrow.")
def create(
    bounty_id: str,
    experiment: str,
    metric: str,
    threshold: str,
    direction: str,
    rule: str,
    agents: tuple[str, ...],
    agent_tag: str,
    amount: str,
    winners: int,
    expiry: str,
    referrer: str | None,
    memo: str,
) -> None:
    """Declare bounty BOUNTY_ID in the bounties file.

    escrow_bounty_sensor then adds its partition of escrows and locks the escrow; or
    materialize that partition yourself.
    """
    eligible = [a.strip() for value in agents for a in value.split(",") if a.strip()]
    record = {
        "bounty_id": bounty_id,
        "experiment": experiment,
        "metric": metric,
        "threshold": threshold,
        "direction": direction,
        "rule": rule,
        "agent_tag": agent_tag,
        "eligible_agents": eligible,
        "amount_usdc": amount,
        "winners": winners,
        "expiry": expiry,
        "referrer_agent_id": referrer,
        "memo": memo,
    }
    try:
        bounty = Bounty.from_record(record)
        path = bounties_path()
        added = declare_bounty(bounty, path)
    except BountyError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "declared" if added else "already declared"
    click.echo(
        f"{verb} {bounty.bounty_id} in {path}: {bounty.describe()}, {bounty.amount_usdc} USDC"
    )


@escrow.command(name="list")
def list_bounties() -> None:
    """List declared bounties with the state recorded in escrow.escrows."""
    from pf_platform.assets.escrow.escrows import escrow_tables
    from pf_platform.resources.lake import LakeResource

    try:
        declared = load_bounties()
    except BountyError as exc:
        raise click.ClickException(str(exc)) from exc
    tables = escrow_tables(LakeResource())
    recorded = tables.escrows()
    paid = {(r.bounty_id, r.agent_id): r for r in tables.releases()}
    for bounty_id in sorted(set(declared) | set(recorded)):
        bounty = declared.get(bounty_id) or recorded[bounty_id].bounty()
        row = recorded.get(bounty_id)
        state = f"{row.escrow_id} {row.status}" if row else "not locked yet"
        amount = wire_amount(bounty.amount_usdc)
        click.echo(f"{bounty_id}: {bounty.describe()}, {amount} USDC; {state}")
        for (paid_bounty, agent), release in sorted(paid.items()):
            if paid_bounty == bounty_id:
                click.echo(
                    f"  {agent}: {release.status} {release.amount_usdc or ''} "
                    f"{release.tx_id or release.error_code or ''}".rstrip()
                )
    if not declared and not recorded:
        click.echo(f"no bounties declared in {bounties_path()}")


@escrow.command()
def demo() -> None:
    """Lock a bonus, train three agents on scikit-learn's digits, release it to the winner."""
    import dagster as dg

    from pf_platform.demo import ensure_dagster_home, payments_api
    from pf_platform.escrow.demo import format_escrow_summary, run_escrow_demo

    ensure_dagster_home()
    with payments_api() as (base_url, api_key), dg.DagsterInstance.get() as instance:
        summary = run_escrow_demo(base_url, api_key, instance, click.echo)
    click.echo(format_escrow_summary(summary))
    if not summary.succeeded:
        raise SystemExit(1)
