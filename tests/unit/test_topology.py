from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from broker_topology import (
    LOCAL_PHASES,
    PIPELINE,
    Lane,
    Names,
    Phase,
    PoolSettings,
    miner_topology,
    parse_routing_key,
    pool_topology,
    routing_key,
    worker_topology,
)
from broker_topology.declare import to_definitions
from broker_topology.topology import Topology


def settings(**values: Any) -> PoolSettings:
    """PoolSettings from raw values (durations as text), as the environment gives them."""
    return PoolSettings(**values)


S = settings(namespace="ns1", aging_deal="1h", aging_cc="4h", locality_wait="10m")


def queues(topo: Topology) -> dict[str, dict[str, Any]]:
    return {q.name: q.arguments for q in topo.queues}


def test_every_name_carries_the_namespace() -> None:
    topo = pool_topology(S) + worker_topology(S, "w1", frozenset(Phase)) + miner_topology(
        S, "t01000")
    names = [q.name for q in topo.queues] + [e.name for e in topo.exchanges]
    assert names and all(n.startswith("ns1.") for n in names)


def test_every_pool_queue_is_quorum_with_explicit_delivery_limit() -> None:
    for name, args in queues(pool_topology(S)).items():
        assert args["x-queue-type"] == "quorum", name
        assert isinstance(args["x-delivery-limit"], int), name
        if "x-dead-letter-exchange" in args:
            # at-least-once dead-lettering only works with reject-publish overflow
            assert args["x-dead-letter-strategy"] == "at-least-once"
            assert args["x-overflow"] == "reject-publish"


def test_a_miners_deal_and_cc_lanes_age_into_urgent_and_urgent_ends_in_poison() -> None:
    n = Names("ns1")
    topo = pool_topology(S) + miner_topology(S, "t01000")
    q = queues(topo)
    deal, cc = (n.miner_queue(Phase.PC1, lane, "t01000") for lane in (Lane.DEAL, Lane.CC))
    assert q[deal]["x-message-ttl"] == 3600_000
    assert q[cc]["x-message-ttl"] == 4 * 3600_000
    assert q[deal]["x-dead-letter-exchange"] == n.escalate
    assert q[deal]["x-queue-type"] == "quorum"
    urgent = q[n.pool_queue(Phase.PC1, Lane.URGENT)]
    assert "x-message-ttl" not in urgent and urgent["x-dead-letter-exchange"] == n.poison
    bindings = {(b.source, b.destination, b.routing_key) for b in topo.bindings}
    assert (n.escalate, n.pool_queue(Phase.PC1, Lane.URGENT), "*.pc1.*.*") in bindings
    assert (n.jobs, cc, "*.pc1.cc.t01000") in bindings


def test_worker_queues_only_for_data_bound_phases_and_fall_back_to_pool() -> None:
    n = Names("ns1")
    topo = worker_topology(S, "w1", frozenset({Phase.AP, Phase.PC1, Phase.C2, Phase.FIN}))
    assert set(queues(topo)) == {n.worker_queue("w1", Phase.PC1), n.worker_queue("w1", Phase.FIN)}
    args = queues(topo)[n.worker_queue("w1", Phase.PC1)]
    assert args["x-queue-type"] == "classic" and args["x-max-priority"] == 2
    assert args["x-dead-letter-exchange"] == n.jobs
    assert args["x-message-ttl"] == 600_000
    assert args["x-expires"] > 4 * args["x-message-ttl"]
    assert {b.routing_key for b in topo.bindings} == {"w1.pc1.*.*", "w1.fin.*.*"}


def test_local_exchange_falls_back_to_jobs_and_delays_return_through_it() -> None:
    n = Names("ns1")
    topo = pool_topology(S)
    local = next(e for e in topo.exchanges if e.name == n.local)
    assert local.arguments == {"alternate-exchange": n.jobs}
    delay_q = queues(topo)[n.delay_queue(30)]
    assert delay_q["x-message-ttl"] == 30_000 and delay_q["x-dead-letter-exchange"] == n.local


def test_pool_and_miner_have_queues_for_every_phase_and_lane() -> None:
    n = Names("ns1")
    pool = set(queues(pool_topology(S)))
    mine = set(queues(miner_topology(S, "t01000")))
    for phase in PIPELINE:
        assert n.pool_queue(phase, Lane.URGENT) in pool
        for lane in (Lane.DEAL, Lane.CC):
            assert n.miner_queue(phase, lane, "t01000") in mine
    assert {Phase.PC1, Phase.PC2, Phase.C1, Phase.FIN} == LOCAL_PHASES


def test_definitions_export_lists_everything() -> None:
    topo = pool_topology(S)
    d = to_definitions(topo)
    assert len(d["queues"]) == len(topo.queues)
    assert len(d["bindings"]) == len(topo.bindings)
    assert all(q["durable"] and q["vhost"] == "/" for q in d["queues"])


def test_routing_keys_round_trip() -> None:
    key = routing_key("w1", Phase.PC2, Lane.DEAL, "t01000")
    assert key == "w1.pc2.deal.t01000"
    assert parse_routing_key(key) == ("w1", Phase.PC2, Lane.DEAL, "t01000")


def test_settings_reject_bad_values_naming_the_key() -> None:
    with pytest.raises(ValidationError, match="aging_deal"):
        settings(aging_deal="soon")
    with pytest.raises(ValidationError, match="worker_queue_expires"):
        settings(locality_wait="1h", worker_queue_expires="2h")
    with pytest.raises(ValidationError, match="namespace"):
        PoolSettings(namespace="bad name")
