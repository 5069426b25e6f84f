"""The claim policy, pure: pipeline-end first, home, urgent, then miners by virtual time
with deals strictly before CC; and start-time fair queuing shares slot time by weight."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_topology import Lane, Names, Phase
from pool_worker.claimer import candidate_queues, phase_of_queue, slot_lanes
from pool_worker.policy import CLOCK, Lanes, charged, claim_order, miner_order, slot_order

N = Names("ns")
A, B = "t01000", "t01001"


def lanes(phase: Phase = Phase.AP, miners: tuple[str, ...] = (A, B)) -> Lanes:
    [got] = slot_lanes(N, "w1", {phase}, miners)
    return got


def q(phase: str, lane: str, miner: str) -> str:
    return f"ns.q.{phase}.{lane}.{miner}"


def test_every_queue_of_a_slot_pipeline_end_first() -> None:
    assert candidate_queues(N, "w1", {Phase.PC1, Phase.C2}, [A]) == [
        "ns.q.c2.urgent", q("c2", "deal", A), q("c2", "cc", A),
        "ns.w.w1.pc1", "ns.q.pc1.urgent", q("pc1", "deal", A), q("pc1", "cc", A)]


def test_home_then_urgent_then_the_miner_behind_on_slot_time() -> None:
    ln = lanes(Phase.PC1)
    ready = {"ns.w.w1.pc1": 1, "ns.q.pc1.urgent": 1, q("pc1", "cc", A): 1,
             q("pc1", "deal", B): 1, q("pc1", "cc", B): 1}
    order = claim_order(ln, {A: 5.0, B: 1.0}, ready)
    assert order == ["ns.w.w1.pc1", "ns.q.pc1.urgent", q("pc1", "deal", B),
                     q("pc1", "cc", B), q("pc1", "cc", A)]


def test_a_miners_deals_go_strictly_before_its_cc_and_pool_wide_when_asked() -> None:
    ln = lanes()
    ready = {q("ap", "cc", A): 3, q("ap", "deal", A): 1, q("ap", "cc", B): 1,
             q("ap", "deal", B): 1}
    assert claim_order(ln, {A: 0.0, B: 9.0}, ready) == [
        q("ap", "deal", A), q("ap", "cc", A), q("ap", "deal", B), q("ap", "cc", B)]
    assert claim_order(ln, {A: 0.0, B: 9.0}, ready, deals_first=True) == [
        q("ap", "deal", A), q("ap", "deal", B), q("ap", "cc", A), q("ap", "cc", B)]


def test_empty_queues_are_never_asked_and_phases_go_pipeline_end_first() -> None:
    per = slot_lanes(N, "w1", {Phase.AP, Phase.C2}, [A])
    ready = {q("ap", "cc", A): 2, q("c2", "cc", A): 1}
    assert slot_order(per, {}, ready) == [q("c2", "cc", A), q("ap", "cc", A)]
    assert slot_order(per, {}, {}) == []


def test_equal_miners_alternate_instead_of_the_first_name_winning() -> None:
    rng = random.Random(1)
    firsts = {miner_order({}, [A, B], rng)[0] for _ in range(50)}
    assert firsts == {A, B}


def test_a_miner_back_from_idle_starts_at_the_clock_without_banked_credit() -> None:
    vt: dict[str, float] = {}
    for _ in range(10):  # A alone for a while: the clock follows its start tags
        charged(vt, A, 10.0, 1.0)
    assert (vt[A], vt[CLOCK]) == (100.0, 90.0)
    # B comes back: it starts at the clock, not at 0, so it gets one turn, then alternates
    assert miner_order(vt, [A, B])[0] == B
    assert charged(vt, B, 10.0, 1.0) == 100.0
    turns = []
    for _ in range(6):
        m = miner_order(vt, [A, B], random.Random(0))[0]
        charged(vt, m, 10.0, 1.0)
        turns.append(m)
    assert sorted(turns) == [A, A, A, B, B, B]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.5, max_value=4.0), min_size=2, max_size=4),
       st.lists(st.floats(min_value=1.0, max_value=30.0), min_size=4, max_size=4))
def test_always_backlogged_miners_share_slot_time_by_weight(weights: list[float],
                                                            durations: list[float]) -> None:
    """One slot, every miner always has work: after many claims, each miner's slot time
    over the total is its weight over the sum, within one job's worth."""
    miners = [f"t0{1000 + i}" for i in range(len(weights))]
    weight = dict(zip(miners, weights, strict=True))
    cost = {m: durations[i % len(durations)] for i, m in enumerate(miners)}
    vt: dict[str, float] = {}
    used = dict.fromkeys(miners, 0.0)
    rng = random.Random(0)
    for _ in range(3000):
        m = miner_order(vt, miners, rng)[0]
        charged(vt, m, cost[m], weight[m])
        used[m] += cost[m]
    total, wsum = sum(used.values()), sum(weights)
    for m in miners:
        assert abs(used[m] / total - weight[m] / wsum) < 0.02 + max(durations) / total


def test_phase_of_queue() -> None:
    assert phase_of_queue(N, "ns.q.pc2.urgent") is Phase.PC2
    assert phase_of_queue(N, q("ap", "deal", A)) is Phase.AP
    assert phase_of_queue(N, "ns.w.host-1.fin") is Phase.FIN
    assert N.miner_queue(Phase.AP, Lane.CC, A) == q("ap", "cc", A)


def test_a_sector_is_charged_its_whole_pipeline_when_it_starts() -> None:
    from pool_worker.policy import claim_cost

    durations = {p: float(i + 1) for i, p in enumerate(Phase)}
    assert claim_cost(Phase.AP, 2048, lambda p, _s: durations[p]) == 21.0
    assert claim_cost(Phase.PC1, 2048, lambda p, _s: durations[p]) == 0.0
