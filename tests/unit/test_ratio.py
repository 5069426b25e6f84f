"""The ratio advisor: Little's law per phase, capacity and bottleneck by Hall's condition,
machines for a target, and what a change buys."""

from __future__ import annotations

import pytest

from broker_topology.messages import Phase as P
from miner_publisher.ratio import (
    MachineGroup,
    advise,
    capacity,
    groups_from_workers,
    machines_for,
    observed_rate,
    parse_rate,
)

AP_PC1 = frozenset({P.AP, P.PC1})
PC2 = frozenset({P.PC2})
TAIL = frozenset({P.C1, P.C2, P.FIN})
DUR = {P.AP: 600.0, P.PC1: 3000.0, P.PC2: 600.0, P.C1: 60.0, P.C2: 600.0, P.FIN: 300.0}


def seed_like(pc1: int = 4, pc2: int = 2) -> list[MachineGroup]:
    return [MachineGroup("pc1", pc1, (AP_PC1,) * 3), MachineGroup("pc2", pc2, (PC2, TAIL))]


def test_parse_rate() -> None:
    assert parse_rate("12/h") == 12
    assert parse_rate("0.5/min") == 30
    assert parse_rate("48/d") == 2
    with pytest.raises(ValueError, match="12/h"):
        parse_rate("fast")


def test_capacity_is_littles_law_on_one_phase() -> None:
    cap, binding = capacity({P.PC1: 3600.0}, {frozenset({P.PC1}): 5})
    assert cap == pytest.approx(5.0) and binding == {P.PC1}


def test_capacity_of_shared_slots_counts_their_phases_together() -> None:
    # 12 ap+pc1 slots at 3600 s per sector: 12/h; pc2 alone would do 6 slots / 0.5 h = 12/h
    slots = {AP_PC1: 12, PC2: 6}
    cap, binding = capacity({P.AP: 600.0, P.PC1: 3000.0, P.PC2: 1800.0}, slots)
    assert cap == pytest.approx(12.0)
    slots[PC2] = 5
    cap, binding = capacity({P.AP: 600.0, P.PC1: 3000.0, P.PC2: 1800.0}, slots)
    assert cap == pytest.approx(10.0) and binding == PC2


def test_a_phase_nobody_serves_makes_capacity_zero() -> None:
    cap, binding = capacity({P.PC1: 10.0, P.C2: 10.0}, {frozenset({P.PC1}): 3})
    assert cap == 0 and binding == {P.C2}


def test_advise_names_the_bottleneck_and_what_a_change_buys() -> None:
    a = advise(DUR, seed_like())
    # ap+pc1: 12 slots / 3600 s = 12/h; pc2: 2 / 600 s = 12/h; tail: 2 / 960 s = 7.5/h
    assert a.capacity_h == pytest.approx(7.5)
    assert a.bottleneck_group == TAIL
    assert a.rate_source == "capacity"
    slots = {p: round(s, 2) for p, (_, s) in a.phases.items()}
    assert slots[P.PC1] == pytest.approx(7.5 * 3000 / 3600, abs=0.01)
    by_name = {c.what: c for c in a.changes}
    assert "+1 pc2 machine" in by_name and "+2 c1+c2+fin slots" in by_name
    more = by_name["+2 c1+c2+fin slots"]
    assert more.after_h == pytest.approx(4 * 3600 / 960 if 4 * 3600 / 960 < 12 else 12)
    assert str(more) == f"+2 c1+c2+fin slots: 7.5 → {more.after_h:.1f} sectors/h"
    groups = {g.phases: g for g in a.groups}
    assert groups[TAIL].load == pytest.approx(1.0)
    assert groups[AP_PC1].demanded == pytest.approx(7.5 * 3600 / 3600)


def test_machines_for_a_target() -> None:
    plan = machines_for(DUR, seed_like(), 24.0)
    assert plan is not None
    assert capacity(DUR, {AP_PC1: 3 * plan["pc1"], PC2: plan["pc2"],
                          TAIL: plan["pc2"]})[0] >= 24.0
    # one fewer machine in either group falls short
    for name in plan:
        fewer = {**plan, name: plan[name] - 1}
        assert capacity(DUR, {AP_PC1: 3 * fewer["pc1"], PC2: fewer["pc2"],
                              TAIL: fewer["pc2"]})[0] < 24.0
    assert machines_for(DUR, [MachineGroup("pc1", 1, (AP_PC1,))], 1.0) is None


def test_advise_at_a_target_rate() -> None:
    a = advise(DUR, seed_like(), 15.0)
    assert a.rate_source == "target"
    tail = next(g for g in a.groups if g.phases == TAIL)
    assert tail.demanded == pytest.approx(15 * 960 / 3600)
    assert a.suggested_machines is not None and a.suggested_machines["pc2"] >= 4
    assert a.to_json()["bottleneck_group"] == "c1+c2+fin"


def test_observed_rate() -> None:
    now = 10_000.0
    assert observed_rate([now - 3000, now - 1800, now - 600], now, 3600) == pytest.approx(3.0)
    assert observed_rate([now - 600, now - 300], now, 3600, since=now - 1200) == \
        pytest.approx(6.0)
    assert observed_rate([now - 600], now, 3600) is None


def test_groups_from_workers() -> None:
    groups = groups_from_workers([("a", [{P.AP, P.PC1}] * 2), ("b", [{P.PC1, P.AP}] * 2),
                                  ("c", [{P.PC2}, {P.C1, P.C2, P.FIN}])])
    assert [(g.name, g.count) for g in groups] == [("ap+pc1", 2), ("pc2+c1+c2+fin", 1)]
