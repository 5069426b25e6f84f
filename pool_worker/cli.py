"""`pool-worker`: run this machine's slots in the shared pool."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

from broker_topology.cli_support import load_settings, pool_options, setup_logging, user_errors
from broker_topology.messages import Phase
from broker_topology.redis_conn import connect_redis

from . import config_file, preflight
from .control_cli import config_option, list_slots, pause, resume
from .control_socket import ControlServer
from .executors import executors_for
from .executors.labeler import Pc1Executor
from .resources import resolve_sizes
from .runtime import Worker
from .storage import Storage

log = logging.getLogger("pool_worker")


class _StoppedBeforeStart(Exception):
    """SIGTERM/SIGINT while the worker still waits for the broker."""


@click.group()
def main() -> None:
    """A machine in the shared sealing pool."""


@main.command()
@config_option
@click.option("--phases", default=None, help="phases this worker runs, e.g. pc1,pc2")
@click.option("--name", default=None, help="worker name (default: host name)")
@click.option("--slots", type=int, default=None, help="jobs run at once")
@click.option("--data-dir", default=None, help="temp and sealed storage root")
@click.option("--simulate", type=float, default=None, metavar="SECONDS",
              help="run phases without a built-in executor as simulated jobs")
@click.option("--simulate-builtin", is_flag=True, default=None,
              help="with --simulate, simulate ap and pc1 too instead of the C kernel")
@click.option("--simulate-fail", default=None, metavar="RULES",
              help="fault injection for simulated phases, e.g. 'pc2=temporary@3;c2=crash'")
@click.option("--gpu", type=int, default=None, help="GPU index for GPU phases")
@click.option("--drain-timeout", default=None, help="on SIGTERM, wait this long for jobs")
@click.option("--idle-poll", default=None, help="poll interval when idle (doorbell wakes)")
@click.option("--log-level", default="INFO", show_default=True)
@pool_options
@user_errors
def run(log_level: str, amqp_url: str | None, redis_url: str | None, namespace: str | None,
        config: Path | None, **flags: Any) -> None:
    """Claim and run jobs until SIGTERM (drains) or SIGINT. Settings: flags > environment
    (SEALPOOL_WORKER_*) > --config file > defaults."""
    setup_logging(log_level)
    pool = load_settings(amqp_url=amqp_url, redis_url=redis_url, namespace=namespace)
    cfg, source = config_file.load(config, flags)
    pc1_slots = sum(Phase.PC1 in (s.phases if s.phases is not None else cfg.phases)
                    for s in cfg.slots)
    executors = executors_for(cfg.phases, cfg.simulate, cfg.simulate_fail,
                              configured=cfg.executors, simulate_builtin=cfg.simulate_builtin,
                              pc1_slots=pc1_slots, pc1_pool_bytes=cfg.pc1_pool_size)
    storage = Storage.from_config(cfg)
    cfg = resolve_sizes(cfg, executors, storage.existing_temp_dirs())
    if isinstance(pc1 := executors.get(Phase.PC1), Pc1Executor):
        pc1.check_pool(cfg.sector_sizes)  # MEM_POOL_SIZE below (N+1)·S: refuse now
        pc1.check_pages()
    gpus = preflight.check(cfg, source, storage)
    storage.prepare()  # every check passed: create the default directories
    log.info("effective config:\n%s", config_file.effective(pool, cfg))
    client = connect_redis(pool.redis_url)
    client.ping()
    worker = Worker(pool, cfg, executors, client, gpus=gpus)
    stop, started = threading.Event(), threading.Event()

    def on_signal(*_: Any) -> None:
        stop.set()
        if not started.is_set() and not worker.transport.connected.is_set():
            raise _StoppedBeforeStart  # out of start()'s wait for the broker

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    with ControlServer(storage.control_socket, worker.control):
        try:
            worker.start()
        except _StoppedBeforeStart:
            worker.transport.stop()
            log.info("worker %s stopped before reaching the broker", cfg.name)
            return
        started.set()
        stop.wait()
        log.info("stopping: no new claims; draining running jobs for up to %.0fs",
                 cfg.drain_timeout)
        worker.stop()
    log.info("worker %s stopped", cfg.name)


main.add_command(list_slots)
main.add_command(pause)
main.add_command(resume)
