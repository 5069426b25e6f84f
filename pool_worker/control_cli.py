"""`pool-worker list|pause|resume`: steer the worker running on this machine through its
control socket (works while the broker and Redis are down). The worker is found the way
`run` finds its data directory: --config, --name and --data-dir, or their variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from broker_topology.cli_support import EXIT_USAGE, emit_json, fail, slots_table, user_errors
from broker_topology.control import ControlOp, ControlReply, ControlRequest

from . import config_file
from .config_parts import parse_phases
from .control_socket import request
from .storage import Storage

config_option = click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), default=None,
    envvar="SEALPOOL_WORKER_CONFIG", help="worker config file (TOML) [SEALPOOL_WORKER_CONFIG]")


def _which_worker(fn: Any) -> Any:
    fn = click.option("--data-dir", default=None, help="as given to `run`")(fn)
    fn = click.option("--name", default=None, help="as given to `run` (default: host name)")(fn)
    return config_option(fn)


def ask(req: ControlRequest, config: Path | None, name: str | None,
        data_dir: str | None) -> ControlReply:
    cfg, _ = config_file.load(config, {"name": name, "data_dir": data_dir})
    reply = request(Storage.from_config(cfg).control_socket, req)
    if not reply.ok:
        fail(reply.error or "refused", EXIT_USAGE)
    return reply


def show(reply: ControlReply, as_json: bool, slots_only: bool) -> None:
    if as_json:
        emit_json([s.model_dump(mode="json") for s in reply.slots] if slots_only
                  else reply.model_dump(mode="json"))
    elif slots_only:
        Console(width=200).print(slots_table(reply.worker, reply.slots))
    else:
        click.echo(reply.message)


def _phases(_ctx: Any, _param: Any, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return tuple(sorted(parse_phases(value)))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("list")
@_which_worker
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per slot")
@user_errors
def list_slots(config: Path | None, name: str | None, data_dir: str | None,
               as_json: bool) -> None:
    """Every slot: index, phases, temp dir, job, paused (since), state, last error."""
    show(ask(ControlRequest(op=ControlOp.INFO), config, name, data_dir), as_json, True)


@click.command()
@_which_worker
@click.option("--index", type=int, required=True, help="slot, as `list` numbers them")
@click.option("--now", is_flag=True, help="hand the running job back instead of finishing it")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def pause(config: Path | None, name: str | None, data_dir: str | None, index: int,
          now: bool, as_json: bool) -> None:
    """Stop a slot claiming jobs (after its current one, or --now)."""
    req = ControlRequest(op=ControlOp.PAUSE, index=index, now=now)
    show(ask(req, config, name, data_dir), as_json, False)


@click.command()
@_which_worker
@click.option("--index", type=int, required=True, help="slot, as `list` numbers them")
@click.option("--phase", "phases", default=None, callback=_phases, metavar="P[,P]",
              help="claim only these of the slot's phases (default: all of them)")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def resume(config: Path | None, name: str | None, data_dir: str | None, index: int,
           phases: tuple[Any, ...] | None, as_json: bool) -> None:
    """Let a paused slot claim again."""
    req = ControlRequest(op=ControlOp.RESUME, index=index, phases=phases)
    show(ask(req, config, name, data_dir), as_json, False)
