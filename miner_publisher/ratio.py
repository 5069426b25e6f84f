"""The ratio advisor, pure: how many slots each phase needs for a throughput, by Little's law,
and which slots limit the pool now.

Little's law: a phase that takes d seconds per sector, at r sectors per second, keeps
r × d slots busy on average. A slot may serve several phases (ap and pc1 on one machine),
so the pool's throughput is a flow problem: rate r is feasible exactly when, for every set
S of phases, the slots that serve some phase of S can hold S's demand, r × Σ_{p∈S} d_p
(Hall's condition for divisible work). With six phases there are 63 sets: the capacity is
the minimum over them of supply(S) / Σ d_p, and the set reaching it is the bottleneck.

Phase groups are the connected parts of "a slot serves both phases" (seed 003: ap+pc1 on
the PC1 machines, pc2 and c1+c2+fin on the PC2 machines); machine groups are workers with
the same slot layout."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from broker_topology.messages import PIPELINE, Phase

HOUR = 3600.0
#: Machines the advisor adds at most per group when searching for a target (a target
#: no count reaches is reported as such).
MAX_MACHINES = 10_000
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*(s|sec|m|min|h|hour|d|day)\s*$", re.I)
_PER = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": HOUR, "hour": HOUR,
        "d": 86400.0, "day": 86400.0}

SlotKind = frozenset[Phase]


def parse_rate(text: str) -> float:
    """Sectors per hour from "12/h", "0.5/min", "300/d"."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"cannot read {text!r} as a rate; use e.g. 12/h, 0.5/min or 300/d")
    return float(match.group(1)) * HOUR / _PER[match.group(2).lower()]


def kind_name(kind: Iterable[Phase]) -> str:
    """Phases in pipeline order: "ap+pc1"."""
    members = set(kind)
    return "+".join(p.value for p in PIPELINE if p in members)


@dataclass(frozen=True)
class MachineGroup:
    """Identical machines: each has one slot per entry of `slots` (the phases it serves)."""

    name: str
    count: int
    slots: tuple[SlotKind, ...]

    @property
    def phases(self) -> SlotKind:
        return frozenset().union(*self.slots)


def slot_supply(groups: Iterable[MachineGroup]) -> Counter[SlotKind]:
    out: Counter[SlotKind] = Counter()
    for g in groups:
        for kind in g.slots:
            out[kind] += g.count
    return out


def capacity(durations: Mapping[Phase, float], slots: Mapping[SlotKind, int]
             ) -> tuple[float, SlotKind]:
    """(sectors per hour the slots sustain, the binding set of phases). Phases nobody
    measured count as taking no time; a measured phase no slot serves makes it 0."""
    phases = [p for p in PIPELINE if durations.get(p, 0.0) > 0]
    best, binding = math.inf, frozenset(phases)
    for n in range(1, len(phases) + 1):
        for subset in combinations(phases, n):
            s = frozenset(subset)
            supply = sum(c for kind, c in slots.items() if kind & s)
            rate = supply / sum(durations[p] for p in s) * HOUR
            if rate < best - 1e-12:  # strict: among equals the smallest set names it
                best, binding = rate, s
    return (best if math.isfinite(best) else math.inf), binding


def phase_groups(slots: Iterable[SlotKind]) -> list[SlotKind]:
    """The connected parts of the phases the slots serve, in pipeline order."""
    parts: list[set[Phase]] = []
    for kind in slots:
        joined = set(kind)
        for part in [p for p in parts if p & joined]:
            joined |= part
            parts.remove(part)
        parts.append(joined)
    return sorted((frozenset(p) for p in parts), key=lambda k: min(map(PIPELINE.index, k)))


@dataclass(frozen=True)
class GroupLoad:
    phases: SlotKind
    provided: int
    demanded: float

    @property
    def load(self) -> float:
        return self.demanded / self.provided if self.provided else math.inf


def loads(durations: Mapping[Phase, float], slots: Mapping[SlotKind, int], rate_h: float,
          ) -> list[GroupLoad]:
    """Per phase group: slots provided, and slots demanded at `rate_h` (Little's law)."""
    out = []
    for group in phase_groups([k for k, c in slots.items() if c > 0]
                              + [frozenset({p}) for p in durations if durations[p] > 0]):
        provided = sum(c for kind, c in slots.items() if kind <= group)
        demanded = rate_h / HOUR * sum(durations.get(p, 0.0) for p in group)
        out.append(GroupLoad(group, provided, demanded))
    return out


def _ratios(durations: Mapping[Phase, float], groups: Sequence[MachineGroup]) -> list[float]:
    """Capacity of each phase group on its own, lowest first (to compare plans that tie on
    the pool's capacity: the one that lifts the next bottleneck wins)."""
    slots = slot_supply(groups)
    out = []
    for part in phase_groups(slots):  # every layout's, even at count 0: lists align
        own = {k: c for k, c in slots.items() if k <= part}
        out.append(capacity({p: d for p, d in durations.items() if p in part}, own)[0])
    return sorted(out)


def with_count(groups: Sequence[MachineGroup], name: str, delta: int) -> list[MachineGroup]:
    return [MachineGroup(g.name, g.count + delta, g.slots) if g.name == name else g
            for g in groups]


def machines_for(durations: Mapping[Phase, float], groups: Sequence[MachineGroup],
                 target_h: float) -> dict[str, int] | None:
    """Fewest machines per group (greedy from none: each step adds the machine that lifts
    capacity most) for `target_h` sectors per hour; None if no mix of these reaches it."""
    plan = [MachineGroup(g.name, 0, g.slots) for g in groups]
    for _ in range(MAX_MACHINES):
        if capacity(durations, slot_supply(plan))[0] >= target_h - 1e-9:
            return {g.name: g.count for g in plan}
        now = (capacity(durations, slot_supply(plan))[0], _ratios(durations, plan))
        options = [with_count(plan, g.name, 1) for g in plan]
        scored = [((capacity(durations, slot_supply(o))[0], _ratios(durations, o)), -i)
                  for i, o in enumerate(options)]
        best, i = max(scored)
        if best <= now:
            return None  # nothing any group adds helps
        plan = options[-i]
    return None


@dataclass(frozen=True)
class Change:
    """What one change would buy: "+2 ap+pc1 slots: 9.1 → 11.3 sectors/h"."""

    what: str
    before_h: float
    after_h: float

    def __str__(self) -> str:
        return f"{self.what}: {self.before_h:.1f} → {self.after_h:.1f} sectors/h"


@dataclass(frozen=True)
class Advice:
    rate_h: float
    rate_source: str
    capacity_h: float
    bottleneck: SlotKind
    #: Phase -> (mean seconds, slots it keeps busy at rate_h)
    phases: dict[Phase, tuple[float, float]]
    groups: list[GroupLoad]
    machines: list[MachineGroup]
    suggested_machines: dict[str, int] | None
    changes: list[Change]

    @property
    def bottleneck_group(self) -> SlotKind:
        return next((g.phases for g in self.groups if self.bottleneck <= g.phases),
                    self.bottleneck)

    def to_json(self) -> dict[str, Any]:
        return {
            "rate_per_hour": round(self.rate_h, 3), "rate_source": self.rate_source,
            "capacity_per_hour": round(self.capacity_h, 3),
            "bottleneck": kind_name(self.bottleneck),
            "bottleneck_group": kind_name(self.bottleneck_group),
            "phases": [{"phase": p.value, "mean_s": round(d, 3), "slots": round(s, 3)}
                       for p, (d, s) in self.phases.items()],
            "groups": [{"phases": kind_name(g.phases), "provided": g.provided,
                        "demanded": round(g.demanded, 3), "load": round(g.load, 3)
                        if math.isfinite(g.load) else None} for g in self.groups],
            "machines": [{"group": m.name, "count": m.count,
                          "slots": {kind_name(k): n for k, n in Counter(m.slots).items()},
                          "suggested": (self.suggested_machines or {}).get(m.name)}
                         for m in self.machines],
            "reachable": self.suggested_machines is not None,
            "changes": [{"change": c.what, "before_per_hour": round(c.before_h, 3),
                         "after_per_hour": round(c.after_h, 3)} for c in self.changes],
        }


def advise(durations: Mapping[Phase, float], machines: Sequence[MachineGroup],
           rate_h: float | None = None, rate_source: str = "target") -> Advice:
    """Slots per phase and machines per group for `rate_h` sectors per hour (None: what
    the pool sustains now), the bottleneck, and what adding to it would buy."""
    durations = {p: d for p, d in durations.items() if d > 0}
    slots = slot_supply(machines)
    cap, binding = capacity(durations, slots)
    if rate_h is None:
        rate_h, rate_source = cap, "capacity"
    changes: list[Change] = []
    # Slots of the kinds serving the bottleneck, the most common kind first.
    kinds = sorted((k for k in slots if k & binding), key=lambda k: (-slots[k], kind_name(k)))
    for kind in kinds[:1]:
        for n in (1, 2):
            more = slots + Counter({kind: n})
            changes.append(Change(f"+{n} {kind_name(kind)} slot{'s' if n > 1 else ''}", cap,
                                  capacity(durations, more)[0]))
    for g in machines:
        if g.phases & binding:
            after = capacity(durations, slot_supply(with_count(machines, g.name, 1)))[0]
            changes.append(Change(f"+1 {g.name} machine", cap, after))
    for p in sorted(binding, key=PIPELINE.index):  # a faster phase also helps
        faster = {**durations, p: durations[p] * 0.9}
        changes.append(Change(f"{p.value} 10% faster", cap, capacity(faster, slots)[0]))
    target = rate_h if math.isfinite(rate_h) else cap
    return Advice(
        rate_h, rate_source, cap, binding,
        {p: (durations[p], rate_h / HOUR * durations[p]) for p in PIPELINE if p in durations},
        loads(durations, slots, rate_h), list(machines),
        machines_for(durations, machines, target) if machines and math.isfinite(target)
        else None,
        changes)


def observed_rate(finished_at: Iterable[float], now: float, window_s: float,
                  since: float | None = None) -> float | None:
    """Sectors per hour finished in the last `window_s` (or since `since`, when the pool
    is younger than the window); None with fewer than two completions to go on."""
    start = max(now - window_s, since if since is not None else -math.inf)
    recent = sorted(t for t in finished_at if start <= t <= now)
    if len(recent) < 2 or now - start <= 0:
        return None
    return len(recent) / (now - start) * HOUR


def groups_from_workers(layouts: Iterable[tuple[str, Sequence[Iterable[Phase]]]]
                        ) -> list[MachineGroup]:
    """Machine groups from (worker, [phases of each slot]): workers with the same slot
    layout form one group, named by the phases they serve (and their slot count when two
    layouts serve the same phases)."""
    by_layout: Counter[tuple[SlotKind, ...]] = Counter()
    for _, slots in layouts:
        layout = tuple(sorted((frozenset(s) for s in slots), key=kind_name))
        by_layout[layout] += 1
    names: Counter[str] = Counter(kind_name(frozenset().union(*lay)) for lay in by_layout)
    out = []
    for layout, count in sorted(by_layout.items(), key=lambda kv: kind_name(kv[0][0])):
        name = kind_name(frozenset().union(*layout))
        if names[name] > 1:
            name += f" ({len(layout)} slots)"
        out.append(MachineGroup(name, count, layout))
    return out
