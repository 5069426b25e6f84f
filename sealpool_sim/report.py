"""The table: one column per run (simulated policies, the real broker), one row per
measure, so runs read side by side."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from broker_topology.units import format_duration
from miner_publisher.ratio import Advice, kind_name

from .metrics import Metrics


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _dur(x: float | None) -> str:
    return "-" if x is None else format_duration(x)


def _slot_time(seconds: float) -> str:
    return f"{seconds / 3600:.1f} slot-h" if seconds >= 360 else f"{seconds:.0f} slot-s"


def table(runs: Sequence[tuple[str, Metrics]], title: str) -> Table:
    t = Table(title=title)
    t.add_column("measure", no_wrap=True)
    for name, _ in runs:
        t.add_column(name, justify="right")
    first = runs[0][1]
    rows: list[tuple[str, list[str]]] = []
    for i, g in enumerate(first.groups):
        name = f"{kind_name(g.phases)} ×{g.slots}"
        rows.append((f"{name}: utilization while backlogged",
                     [_pct(m.groups[i].utilization) for _, m in runs]))
        rows.append((f"{name}: idle slot time while backlogged",
                     [_slot_time(m.groups[i].idle_slot_s) for _, m in runs]))
    rows += [
        ("sectors done / failed", [f"{m.done} / {m.failed}" for _, m in runs]),
        ("turnaround p50", [_dur(m.turnaround_p50) for _, m in runs]),
        ("turnaround p95", [_dur(m.turnaround_p95) for _, m in runs]),
        ("deal turnaround p50", [_dur(m.deal_turnaround_p50) for _, m in runs]),
        ("deadline misses", [str(m.deadline_misses) for _, m in runs]),
        ("makespan (busiest group bound)",
         [f"{_dur(m.makespan)} ({_dur(m.bound)})" for _, m in runs]),
    ]
    for i, mu in enumerate(first.miners):
        rows.append((f"{mu.miner} slot time (contended), weight {mu.weight_share:.0%}",
                     [f"{_pct(m.miners[i].share)} ({_pct(m.miners[i].contended_share)})"
                      for _, m in runs]))
    for label, cells in rows:
        t.add_row(label, *cells)
    return t


def advice_lines(advice: Advice) -> list[str]:
    out = [f"ratio advisor: bottleneck {kind_name(advice.bottleneck)} "
           f"(capacity {advice.capacity_h:.1f} sectors/h)"]
    for g in advice.groups:
        out.append(f"  {kind_name(g.phases)}: {g.demanded:.1f} slots demanded at "
                   f"{advice.rate_h:.1f}/h, {g.provided} provided")
    if advice.suggested_machines:
        out.append("  machines for that rate: " + ", ".join(
            f"{k} {v}" for k, v in advice.suggested_machines.items()))
    out += [f"  {c}" for c in advice.changes]
    return out
