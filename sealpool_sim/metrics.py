"""The table, computed from a Trace (simulated or read back from Redis) the same way.

- Phase groups are the slots' phase sets (seed 003: ap+pc1, pc2, c1+c2+fin).
- A group is backlogged while a job it could run waits: a job of one of its phases between
  ready and started. For ap, "ready" is when the sector arrived, so a sector held back by
  admission counts as waiting work. A follow-up waits only for slots where its files are.
- Utilization while backlogged is busy slot time / slot time over those periods (the
  issue's measure). Idle-while-backlog is the slot time left unused then.
- Shares under contention: each miner's busy slot time while every miner had sectors
  waiting to start, against its weight."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker_topology.messages import LOCAL_PHASES, PIPELINE, Phase
from miner_publisher.ratio import kind_name

from .trace import Run, SlotKind, Trace


@dataclass(frozen=True)
class GroupUse:
    phases: SlotKind
    slots: int
    backlogged_s: float
    busy_s: float  # busy slot-seconds while backlogged
    idle_slot_s: float  # idle slot-seconds while backlogged
    total_busy_s: float  # busy slot-seconds over the whole run

    @property
    def utilization(self) -> float | None:
        total = self.busy_s + self.idle_slot_s
        return self.busy_s / total if total > 0 else None


@dataclass(frozen=True)
class MinerUse:
    miner: str
    weight_share: float
    share: float  # of all busy slot time
    contended_share: float | None  # of busy slot time while every miner had work waiting


@dataclass(frozen=True)
class Metrics:
    groups: list[GroupUse]
    miners: list[MinerUse]
    sectors: int
    done: int
    failed: int
    deadline_misses: int
    turnaround_p50: float | None
    turnaround_p95: float | None
    deal_turnaround_p50: float | None
    makespan: float
    #: Makespan if every group's slots were busy from start to end on its own work.
    bound: float
    contended_s: float

    def group(self, phase: Phase) -> GroupUse:
        return next(g for g in self.groups if phase in g.phases)

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {
            "groups": [{"phases": kind_name(g.phases), "slots": g.slots,
                        "utilization_backlogged": r(g.utilization),
                        "idle_backlogged_slot_hours": r(g.idle_slot_s / 3600),
                        "idle_backlogged_slot_seconds": r(g.idle_slot_s, 1),
                        "backlogged_hours": r(g.backlogged_s / 3600),
                        "busy_slot_hours": r(g.total_busy_s / 3600)} for g in self.groups],
            "miners": [{"miner": m.miner, "weight_share": r(m.weight_share),
                        "share": r(m.share), "contended_share": r(m.contended_share)}
                       for m in self.miners],
            "sectors": self.sectors, "done": self.done, "failed": self.failed,
            "deadline_misses": self.deadline_misses,
            "turnaround_p50_s": r(self.turnaround_p50, 1),
            "turnaround_p95_s": r(self.turnaround_p95, 1),
            "deal_turnaround_p50_s": r(self.deal_turnaround_p50, 1),
            "makespan_s": r(self.makespan, 1), "bound_s": r(self.bound, 1),
            "contended_hours": r(self.contended_s / 3600),
        }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


Change = tuple[float, int, int]  # (time, Δbusy, Δwaiting)


def sweep(changes: list[Change], on: Callable[[float, int, int], None]) -> None:
    """Call on(duration, busy, waiting) for every stretch between change points."""
    changes.sort(key=lambda c: c[0])
    busy = waiting = 0
    last: float | None = None
    for t, db, dw in changes:
        if last is not None and t > last:
            on(t - last, busy, waiting)
        busy, waiting, last = busy + db, waiting + dw, t


def _waits_for(run: Run, kind: SlotKind, localities: set[str]) -> bool:
    if run.phase not in kind:
        return False
    return run.phase not in LOCAL_PHASES or run.home is None or run.home in localities


def group_use(trace: Trace, kind: SlotKind) -> GroupUse:
    slots = {s.key for s in trace.slots if s.phases == kind}
    localities = {s.locality for s in trace.slots if s.phases == kind}
    changes: list[Change] = []
    total_busy = 0.0
    for run in trace.runs:
        if run.slot in slots:
            changes += [(run.started_at, 1, 0), (run.finished_at, -1, 0)]
            total_busy += run.finished_at - run.started_at
        if _waits_for(run, kind, localities) and run.started_at > run.ready_at:
            changes += [(run.ready_at, 0, 1), (run.started_at, 0, -1)]
    acc = [0.0, 0.0, 0.0]

    def on(dt: float, busy: int, waiting: int) -> None:
        if waiting > 0:
            acc[0] += dt
            acc[1] += min(busy, len(slots)) * dt
            acc[2] += max(0, len(slots) - busy) * dt

    sweep(changes, on)
    return GroupUse(kind, len(slots), acc[0], acc[1], acc[2], total_busy)


def contention(trace: Trace) -> list[tuple[float, float]]:
    """Stretches of time when every miner had a sector waiting to start (its ap not begun:
    held back by admission, or queued): each wanted more of the pool than it had. (A miner
    whose last sectors are in flight still has jobs waiting, but no longer asks for more.)"""
    miners = sorted(trace.weights)
    points: list[tuple[float, str, int]] = []
    for run in trace.runs:
        if run.phase is Phase.AP and run.started_at > run.ready_at:
            points += [(run.ready_at, run.miner, 1), (run.started_at, run.miner, -1)]
    points.sort(key=lambda p: p[0])
    waiting = dict.fromkeys(miners, 0)
    out: list[tuple[float, float]] = []
    start: float | None = None
    for t, miner, d in points:
        waiting[miner] += d
        every = all(waiting[m] > 0 for m in miners)
        if every and start is None:
            start = t
        elif not every and start is not None:
            if t > start:
                out.append((start, t))
            start = None
    return out


def _overlap(a: float, b: float, spans: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans)


def measure(trace: Trace) -> Metrics:
    kinds = sorted({s.phases for s in trace.slots}, key=lambda k: min(map(PIPELINE.index, k)))
    groups = [group_use(trace, k) for k in kinds]
    spans = contention(trace) if len(trace.weights) > 1 else []
    busy = dict.fromkeys(trace.weights, 0.0)
    contended = dict.fromkeys(trace.weights, 0.0)
    for run in trace.runs:
        busy[run.miner] += run.finished_at - run.started_at
        if spans:
            contended[run.miner] += _overlap(run.started_at, run.finished_at, spans)
    total_w = sum(trace.weights.values())
    total_busy, total_contended = sum(busy.values()), sum(contended.values())
    miners = [MinerUse(m, w / total_w, busy[m] / total_busy if total_busy else 0.0,
                       contended[m] / total_contended if total_contended else None)
              for m, w in sorted(trace.weights.items())]
    done = [s for s in trace.sectors if s.done_at is not None and not s.failed]
    turnaround = [s.done_at - s.arrived_at for s in done if s.done_at is not None]
    deal_turn = [s.done_at - s.arrived_at for s in done if s.deal and s.done_at is not None]
    misses = sum(1 for s in trace.sectors
                 if s.failed or s.done_at is None or s.done_at > s.deadline)
    start = min((s.arrived_at for s in trace.sectors), default=0.0)
    end = max((s.done_at for s in done if s.done_at is not None), default=start)
    bound = max((g.total_busy_s / g.slots for g in groups if g.slots), default=0.0)
    return Metrics(groups, miners, len(trace.sectors), len(done),
                   sum(1 for s in trace.sectors if s.failed), misses,
                   percentile(turnaround, 50), percentile(turnaround, 95),
                   percentile(deal_turn, 50), end - start, bound,
                   sum(e - s for s, e in spans))
