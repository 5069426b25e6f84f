"""`miner-publisher ratio`: the ratio advisor (ratio.py) on the pool's observed durations,
live workers and recent completions."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from broker_topology.cli_support import (
    EXIT_FAILURE,
    emit_json,
    fail,
    load_settings,
    pool_options,
    user_errors,
)
from broker_topology.messages import MINER_ID_RE, Phase
from broker_topology.naming import Names
from broker_topology.redis_conn import connect_redis
from broker_topology.units import (
    format_duration,
    parse_duration,
    parse_sector_size,
    sector_size_name,
)

from .deadlines import Durations
from .ratio import Advice, advise, groups_from_workers, kind_name, observed_rate, parse_rate
from .redis_text import text_map
from .store import SectorStore
from .workers import registry


def _miners(_ctx: Any, _param: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        if not MINER_ID_RE.match(v):
            raise click.BadParameter(f"{v!r} is not a miner id (e.g. t01000)")
    return values


@click.command("ratio")
@click.option("--target", default=None, metavar="RATE",
              help="sectors per time to plan for, e.g. 12/h (default: the rate observed "
                   "from recent fin completions, else what the pool sustains now)")
@click.option("--size", default=None,
              help="sector size whose durations to use (default: the one measured most)")
@click.option("--window", default="6h", show_default=True,
              help="how far back completions count for the observed rate")
@click.option("--miner", "miners", multiple=True, callback=_miners,
              help="miners whose completions count (default: every miner in the pool)")
@click.option("--json", "as_json", is_flag=True)
@pool_options
@user_errors
def ratio_cmd(target: str | None, size: str | None, window: str, miners: tuple[str, ...],
              as_json: bool, **opts: str | None) -> None:
    """Slots per phase and machines per group for a throughput (Little's law: slots =
    rate × duration), from the observed phase durations and the live workers; names the
    bottleneck and what adding to it would buy."""
    settings = load_settings(**opts)
    names = Names(settings.namespace)
    client = connect_redis(settings.redis_url, retries=2)
    table = Durations(client, names).table()
    if not table:
        fail("no phase durations measured yet (they are learned from accepted results); "
             "run some sectors first", EXIT_FAILURE)
    sizes = sorted({s for _, s in table}, key=lambda s: (
        -sum(1 for _, t in table if t == s), -s))
    chosen = parse_sector_size(size) if size else sizes[0]
    durations = {p: d for (p, s), d in table.items() if s == chosen}
    if not durations:
        fail(f"no durations measured for {size} sectors (measured: "
             f"{', '.join(sector_size_name(s) for s in sizes)})")
    now = time.time()
    live = [w for w in registry(client, names) if not w.stale(now)]
    machines = groups_from_workers(
        (w.name, [s.phases for s in w.slots if not s.paused]) for w in live)
    rate, source = (parse_rate(target), "target") if target else (None, "capacity")
    if rate is None:
        finished, since = _completions(client, names, miners, now)
        rate = observed_rate(finished, now, parse_duration(window), since)
        source = "observed" if rate is not None else source
    advice = advise(durations, machines, rate, source)
    if as_json:
        emit_json({"size": sector_size_name(chosen), "workers": len(live), **advice.to_json()})
        return
    _print(advice, sector_size_name(chosen))


def _completions(client: Any, names: Names, miners: tuple[str, ...], now: float
                 ) -> tuple[list[float], float]:
    """When each sector's fin succeeded, and when the oldest sector was created."""
    finished: list[float] = []
    since = now
    for m in miners or tuple(sorted(text_map(client.hgetall(names.miners_key)))):
        store = SectorStore(client, names, m)
        records = store.all()
        since = min([since, *(r.created_at for r in records)])
        for entries in store.histories([r.sector.number for r in records]).values():
            finished += [e["finished_at"] for e in entries
                         if e["phase"] == Phase.FIN.value and e["outcome"] == "ok"]
    return finished, since


def _print(advice: Advice, size: str) -> None:
    machines = advice.machines
    console = Console()
    title = (f"{size} sectors at {advice.rate_h:.1f}/h ({advice.rate_source})"
             f"; the live workers sustain {advice.capacity_h:.1f}/h")
    phases = Table(title=title)
    for col in ("phase", "mean", "slots busy (rate × mean)"):
        phases.add_column(col)
    for p, (mean, busy) in advice.phases.items():
        phases.add_row(p.value, format_duration(mean), f"{busy:.1f}")
    console.print(phases)
    groups = Table(title="phase groups: slots demanded against the live workers'")
    for col in ("phases", "demanded", "provided", "load"):
        groups.add_column(col)
    for g in advice.groups:
        style = "bold red" if g.phases == advice.bottleneck_group else ""
        groups.add_row(kind_name(g.phases), f"{g.demanded:.1f}", str(g.provided),
                       f"{g.load:.0%}" if g.provided else "no slots", style=style)
    console.print(groups)
    if machines:
        mtable = Table(title="machines per group for "
                             f"{advice.rate_h:.1f}/h")
        for col in ("group", "slots per machine", "now", "suggested"):
            mtable.add_column(col)
        for group in machines:
            layout = ", ".join(f"{n}× {k}" for k, n in
                               sorted(Counter(kind_name(k) for k in group.slots).items()))
            want = (advice.suggested_machines or {}).get(group.name)
            mtable.add_row(group.name, layout, str(group.count),
                           "-" if want is None else str(want))
        console.print(mtable)
    console.print(f"bottleneck: [bold]{kind_name(advice.bottleneck)}[/bold] "
                  f"(group {kind_name(advice.bottleneck_group)})")
    for change in advice.changes:
        console.print(f"  {change}")
