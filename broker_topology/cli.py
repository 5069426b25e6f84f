"""`broker-topology`: declare, export and show the pool's RabbitMQ topology."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .cli_support import emit_json, load_settings, pool_options, user_errors
from .declare import declare, to_definitions
from .errors import ConfigError
from .link import connect_blocking
from .messages import MINER_ID_RE
from .topology import Topology, miner_topology, pool_topology


@click.group()
def main() -> None:
    """The wire contract of a sealpool: exchanges, queues and their arguments."""


@main.command("declare")
@pool_options
@user_errors
def declare_cmd(**opts: str | None) -> None:
    """Declare the shared topology (idempotent: safe to run again)."""
    settings = load_settings(**opts)
    topo = pool_topology(settings)
    conn = connect_blocking(settings.amqp_url, "broker-topology")
    try:
        declare(conn, topo)
    finally:
        conn.close()
    click.echo(f"declared {len(topo.exchanges)} exchanges, {len(topo.queues)} queues, "
               f"{len(topo.bindings)} bindings in namespace {settings.namespace!r}")


@main.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write here instead of stdout")
@click.option("--vhost", default="/", show_default=True)
@click.option("--miner", "miners", multiple=True, metavar="M",
              help="include this miner's lanes and results queue (repeatable)")
@pool_options
@user_errors
def export_cmd(out: Path | None, vhost: str, miners: tuple[str, ...],
               **opts: str | None) -> None:
    """Print RabbitMQ definitions.json for the shared topology (no broker needed)."""
    settings = load_settings(**opts)
    topo = pool_topology(settings)
    for miner in miners:
        if not MINER_ID_RE.match(miner):
            raise ConfigError(f"--miner: {miner!r} is not a miner id (e.g. t01000)")
        topo += miner_topology(settings, miner)
    text = json.dumps(to_definitions(topo, vhost), indent=2)
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n")
        click.echo(f"wrote {out}")


@main.command("show")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pool_options
@user_errors
def show_cmd(as_json: bool, **opts: str | None) -> None:
    """Show the queues, their arguments and what feeds them (no broker needed)."""
    topo = pool_topology(load_settings(**opts))
    if as_json:
        emit_json(to_definitions(topo))
        return
    _print(topo)


def _print(topo: Topology) -> None:
    console = Console()
    feeds: dict[str, list[str]] = {}
    for b in topo.bindings:
        key = b.routing_key or ",".join(f"{k}={v}" for k, v in b.arguments.items())
        feeds.setdefault(b.destination, []).append(f"{b.source} [{key}]")
    table = Table(title="queues")
    for col in ("queue", "fed by", "arguments"):
        table.add_column(col)
    for q in topo.queues:
        args = ", ".join(f"{k.removeprefix('x-')}={v}" for k, v in q.arguments.items()
                         if k != "x-queue-type")
        table.add_row(q.name, "\n".join(feeds.get(q.name, [])), args)
    console.print(table)
    ex = Table(title="exchanges")
    ex.add_column("exchange")
    ex.add_column("type")
    ex.add_column("arguments")
    for e in topo.exchanges:
        ex.add_row(e.name, e.type, json.dumps(e.arguments) if e.arguments else "")
    console.print(ex)
