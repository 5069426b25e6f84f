"""`miner-publisher`: enqueue sectors, run the pipeline for a miner, show its sectors."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click
import pika.exceptions
from rich.console import Console
from rich.live import Live
from rich.table import Table

from broker_topology.cli_support import (
    EXIT_USAGE,
    emit_json,
    fail,
    load_settings,
    pool_options,
    setup_logging,
    user_errors,
)
from broker_topology.link import Link, connect_blocking
from broker_topology.messages import MINER_ID_RE, Phase, SectorClass, parse_job_id
from broker_topology.naming import Names
from broker_topology.redis_conn import connect_redis
from broker_topology.settings import PoolSettings
from broker_topology.topology import miner_topology, pool_topology
from broker_topology.units import parse_duration, parse_sector_size

from .admission import admit
from .config import load_miner_settings
from .deadletters import DeadLetters, check_requeue, replay
from .deadlines import Durations, urgent_check
from .durable import (
    ALLOW_VOLATILE_ENV,
    EXIT_REDIS_WIPED,
    Durable,
    RedisWiped,
    VolatileRedis,
    check_persistence,
)
from .explain import explain
from .fairness import Fairness
from .publisher import Publisher
from .queries import sector_rows, summary
from .ratio_cli import ratio_cmd
from .service import MinerService
from .store import SectorStore
from .workers import registry
from .workers_cli import worker, workers

log = logging.getLogger("miner_publisher")


def _miner(_ctx: Any, _param: Any, value: str) -> str:
    if not MINER_ID_RE.match(value):
        raise click.BadParameter(f"{value!r} is not a miner id (expected t0<digits> or "
                                 "f0<digits>, e.g. t01000)")
    return value


def _store(settings: PoolSettings, miner: str) -> SectorStore:
    client = connect_redis(settings.redis_url, retries=2)
    client.ping()
    return SectorStore(client, Names(settings.namespace), miner)


@contextlib.contextmanager
def _wipe_exits() -> Iterator[None]:
    """A wiped Redis ends the command with its own exit status and one line."""
    try:
        yield
    except RedisWiped as exc:
        fail(str(exc), EXIT_REDIS_WIPED)


@click.group()
def main() -> None:
    """The miner side of a sealpool: owns sector state and decides what runs next."""


miner_option = click.option("--miner", required=True, callback=_miner,
                            help="miner actor id, e.g. t01000")


def _publishing_link(settings: PoolSettings, miner: str, what: str) -> Link:
    """A short-lived link for CLI publishing. It declares the miner's results queue: results
    must wait there even while no `run` is up, instead of being unroutable."""
    topology = pool_topology(settings) + miner_topology(settings, miner)
    return Link(settings.amqp_url, name=f"miner-publisher/{miner}/{what}",
                on_connect=lambda s: s.declare(topology)).start(wait_s=5)


@main.command()
@miner_option
@click.option("--count", type=int, required=True, help="number of sectors")
@click.option("--deal", "sector_class", flag_value="deal", help="deal sectors")
@click.option("--cc", "sector_class", flag_value="cc", help="committed-capacity sectors")
@click.option("--size", default="2KiB", show_default=True, help="sector size")
@click.option("--deadline", default=None, help="time until the sector must be sealed (6h)")
@click.option("--unsealed", default=None, metavar="PATH",
              help="the sectors' unsealed (Fr32-padded) data, a file of the sector size at "
                   "this path on the workers; CC sectors are zeros without it")
@click.option("--json", "as_json", is_flag=True)
@pool_options
@user_errors
def enqueue(miner: str, count: int, sector_class: str | None, size: str, deadline: str | None,
            unsealed: str | None, as_json: bool, **opts: str | None) -> None:
    """Create sectors and publish their first phase (ap)."""
    if sector_class is None:
        fail("choose --deal or --cc")
    if count <= 0:
        fail(f"--count must be positive, got {count}")
    size_bytes = parse_sector_size(size)
    settings = load_settings(**opts)
    cfg = load_miner_settings()
    klass = SectorClass(sector_class)
    ttl = parse_duration(deadline) if deadline else cfg.default_deadline[klass]
    store = _store(settings, miner)
    now = store.redis_now()  # deadlines are on the one clock every miner host compares
    names = Names(settings.namespace)
    with _wipe_exits():
        store.guard = Durable.for_miner(store.r, names, miner).open()
    link = _publishing_link(settings, miner, "enqueue")
    try:
        params = {"unsealed_path": unsealed} if unsealed else {}
        with _wipe_exits():
            records = store.create(count, klass, size_bytes, now + ttl, params, now)
        # Admit what the miner's share allows now; `run` admits the rest as sectors finish.
        admitted = admit(store, Fairness(store.r, names, miner, cfg.weight, cfg.pool_depth),
                         Publisher(names, store, settings.delay_buckets), link,
                         urgent_check(cfg, Durations(store.r, names).table(), now))
    finally:
        link.stop()
    numbers = [r.sector.number for r in records]
    if as_json:
        emit_json({"miner": miner, "class": klass.value, "size": size, "sectors": numbers,
                   "deadline": now + ttl, "admitted": admitted})
    else:
        click.echo(f"enqueued {count} {klass.value} sector(s) of {size} for {miner}: "
                   f"{numbers[0]}..{numbers[-1]} ({admitted} admitted to the pool now, the "
                   "rest by `miner-publisher run` as its share allows)")


@main.command()
@miner_option
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--allow-volatile-redis", is_flag=True, envvar=ALLOW_VOLATILE_ENV,
              help="run even if Redis persists nothing (a throwaway pool: a Redis restart "
                   f"loses every sector) [{ALLOW_VOLATILE_ENV}]")
@pool_options
@user_errors
def run(miner: str, log_level: str, allow_volatile_redis: bool, **opts: str | None) -> None:
    """Consume results and advance sectors until SIGTERM/SIGINT."""
    setup_logging(log_level)
    settings = load_settings(**opts)
    cfg = load_miner_settings()
    client = connect_redis(settings.redis_url)
    client.ping()
    try:
        how = check_persistence(client, allow_volatile_redis)
    except VolatileRedis as exc:
        fail(str(exc), EXIT_USAGE)
    with _wipe_exits():
        durable = Durable.for_miner(client, Names(settings.namespace), miner).open()
        log.info("Redis: %s; generation %s, sector numbers above %d (%s)", how,
                 durable.generation, durable.high_water, durable.path)
        service = MinerService(settings, cfg, miner, client, durable=durable)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stop())
        service.run()
    log.info("miner %s stopped", miner)


@main.command()
@miner_option
@click.option("--next-sector", type=click.IntRange(min=1), default=None,
              help="also number new sectors from at least N (e.g. above the chain's "
                   "AllocatedSectors)")
@click.option("--json", "as_json", is_flag=True)
@pool_options
@user_errors
def recover(miner: str, next_sector: int | None, as_json: bool, **opts: str | None) -> None:
    """After Redis lost its data: start a new generation whose sector numbers are above
    every number this host allocated (its state file), so none is ever reused. Sectors
    that were in flight are gone from Redis; enqueue them again."""
    settings = load_settings(**opts)
    store = _store(settings, miner)
    durable = Durable.for_miner(store.r, Names(settings.namespace), miner)
    generation, last = durable.recover(next_sector)
    if as_json:
        emit_json({"miner": miner, "generation": generation, "next_sector": last + 1,
                   "state_file": str(durable.path)})
    else:
        click.echo(f"recovered {miner}: generation {generation}; new sectors are numbered "
                   f"from {last + 1} ({durable.path})")


def _miners(ctx: Any, param: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_miner(ctx, param, v) for v in values)


@main.command()
@click.option("--miner", "miners", required=True, multiple=True, callback=_miners,
              help="miner actor id (repeat for several)")
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per sector")
@click.option("--watch", is_flag=True, help="live table until every sector is done or failed")
@click.option("--interval", default=1.0, show_default=True)
@pool_options
@user_errors
def status(miners: tuple[str, ...], as_json: bool, watch: bool, interval: float,
           **opts: str | None) -> None:
    """Every sector of the miner(s): state, phase, attempt, home worker, history."""
    settings = load_settings(**opts)
    stores = [_store(settings, m) for m in miners]

    def rows() -> list[dict[str, Any]]:
        return [row for store in stores for row in sector_rows(store)]

    if as_json:
        emit_json(rows())
        return
    console = Console()
    if not watch:
        console.print(_table(rows()))
        return
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            current = rows()
            live.update(_table(current))
            if current and all(r["state"] in ("done", "failed") for r in current):
                return
            time.sleep(interval)


def _table(rows: list[dict[str, Any]]) -> Table:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary(rows).items()))
    table = Table(title=f"{len(rows)} sectors ({counts or 'none'})")
    for col in ("miner", "sector", "class", "size", "state", "phase", "att", "home",
                "ran on", "updated", "error"):
        table.add_column(col, no_wrap=col not in ("ran on", "error"))
    for r in rows:
        workers = sorted({h["worker"] for h in r["history"] if h["outcome"] == "ok"})
        style = {"done": "green", "failed": "red"}.get(r["state"], "")
        state = r["state"]
        if r["stalled"]:
            since = datetime.fromtimestamp(r["stalled_since"], UTC).strftime("%H:%M:%S")
            state, style = f"{state}, stalled since {since}", "yellow"
        table.add_row(r["miner"], str(r["sector"]), r["class"], r["size"], state,
                      r["phase"], str(r["attempt"]), r["home"] or "-", " ".join(workers),
                      datetime.fromtimestamp(r["updated_at"], UTC).strftime("%H:%M:%S"),
                      r["error"] or "", style=style)
    return table


@main.group("dead-letters")
def dead_letters() -> None:
    """What landed in the poison queue, and replaying sectors from it."""


@dead_letters.command("list")
@click.option("--miner", default=None, callback=lambda c, p, v: v and _miner(c, p, v),
              help="only this miner's")
@click.option("--json", "as_json", is_flag=True)
@pool_options
@user_errors
def dead_letters_list(miner: str | None, as_json: bool, **opts: str | None) -> None:
    """Every dead letter: job, reason, where it came from, who parked it."""
    settings = load_settings(**opts)
    client = connect_redis(settings.redis_url, retries=2)
    entries = DeadLetters(client, Names(settings.namespace)).list(miner)
    if as_json:
        emit_json(entries)
        return
    table = Table(title=f"{len(entries)} dead letter(s)")
    for col in ("id", "reason", "detail", "source", "parked by", "at"):
        table.add_column(col, no_wrap=col in ("id", "reason"))
    for e in entries:
        table.add_row(e["id"], e["reason"], e["detail"], e["source"], e["parked_by"],
                      datetime.fromtimestamp(e["at"], UTC).strftime("%Y-%m-%d %H:%M:%S"))
    Console().print(table)


@dead_letters.command("requeue")
@click.argument("job_id")
@click.option("--from-phase", type=click.Choice([p.value for p in Phase]), default=None,
              help="replay the sector from this phase (default: the dead job's phase)")
@click.option("--force", is_flag=True,
              help="replay even if the sector is not failed or its dead letter is not for "
                   "the current attempt")
@click.option("--json", "as_json", is_flag=True)
@pool_options
@user_errors
def dead_letters_requeue(job_id: str, from_phase: str | None, force: bool, as_json: bool,
                         **opts: str | None) -> None:
    """Put the failed sector of JOB_ID (miner/sector/phase) back into the pipeline."""
    miner, _, _ = parse_job_id(job_id)
    settings = load_settings(**opts)
    store = _store(settings, miner)
    check_requeue(store, DeadLetters(store.r, Names(settings.namespace)), job_id, force)
    env = replay(store, job_id, Phase(from_phase) if from_phase else None)
    link = _publishing_link(settings, miner, "requeue")
    try:
        Publisher(Names(settings.namespace), store, settings.delay_buckets).publish(link, env)
    finally:
        link.stop()
    removed = DeadLetters(store.r, Names(settings.namespace)).remove_job(job_id)
    if as_json:
        emit_json({"job_id": env.job.job_id, "attempt": env.job.attempt,
                   "dead_letters_removed": removed})
    else:
        click.echo(f"requeued {env.job.job_id} attempt {env.job.attempt}; "
                   f"{removed} dead letter(s) cleared")


main.add_command(workers)
main.add_command(worker)
main.add_command(ratio_cmd)


@main.command("explain")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@pool_options
@user_errors
def explain_cmd(job_id: str, as_json: bool, **opts: str | None) -> None:
    """Why JOB_ID (miner/sector/phase) is not running: where it waits, and which workers
    could take it and why they do not."""
    miner, _, _ = parse_job_id(job_id)
    settings = load_settings(**opts)
    store = _store(settings, miner)
    names = Names(settings.namespace)
    cfg = load_miner_settings()
    conn = connect_blocking(settings.amqp_url, f"miner-publisher/{miner}/explain")
    try:
        def depth(queue: str) -> int | None:
            ch = conn.channel()
            try:
                return int(ch.queue_declare(queue, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                return None  # no such queue
            finally:
                if ch.is_open:
                    ch.close()

        target = Fairness(store.r, names, miner, cfg.weight, cfg.pool_depth).peek()
        report = explain(job_id, store, registry(store.r, names), depth, target)
    finally:
        conn.close()
    if as_json:
        emit_json(report)
        return
    click.echo(f"{job_id}: sector {report['sector_state']} at {report['sector_phase']}, "
               f"attempt {report['attempt']}, home {report['home'] or '-'}")
    for reason in report["reasons"]:
        click.echo(f"  - {reason}")
    for w in report["workers"]:
        click.echo(f"  {w['worker']}: {w['why_not'] or 'could take it now'}")

