"""`sealpool-sim`: run a scenario in virtual time (and, with --real, on the real broker at
scaled time) and print the table side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from broker_topology.cli_support import emit_json, fail, user_errors

from . import advice as advice_mod
from .engine import POLICIES, simulate
from .metrics import Metrics, measure
from .report import advice_lines, table
from .scenario import Scenario, resolve, scaled
from .trace import Trace


def _run(console: Console, scenario: Scenario, policy: str, seed: int | None, quiet: bool
         ) -> Trace:
    if quiet:
        return simulate(scenario, policy, seed)
    with console.status(f"simulating {scenario.name} ({policy})…"):
        return simulate(scenario, policy, seed)


@click.command()
@click.argument("scenario", default="seed-003")
@click.option("--policy", type=click.Choice([*POLICIES, "both"]), default="both",
              show_default=True, help="pooled: sealpool; static: each miner its own machines "
                                      "split by share")
@click.option("--seed", type=int, default=None, help="random seed (default: the scenario's)")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), default=None,
              metavar="DIR", help="write utilization and Gantt PNGs here")
@click.option("--advise", is_flag=True,
              help="run the ratio advisor on the simulated durations, follow its "
                   "suggestion and simulate again")
@click.option("--real", is_flag=True,
              help="run the scenario's [real] scale on the real RabbitMQ and Redis too, "
                   "next to its simulation")
@click.option("--time-scale", type=click.FloatRange(min=0.1), default=1.0,
              show_default=True, help="with --real: multiply the real phase durations")
@click.option("--timeout", type=click.FloatRange(min=10), default=300.0, show_default=True,
              help="with --real: give up after this many seconds")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def main(scenario: str, policy: str, seed: int | None, plots_dir: Path | None, advise: bool,
         real: bool, time_scale: float, timeout: float, as_json: bool) -> None:
    """Simulate SCENARIO (a TOML file, or a shipped name: seed-003) and report utilization
    while backlogged per phase group, idle slot-hours, turnaround, deadline misses and
    each miner's share of slot time against its weight."""
    console = Console(stderr=as_json)
    spec = resolve(scenario)
    if real:
        spec = scaled(spec, time_scale)
    policies = list(POLICIES) if policy == "both" and not real else \
        ["pooled"] if policy == "both" else [policy]
    runs: list[tuple[str, Trace]] = [(f"sim {p}", _run(console, spec, p, seed, as_json))
                                     for p in policies]
    out: dict[str, Any] = {"scenario": spec.name}
    extra: list[str] = []
    if advise:
        base = dict(runs).get("sim pooled") or runs[0][1]
        said = advice_mod.advice_for(spec, base)
        followed = advice_mod.follow(spec, said)
        runs.append(("sim pooled, advice followed", _run(console, followed, "pooled", seed,
                                                         as_json)))
        out["advice"] = said.to_json()
        extra = advice_lines(said)
    if real:
        from .real import run_real

        runs.append(("real broker", run_real(spec, console, timeout=timeout, quiet=as_json)))
    measured: list[tuple[str, Metrics]] = [(name, measure(t)) for name, t in runs]
    if plots_dir is not None:
        from . import plots  # matplotlib: only when asked for (the `sim` extra)

        written = [str(p) for name, t in runs
                   for p in plots.write(t, plots_dir, name.replace(" ", "-").replace(",", ""),
                                        f"{spec.name}, {name}")]
        out["plots"] = written
    if as_json:
        out["runs"] = {name: m.to_json() for name, m in measured}
        emit_json(out)
        return
    console.print(table(measured, f"{spec.name}: {len(runs[0][1].sectors)} sectors"))
    for line in extra:
        console.print(line)
    for p in out.get("plots", []):
        console.print(f"wrote {p}")
    if any(m.done < m.sectors for _, m in measured):
        fail("some sectors did not finish (see the table)", 1)
