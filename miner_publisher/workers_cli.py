"""`miner-publisher workers` (the registry) and `miner-publisher worker info|pause|resume`
(one worker, through the control exchange), from any manager host."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from broker_topology.cli_support import (
    EXIT_USAGE,
    emit_json,
    fail,
    load_settings,
    pool_options,
    slots_table,
    user_errors,
)
from broker_topology.control import (
    STALE_BEATS,
    ControlOp,
    ControlReply,
    ControlRequest,
    redis_now,
)
from broker_topology.messages import WORKER_NAME_RE, Phase
from broker_topology.naming import Names
from broker_topology.redis_conn import connect_redis
from broker_topology.units import format_duration

from .workers import call, registry, summary


@click.command()
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per worker")
@pool_options
@user_errors
def workers(as_json: bool, **opts: str | None) -> None:
    """Every worker in the registry: slots, idle, busy, paused, errors, last ping."""
    settings = load_settings(**opts)
    client = connect_redis(settings.redis_url, retries=2)
    client.ping()
    now = redis_now(client)  # the clock the entries are stamped with
    rows = [summary(s, now) for s in registry(client, Names(settings.namespace))]
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} worker(s); last ping with ! when older than "
                        f"{STALE_BEATS} heartbeats")
    for col in ("name", "address", "group", "phases", "slots", "idle", "busy", "blocked",
                "paused", "errors", "last ping"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        ping = format_duration(r["age"]) + (" !" if r["stale"] else "")
        table.add_row(r["name"], r["address"], r["storage_group"] or "-",
                      ",".join(r["phases"]), *(str(r[k]) for k in (
                          "slots", "idle", "busy", "blocked", "paused", "errors")), ping,
                      style="red" if r["stale"] else "")
    Console(width=200).print(table)


def _name(_ctx: Any, _param: Any, value: str) -> str:
    if not WORKER_NAME_RE.match(value):
        raise click.BadParameter(f"{value!r} is not a worker name")
    return value


def _phases(_ctx: Any, _param: Any, value: str | None) -> tuple[Phase, ...] | None:
    if value is None:
        return None
    try:
        return tuple(sorted(Phase(v.strip()) for v in value.split(",") if v.strip()))
    except ValueError:
        raise click.BadParameter(f"{value!r}: phases are "
                                 f"{', '.join(p.value for p in Phase)}") from None


name_arg = click.argument("name", callback=_name)
timeout_option = click.option("--timeout", type=float, default=5.0, show_default=True,
                              help="seconds to wait for the worker's answer")


def _ask(name: str, request: ControlRequest, timeout: float, opts: dict[str, Any]
         ) -> ControlReply:
    settings = load_settings(**opts)
    reply = call(settings.amqp_url, Names(settings.namespace), name, request, timeout)
    if not reply.ok:
        fail(reply.error or "refused", EXIT_USAGE)
    return reply


def _done(reply: ControlReply, as_json: bool) -> None:
    if as_json:
        emit_json(reply.model_dump(mode="json"))
    else:
        click.echo(reply.message)


@click.group()
def worker() -> None:
    """Operate one worker (as `pool-worker list|pause|resume` does on its machine)."""


@worker.command()
@name_arg
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per slot")
@timeout_option
@pool_options
@user_errors
def info(name: str, as_json: bool, timeout: float, **opts: Any) -> None:
    """Every slot of worker NAME: phases, temp dir, job, paused, state, last error."""
    reply = _ask(name, ControlRequest(op=ControlOp.INFO), timeout, opts)
    if as_json:
        emit_json([s.model_dump(mode="json") for s in reply.slots])
    else:
        Console(width=200).print(slots_table(reply.worker, reply.slots))


@worker.command()
@name_arg
@click.argument("index", type=int)
@click.option("--now", is_flag=True, help="hand the running job back instead of finishing it")
@click.option("--json", "as_json", is_flag=True)
@timeout_option
@pool_options
@user_errors
def pause(name: str, index: int, now: bool, as_json: bool, timeout: float,
          **opts: Any) -> None:
    """Stop slot INDEX of worker NAME claiming (after its current job, or --now)."""
    reply = _ask(name, ControlRequest(op=ControlOp.PAUSE, index=index, now=now), timeout, opts)
    _done(reply, as_json)


@worker.command()
@name_arg
@click.argument("index", type=int)
@click.option("--phase", "phases", default=None, callback=_phases, metavar="P[,P]",
              help="claim only these of the slot's phases (default: all of them)")
@click.option("--json", "as_json", is_flag=True)
@timeout_option
@pool_options
@user_errors
def resume(name: str, index: int, phases: tuple[Phase, ...] | None, as_json: bool,
           timeout: float, **opts: Any) -> None:
    """Let slot INDEX of worker NAME claim again."""
    request = ControlRequest(op=ControlOp.RESUME, index=index, phases=phases)
    reply = _ask(name, request, timeout, opts)
    _done(reply, as_json)
