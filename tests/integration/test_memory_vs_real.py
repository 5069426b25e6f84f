"""The in-memory twin against the real RabbitMQ: one short scenario on the pool topology,
run through `Link` and through `MemoryTransport`, must leave the same messages in the same
queues with the same headers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from broker_topology import (
    Lane,
    Names,
    Phase,
    PoolSettings,
    connect_blocking,
    miner_topology,
    pool_topology,
)
from broker_topology.declare import delete
from broker_topology.errors import Unroutable
from broker_topology.link import Link
from broker_topology.memory import ManualClock, MemoryBroker
from broker_topology.messages import LANE_PRIORITY
from broker_topology.naming import delay_headers
from broker_topology.topology import Topology, worker_topology
from broker_topology.transport import Delivery, Session, Transport

pytestmark = pytest.mark.integration

HEADERS = ("x-delivery-count", "x-first-death-reason", "x-first-death-queue",
           "x-first-death-exchange", "delay")


def topology(settings: PoolSettings) -> Topology:
    return (pool_topology(settings) + worker_topology(settings, "w1", frozenset({Phase.PC2}))
            + miner_topology(settings, "m1"))


def summary(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers that matter, with pika's long ints as ints; x-death as a sorted list
    (3.10 does not keep it strictly by recency)."""
    out: dict[str, Any] = {k: int(v) if k == "x-delivery-count" else v
                           for k, v in headers.items() if k in HEADERS}
    out["x-death"] = sorted((d["queue"], d["reason"], int(d["count"]), d["exchange"],
                             tuple(d["routing-keys"])) for d in headers.get("x-death", []))
    return out


def scenario(t: Transport, settings: PoolSettings, wait: Callable[[float], None]
             ) -> dict[str, Any]:
    n = Names(settings.namespace)
    topo = topology(settings)
    local = n.worker_queue("w1", Phase.PC2)
    urgent = n.pool_queue(Phase.C2, Lane.URGENT)

    def do(fn: Callable[[Session], Any]) -> Any:
        return t.call(fn).result(10)

    def pub(exchange: str, key: str, body: bytes, **kwargs: Any) -> None:
        t.publish(exchange, key, body, **kwargs).result(10)

    def get(channel_key: str, queue: str) -> tuple[Delivery, bytes] | None:
        got: tuple[Delivery, bytes] | None = t.call(
            lambda s: s.get(channel_key, queue)).result(10)
        return got

    do(lambda s: s.declare(topo))
    do(lambda s: s.declare(topo))  # idempotent
    out: dict[str, Any] = {}
    pub(n.jobs, "pool.pc1.deal.m1", b"pool-deal")
    pub(n.jobs, "pool.pc1.cc.m1", b"pool-cc")
    for lane in (Lane.CC, Lane.URGENT, Lane.DEAL):
        pub(n.local, f"w1.pc2.{lane}.m1", f"local-{lane}".encode(), priority=LANE_PRIORITY[lane])
    pub(n.local, "w2.pc2.deal.m1", b"fallback")  # no queue for w2: the alternate exchange
    pub(n.delay, "w1.pc2.cc.m2", b"delayed", headers=delay_headers(1), priority=0)
    try:
        pub(n.jobs, "pool.nophase.deal.m1", b"lost")
        out["unroutable"] = False
    except Unroutable:
        out["unroutable"] = True
    pub(n.jobs, "pool.c2.urgent.m1", b"poison-me")
    counts = []
    while (got := get("slot", urgent)) is not None:
        counts.append(got[0].delivery_count)
        t.reject(got[0], requeue=True).result(10)
    out["delivery_counts"] = counts

    waited = 0.0  # the delay queue's TTL, and dead-lettering (asynchronous on 3.10)
    while not (do(lambda s: s.ready_count(local)) == 4
               and do(lambda s: s.ready_count(n.poison_queue)) == 1):
        assert waited < 15, "the delayed or poisoned message never arrived"
        wait(0.1)
        waited += 0.1
    for q in sorted(q.name for q in topo.queues):
        drained = []
        while (got := get("drain", q)) is not None:
            d, body = got
            drained.append((body, d.exchange, d.routing_key, d.redelivered,
                            summary(d.headers)))
            t.ack(d).result(10)
        if drained:
            out[q] = drained
    return out


def test_twin_and_rabbitmq_leave_the_same_messages_in_the_same_queues(
        services: tuple[str, str]) -> None:
    amqp, red = services
    settings = PoolSettings(amqp_url=amqp, redis_url=red, namespace=f"t{uuid.uuid4().hex[:10]}",
                            delay_buckets=(1,), delivery_limit=2, locality_wait=60,
                            worker_queue_expires=300)
    fatal: list[BaseException] = []
    link = Link(amqp, name="test-twin-vs-real", on_fatal=fatal.append).start(wait_s=10)
    try:
        real = scenario(link, settings, time.sleep)
    finally:
        link.stop()
        conn = connect_blocking(amqp, "test-teardown")
        try:
            delete(conn, topology(settings))
        finally:
            conn.close()
    assert not fatal

    clock = ManualClock()
    twin_link = MemoryBroker(clock).transport("twin").start(wait_s=5)
    try:
        twin = scenario(twin_link, settings, clock.advance)
    finally:
        twin_link.stop()

    n = Names(settings.namespace)
    # What RabbitMQ did, so a change on both sides cannot pass unnoticed.
    assert real["unroutable"] is True and real["delivery_counts"] == [0, 1, 2]
    assert [m[0] for m in real[n.worker_queue("w1", Phase.PC2)]] == [
        b"local-urgent", b"local-deal", b"local-cc", b"delayed"]
    assert [m[0] for m in real[n.miner_queue(Phase.PC2, Lane.DEAL, "m1")]] == [b"fallback"]
    [poisoned] = real[n.poison_queue]
    assert poisoned[4]["x-first-death-reason"] == "delivery_limit"
    assert twin == real
