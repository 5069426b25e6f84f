"""The simulator: deterministic, sound (one job per slot, every sector done), and the
policies' effects it exists to show (pooled beats static, deals first, weighted shares)."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

import pytest

from broker_topology.errors import ConfigError
from broker_topology.messages import LOCAL_PHASES, Phase
from sealpool_sim.engine import simulate, split
from sealpool_sim.metrics import measure
from sealpool_sim.scenario import Scenario, parse, resolve
from sealpool_sim.trace import Trace

ALL = "ap,pc1,pc2,c1,c2,fin"


def small(**over: Any) -> Scenario:
    """3 miners at 70/20/10, 6 machines of 2 slots on shared storage, minute phases."""
    data: dict[str, Any] = {
        "name": "small", "seed": 7, "sector_size": "32GiB",
        "miners": [{"id": "t01000", "share": 0.7, "deals": 0.3},
                   {"id": "t01001", "share": 0.2, "deals": 0.3},
                   {"id": "t01002", "share": 0.1}],
        "machines": [{"name": "box", "count": 6, "storage": "shared",
                      "slots": [{"phases": ALL, "count": 2}]}],
        "durations": {"ap": "1m", "pc1": {"mean": "8m", "kind": "uniform", "pct": 20},
                      "pc2": "2m", "c1": "30s", "c2": "3m", "fin": "1m"},
        "chain": {"precommit": "30s", "seed": "2m", "commit": "30s"},
        "arrivals": {"backlog": 60},
    }
    data.update(over)
    return parse(data)


def test_same_seed_same_run_and_another_seed_differs() -> None:
    a, b = simulate(small()), simulate(small())
    assert [(r.slot, r.started_at, r.phase) for r in a.runs] == \
        [(r.slot, r.started_at, r.phase) for r in b.runs]
    c = simulate(small(), seed=99)
    assert [r.started_at for r in a.runs] != [r.started_at for r in c.runs]


@pytest.mark.parametrize("policy", ["pooled", "static"])
def test_no_slot_runs_two_jobs_and_every_sector_is_done(policy: str) -> None:
    trace = simulate(small(), policy)
    by_slot: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in trace.runs:
        by_slot[r.slot].append((r.started_at, r.finished_at))
        assert r.phase in next(s.phases for s in trace.slots if s.key == r.slot)
    for spans in by_slot.values():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end - 1e-9
    assert len(trace.sectors) == 60
    assert all(s.done_at is not None and not s.failed for s in trace.sectors)
    for s in trace.sectors:  # each sector ran every phase once, in pipeline order
        phases = [r.phase for r in sorted(trace.runs, key=lambda r: r.started_at)
                  if (r.miner, r.sector) == (s.miner, s.sector)]
        assert phases == list(Phase)


def test_utilization_on_a_hand_made_trace() -> None:
    from sealpool_sim.trace import Run, SectorFate, SlotInfo

    ap = frozenset({Phase.AP})
    trace = Trace([SlotInfo("a/0", "a", "g", ap, "a"), SlotInfo("b/0", "b", "g", ap, "b")],
                  weights={"t01000": 1.0})
    # r2 waits 0..2 while slot b idles; r3 waits 5..10 while both are busy.
    for slot, ready, start, end in (("a/0", 0, 0, 10), ("b/0", 0, 2, 10), ("a/0", 5, 10, 20)):
        trace.runs.append(Run("t01000", int(start), False, Phase.AP, 1, slot, ready, start,
                              end, "ok"))
    trace.sectors.append(SectorFate("t01000", 1, False, 0.0, 100.0, 20.0))
    g = measure(trace).groups[0]
    assert g.backlogged_s == pytest.approx(7.0)
    assert g.busy_s == pytest.approx(12.0)
    assert g.idle_slot_s == pytest.approx(2.0)
    assert g.utilization == pytest.approx(12 / 14)
    assert g.total_busy_s == pytest.approx(28.0)


def test_pooled_beats_static_on_an_uneven_load() -> None:
    pooled, static = measure(simulate(small(), "pooled")), measure(simulate(small(), "static"))
    assert pooled.makespan < static.makespan * 0.9
    assert pooled.groups[0].utilization is not None and static.groups[0].utilization
    assert pooled.groups[0].utilization > 0.99 > static.groups[0].utilization
    assert pooled.groups[0].idle_slot_s < static.groups[0].idle_slot_s


def test_no_cc_job_starts_a_phase_while_the_miners_deal_waits_for_it() -> None:
    trace = simulate(small())
    deals = [r for r in trace.runs if r.deal]
    assert deals
    for cc in (r for r in trace.runs if not r.deal):
        waiting = [d for d in deals if d.miner == cc.miner and d.phase == cc.phase
                   and d.ready_at < cc.started_at - 1e-6 < d.started_at - 2e-6]
        assert not waiting, (cc, waiting[:1])


def contended(depth: int) -> list[tuple[float, float]]:
    """(contended share, weight share) per miner: equal loads, weights 5:3:2."""
    spec = small(miners=[{"id": "t01000", "share": 1, "weight": 5},
                         {"id": "t01001", "share": 1, "weight": 3},
                         {"id": "t01002", "share": 1, "weight": 2}],
                 arrivals={"backlog": 240}, policy={"pool_depth": depth})
    m = measure(simulate(spec))
    assert m.contended_s > 3600
    return [(mu.contended_share or 0.0, mu.weight_share) for mu in m.miners]


def test_shares_follow_weights_under_contention_when_in_flight_equals_slots() -> None:
    for share, weight in contended(depth=1):
        assert abs(share - weight) <= 0.05, (share, weight)


def test_shares_follow_weights_under_contention_at_the_default_depth() -> None:
    for share, weight in contended(depth=2):
        assert abs(share - weight) <= 0.05, (share, weight)


def test_seed_003_pc1_is_busy_while_backlogged() -> None:
    spec = resolve("seed-003")
    m = measure(simulate(spec))
    pc1 = m.group(Phase.PC1)
    assert pc1.utilization is not None and pc1.utilization >= 0.99
    assert m.done == m.sectors == 900 and m.deadline_misses == 0


def test_split_keeps_the_total_and_one_each() -> None:
    assert split(12, [0.7, 0.2, 0.1]) == [8, 3, 1]
    assert sum(split(7, [1, 1, 1])) == 7
    assert split(2, [0.7, 0.2, 0.1]) == [2, 0, 0]


def test_poisson_arrivals_and_failures_still_finish() -> None:
    spec = small(arrivals={"backlog": 0, "rate": "30/h", "duration": "2h"},
                 failures={"pc2": 0.2})
    trace = simulate(spec)
    assert 30 < len(trace.sectors) < 100
    assert any(r.outcome == "temporary" for r in trace.runs)
    assert all(s.done_at is not None for s in trace.sectors)


def test_per_machine_storage_keeps_follow_ups_home() -> None:
    spec = small(machines=[{"name": "box", "count": 4, "slots": [{"phases": ALL,
                                                                  "count": 2}]}])
    trace = simulate(spec)
    worker = {s.key: s.worker for s in trace.slots}
    home: dict[tuple[str, int], str] = {}
    for r in sorted(trace.runs, key=lambda r: r.started_at):
        if r.phase is Phase.AP:
            home[(r.miner, r.sector)] = worker[r.slot]
        elif r.outcome == "ok" and r.phase in LOCAL_PHASES:
            assert worker[r.slot] == home[(r.miner, r.sector)]
        elif r.outcome == "needs_data":  # taken from the pool elsewhere: no files there
            assert worker[r.slot] != home[(r.miner, r.sector)]


@pytest.mark.parametrize(("over", "needle"), [
    ({"machines": [{"name": "box", "count": 1, "slots": [{"phases": "ap,pcx"}]}]},
     "machines.0.slots.0.phases"),
    ({"durations": {"ap": "1m"}}, "durations: no duration for pc1"),
    ({"arrivals": {"backlog": 0}}, "arrivals: no sectors"),
    ({"machines": [{"name": "box", "count": 1, "gpus": 1,
                    "slots": [{"phases": ALL, "count": 2}]}]}, "GPU"),
])
def test_bad_scenario_is_one_line_naming_the_key(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        small(**over)
    assert needle in str(err.value) and "\n" not in str(err.value)
