from __future__ import annotations

from broker_topology import Lane, Names, Phase
from pool_worker.claimer import candidate_queues, first_nonempty, phase_of_queue

N = Names("ns")


def test_claim_order_is_pipeline_end_first_then_own_urgent_deal_cc() -> None:
    order = candidate_queues(N, "w1", {Phase.PC1, Phase.C2, Phase.PC2})
    assert order == [
        "ns.q.c2.urgent", "ns.q.c2.deal", "ns.q.c2.cc",
        "ns.w.w1.pc2", "ns.q.pc2.urgent", "ns.q.pc2.deal", "ns.q.pc2.cc",
        "ns.w.w1.pc1", "ns.q.pc1.urgent", "ns.q.pc1.deal", "ns.q.pc1.cc",
    ]


def test_first_nonempty_respects_order() -> None:
    order = candidate_queues(N, "w1", {Phase.PC1})
    counts = {N.pool_queue(Phase.PC1, Lane.CC): 4, N.pool_queue(Phase.PC1, Lane.DEAL): 1}
    assert first_nonempty(order, counts) == "ns.q.pc1.deal"
    assert first_nonempty(order, {}) is None


def test_phase_of_queue() -> None:
    assert phase_of_queue(N, "ns.q.pc2.urgent") is Phase.PC2
    assert phase_of_queue(N, "ns.w.host-1.fin") is Phase.FIN
