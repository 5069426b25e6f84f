"""PNG plots of a run: utilization over time per phase group, and a Gantt chart of the
slots (one row per slot, one bar per job, coloured by miner)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt

from broker_topology.messages import Phase
from miner_publisher.ratio import kind_name

from .metrics import sweep
from .trace import Trace

HOUR = 3600.0


def busy_series(trace: Trace, kind: frozenset[Phase]) -> tuple[list[float], list[float]]:
    """(hours, busy fraction) at every change of the group's busy slots."""
    keys = {s.key for s in trace.slots if s.phases == kind}
    changes = [c for r in trace.runs if r.slot in keys
               for c in ((r.started_at, 1, 0), (r.finished_at, -1, 0))]
    xs: list[float] = []
    ys: list[float] = []
    clock = min((c[0] for c in changes), default=0.0)

    def on(dt: float, busy: int, _waiting: int) -> None:
        nonlocal clock
        xs.append(clock / HOUR)
        ys.append(busy / len(keys))
        clock += dt

    sweep(changes, on)
    return xs, ys


def utilization(trace: Trace, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(11, 4))
    kinds = sorted({s.phases for s in trace.slots}, key=kind_name)
    for kind in kinds:
        n = sum(1 for s in trace.slots if s.phases == kind)
        xs, ys = busy_series(trace, kind)
        ax.step(xs, ys, where="post", label=f"{kind_name(kind)} ({n} slots)")
    ax.set_xlabel("hours")
    ax.set_ylabel("busy slots / slots")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gantt(trace: Trace, path: Path, title: str, max_slots: int = 400) -> None:
    slots = trace.slots[:max_slots]
    row = {s.key: i for i, s in enumerate(slots)}
    miners = sorted(trace.weights)
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(12, max(3.0, len(slots) * 0.04 + 1.5)))
    for i, m in enumerate(miners):
        bars = [((r.started_at / HOUR), (r.finished_at - r.started_at) / HOUR, row[r.slot])
                for r in trace.runs if r.miner == m and r.slot in row]
        for y in sorted({b[2] for b in bars}):
            ax.broken_barh([(b[0], b[1]) for b in bars if b[2] == y], (y, 0.8),
                           color=colours(i), label=m if y == min(b[2] for b in bars) else None)
    ax.set_xlabel("hours")
    ax.set_ylabel("slot")
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(trace: Trace, directory: Path, stem: str, title: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}-utilization.png", directory / f"{stem}-gantt.png"]
    utilization(trace, paths[0], f"{title}: utilization")
    gantt(trace, paths[1], f"{title}: slots")
    return paths
