"""The in-memory broker twin: RabbitMQ 3.10 semantics, deterministic (threaded=False and a
ManualClock) except the one test of the pumping thread."""

from __future__ import annotations

import threading
from typing import Any

import pika.exceptions
import pytest

from broker_topology.errors import BrokerUnreachable, DeliveryLost, TopologyMismatch, Unroutable
from broker_topology.memory import ManualClock, MemoryBroker, MemoryTransport
from broker_topology.topology import Binding, Exchange, Queue, Topology
from broker_topology.transport import Delivery, Session, Transport

QQ = {"x-queue-type": "quorum"}


def make(*, exchanges: tuple[Exchange, ...] = (), queues: tuple[Queue, ...] = (),
         bindings: tuple[Binding, ...] = ()) -> tuple[MemoryBroker, ManualClock]:
    clock = ManualClock()
    broker = MemoryBroker(clock)
    broker.declare(Topology(exchanges, queues, bindings))
    return broker, clock


def bodies(broker: MemoryBroker, queue: str) -> list[bytes]:
    return [b for b, _ in broker.ready(queue)]


def started(broker: MemoryBroker, **kwargs: Any) -> MemoryTransport:
    return broker.transport("t", threaded=False, **kwargs).start()


def run(t: MemoryTransport, fn: Any) -> Any:
    """One call on the transport's "I/O thread", pumped to completion."""
    fut = t.call(fn)
    t.pump()
    return fut.result(0)


def get(t: MemoryTransport, queue: str, key: str = "slot") -> tuple[Delivery, bytes]:
    got = run(t, lambda s: s.get(key, queue))
    assert got is not None, f"nothing in {queue}"
    return got  # type: ignore[no-any-return]


# -- routing -------------------------------------------------------------------------------
def test_topic_direct_fanout_and_default_exchange_route_like_rabbitmq() -> None:
    broker, _ = make(
        exchanges=(Exchange("top", "topic"), Exchange("dir", "direct"), Exchange("fan", "fanout")),
        queues=(Queue("a"), Queue("b"), Queue("c")),
        bindings=(Binding("top", "a", "*.pc1.#"), Binding("top", "b", "#"),
                  Binding("dir", "a", "k"), Binding("fan", "b"), Binding("fan", "c")))
    assert broker.publish("top", "pool.pc1", b"") == ["a", "b"]  # '#' matches zero words
    assert broker.publish("top", "pool.pc1.deal.m", b"") == ["a", "b"]
    assert broker.publish("top", "pool.pc2.deal", b"") == ["b"]
    assert broker.publish("top", "pc1", b"") == ["b"]  # '*' needs a word
    assert broker.publish("dir", "k", b"") == ["a"]
    assert broker.publish("dir", "k2", b"") == []
    assert broker.publish("fan", "anything", b"") == ["b", "c"]
    assert broker.publish("", "c", b"") == ["c"]
    assert broker.publish("", "nope", b"") == []


def test_headers_exchange_matches_all_or_any_and_ignores_x_keys() -> None:
    broker, _ = make(
        exchanges=(Exchange("h", "headers"),), queues=(Queue("all"), Queue("any")),
        bindings=(Binding("h", "all", "", {"x-match": "all", "delay": "5s", "x-r": "e"}),
                  Binding("h", "any", "", {"x-match": "any", "a": 1, "b": 2})))
    assert broker.publish("h", "", b"", headers={"delay": "5s"}) == ["all"]
    assert broker.publish("h", "", b"", headers={"delay": "6s"}) == []
    assert broker.publish("h", "", b"", headers={"b": 2}) == ["any"]
    assert broker.publish("h", "", b"", headers={"a": 2, "delay": "5s"}) == ["all"]


def test_alternate_exchange_takes_what_no_queue_does_and_mandatory_raises_after_it() -> None:
    broker, _ = make(
        exchanges=(Exchange("jobs", "topic"), Exchange("local", "topic",
                                                       {"alternate-exchange": "jobs"})),
        queues=(Queue("pool"), Queue("w1")),
        bindings=(Binding("jobs", "pool", "*.pc2.*"), Binding("local", "w1", "w1.#")))
    assert broker.publish("local", "w1.pc2.deal", b"home") == ["w1"]
    assert broker.publish("local", "w2.pc2.deal", b"away") == ["pool"]
    with pytest.raises(Unroutable):
        broker.publish("local", "w2.c2.deal", b"", mandatory=True)
    t = started(broker)
    with pytest.raises(Unroutable):
        run(t, lambda s: s.publish("local", "w2.c2.deal", b""))
    run(t, lambda s: s.publish("local", "w2.c2.deal", b"", confirm=False))  # silently lost
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        run(t, lambda s: s.publish("missing", "k", b""))
    assert exc.value.reply_code == 404
    assert bodies(broker, "pool") == [b"away"]


# -- declare -------------------------------------------------------------------------------
def test_declare_is_idempotent_and_refuses_other_arguments() -> None:
    topo = Topology((Exchange("x", "topic"),), (Queue("q", {**QQ, "x-delivery-limit": 2}),),
                    (Binding("x", "q", "#"),))
    broker, _ = make()
    t = started(broker, on_connect=lambda s: s.declare(topo))
    broker.publish("x", "k", b"m")
    run(t, lambda s: s.declare(topo))
    assert broker.ready_count("q") == 1 and broker.queue_names() == ["q"]
    with pytest.raises(TopologyMismatch, match="queue q"):
        broker.declare(Topology(queues=(Queue("q", {**QQ, "x-delivery-limit": 3}),)))
    with pytest.raises(TopologyMismatch):
        broker.declare(Topology(queues=(Queue("p", {**QQ, "x-max-priority": 2}),)))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        broker.declare(Topology(exchanges=(Exchange("x", "direct"),)))


# -- quorum queues: delivery count and limit -----------------------------------------------
def test_quorum_counts_returns_and_dead_letters_past_the_delivery_limit() -> None:
    broker, _ = make(
        exchanges=(Exchange("dlx", "fanout"),),
        queues=(Queue("q", {**QQ, "x-delivery-limit": 2, "x-dead-letter-exchange": "dlx"}),
                Queue("dead", QQ)),
        bindings=(Binding("dlx", "dead"),))
    t = started(broker)
    broker.publish("", "q", b"job", headers={"a": 1})
    seen = []
    for _ in range(3):
        d, _body = get(t, "q")
        seen.append((d.delivery_count, d.redelivered))
        assert broker.unacked_count("q") == 1
        run(t, lambda s, d=d: s.reject(d, requeue=True))
    assert seen == [(0, False), (1, True), (2, True)]  # limit + 1 deliveries
    assert broker.ready_count("q") == 0 and broker.unacked_count("q") == 0
    [(body, headers)] = broker.ready("dead")
    assert body == b"job" and headers["a"] == 1 and headers["x-delivery-count"] == 0
    [death] = headers["x-death"]
    assert {k: death[k] for k in ("reason", "queue", "count", "exchange", "routing-keys")} == {
        "reason": "delivery_limit", "queue": "q", "count": 1, "exchange": "",
        "routing-keys": ["q"]}
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == "q"


def test_reject_without_requeue_dead_letters_as_rejected_or_drops() -> None:
    broker, _ = make(
        exchanges=(Exchange("dlx", "fanout"),),
        queues=(Queue("q", {"x-dead-letter-exchange": "dlx"}), Queue("dead"), Queue("plain")),
        bindings=(Binding("dlx", "dead"),))
    t = started(broker)
    broker.publish("", "q", b"1")
    broker.publish("", "plain", b"2")
    for queue in ("q", "plain"):
        d, _ = get(t, queue)
        run(t, lambda s, d=d: s.reject(d, requeue=False))
    [(_, headers)] = broker.ready("dead")
    assert headers["x-death"][0]["reason"] == "rejected"
    assert "x-delivery-count" not in headers  # classic queues do not count
    assert broker.dropped == [("plain", "rejected", b"2")]


def test_x_death_counts_per_queue_and_reason_and_cycles_without_reject_drop() -> None:
    broker, clock = make(
        exchanges=(Exchange("back", "fanout"), Exchange("self", "fanout")),
        queues=(Queue("loop", {"x-dead-letter-exchange": "back"}),
                Queue("ttl", {"x-message-ttl": 1000, "x-dead-letter-exchange": "self"})),
        bindings=(Binding("back", "loop"), Binding("self", "ttl")))
    t = started(broker)
    broker.publish("", "loop", b"m")
    for _ in range(3):  # rejected back into its own queue: no cycle, the count grows
        d, _ = get(t, "loop")
        run(t, lambda s, d=d: s.reject(d, requeue=False))
    [(_, headers)] = broker.ready("loop")
    # one entry per (queue, reason, exchange): first published to "", then via "back"
    assert [(x["queue"], x["reason"], x["exchange"], x["count"]) for x in headers["x-death"]
            ] == [("loop", "rejected", "back", 2), ("loop", "rejected", "", 1)]
    assert headers["x-first-death-exchange"] == ""
    broker.publish("", "ttl", b"cycle")
    clock.advance(5)
    assert broker.ready_count("ttl") == 0
    assert broker.dropped == [("ttl", "expired", b"cycle")]


# -- TTL, x-expires ------------------------------------------------------------------------
def test_ttl_chain_expires_against_the_clock_with_x_death_history() -> None:
    broker, clock = make(
        exchanges=(Exchange("jobs", "topic"), Exchange("esc", "topic")),
        queues=(Queue("w", {"x-message-ttl": 1000, "x-dead-letter-exchange": "jobs"}),
                Queue("deal", {**QQ, "x-message-ttl": 2000, "x-dead-letter-exchange": "esc"}),
                Queue("urgent", QQ)),
        bindings=(Binding("jobs", "deal", "*.pc2.deal.*"), Binding("esc", "urgent", "#")))
    broker.publish("", "w", b"j")  # default exchange: routing key = queue name
    clock.advance(0.999)
    assert bodies(broker, "w") == [b"j"]
    clock.advance(0.001)
    assert broker.ready_count("w") == 0 and broker.ready_count("deal") == 0  # rk "w": no route
    assert broker.dropped == [("w", "expired", b"j")]
    broker.publish("", "w", b"k")
    # rk is kept by dead-lettering: route by a queue-named key through a topic binding
    broker.declare(Topology(bindings=(Binding("jobs", "deal", "w"),)))
    broker.advance(2.5)  # w died at 2.0, so deal's 2 s count from then
    assert bodies(broker, "deal") == [b"k"]
    broker.advance(0.5)
    [(_, headers)] = broker.ready("urgent")
    assert [(x["queue"], x["reason"], x["exchange"]) for x in headers["x-death"]] == [
        ("deal", "expired", "jobs"), ("w", "expired", "")]
    assert headers["x-first-death-queue"] == "w"


def test_unacked_messages_never_expire_but_a_late_requeue_dead_letters_at_once() -> None:
    broker, clock = make(
        exchanges=(Exchange("dlx", "fanout"),),
        queues=(Queue("w", {"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"}),
                Queue("pool")),
        bindings=(Binding("dlx", "pool"),))
    t = started(broker)
    broker.publish("", "w", b"held")
    get(t, "w")
    clock.advance(5)
    assert broker.unacked_count("w") == 1 and broker.ready_count("pool") == 0
    broker.disconnect(t)
    assert broker.ready_count("w") == 0 and bodies(broker, "pool") == [b"held"]


def test_x_expires_deletes_an_unused_queue_with_its_messages() -> None:
    broker, clock = make(queues=(Queue("w", {"x-expires": 10_000, "x-message-ttl": 60_000,
                                              "x-dead-letter-exchange": ""}),))
    t = started(broker)
    broker.publish("", "w", b"m")
    clock.advance(9)
    assert run(t, lambda s: s.get("slot", "w")) is not None  # a get renews the lease
    clock.advance(9.5)
    assert broker.queue_names() == ["w"]
    clock.advance(1)
    assert broker.queue_names() == [] and broker.dropped == []
    assert run(t, lambda s: s.ready_count("w")) == 0


# -- priorities ----------------------------------------------------------------------------
def test_classic_priority_queue_is_strict_and_fifo_within_a_priority_quorum_is_fifo() -> None:
    broker, _ = make(queues=(Queue("c", {"x-max-priority": 2}), Queue("q", QQ)))
    for body, prio in [(b"cc1", 0), (b"deal1", 1), (b"urgent", 2), (b"none", None),
                       (b"deal2", 1), (b"over", 9)]:
        broker.publish("", "c", body, priority=prio)
        broker.publish("", "q", body, priority=prio)
    assert bodies(broker, "c") == [b"urgent", b"over", b"deal1", b"deal2", b"cc1", b"none"]
    assert bodies(broker, "q") == [b"cc1", b"deal1", b"urgent", b"none", b"deal2", b"over"]
    t = started(broker)
    d, body = get(t, "c")
    run(t, lambda s: s.reject(d, requeue=True))
    assert body == b"urgent" and bodies(broker, "c")[0] == b"urgent"  # back in its place


# -- connections, channels, stale handles --------------------------------------------------
def test_disconnect_requeues_bumps_generation_reruns_durable_calls_and_on_connect() -> None:
    broker, _ = make(queues=(Queue("q", QQ), Queue("out", QQ)))
    connects: list[int] = []
    t = started(broker, on_connect=lambda s: connects.append(s.generation))
    broker.publish("", "q", b"m")
    d, _ = get(t, "q")
    acked = t.ack(d)
    published = t.publish("", "out", b"result")  # durable by default
    lost = t.publish("", "out", b"fast", durable=False)
    broker.disconnect(t)
    assert not t.connected.is_set()
    with pytest.raises(DeliveryLost):
        lost.result(0)
    [(_, headers)] = broker.ready("q")
    assert headers["x-delivery-count"] == 1
    t.pump()
    assert t.connected.is_set() and connects == [1, 2] and t.generation == 2
    with pytest.raises(DeliveryLost):  # asked before the drop, never ran
        acked.result(0)
    with pytest.raises(DeliveryLost):  # the stale handle cannot ack the redelivery
        run(t, lambda s: s.ack(d))
    published.result(0)
    assert bodies(broker, "out") == [b"result"]
    d2, _ = get(t, "q")
    assert d2.redelivered and d2.generation == 2 and d2.delivery_count == 1


def test_closed_channel_requeues_and_stale_or_unknown_tags_behave_like_pika() -> None:
    broker, _ = make(queues=(Queue("q"),))
    t = started(broker)
    for body in (b"a", b"b"):
        broker.publish("", "q", body)
    d1, _ = get(t, "q")
    broker.close_channel(t, "slot")
    assert broker.ready_count("q") == 2
    with pytest.raises(DeliveryLost):
        run(t, lambda s: s.ack(d1))
    d2, _ = get(t, "q")
    assert d2.incarnation == d1.incarnation + 1 and d2.redelivered
    d3, _ = get(t, "q")
    run(t, lambda s: s.ack(d2))
    run(t, lambda s: s.ack(d2))  # double ack: pika returns, the broker closes the channel
    assert any("unknown delivery tag" in e for e in broker.channel_errors)
    assert broker.ready_count("q") == 1 and broker.unacked_count("q") == 0
    with pytest.raises(DeliveryLost):
        run(t, lambda s: s.ack(d3))


def test_get_on_a_missing_queue_is_none_and_closes_that_channel() -> None:
    broker, _ = make(queues=(Queue("q"),))
    t = started(broker)
    broker.publish("", "q", b"m")
    get(t, "q")
    assert run(t, lambda s: s.get("slot", "gone")) is None
    assert broker.ready_count("q") == 1  # the channel's delivery went back
    assert run(t, lambda s: s.ready_count("gone")) == 0


def test_consumers_respect_prefetch_and_auto_ack_and_come_back_after_a_reconnect() -> None:
    broker, _ = make(queues=(Queue("q", QQ), Queue("events")))
    got: list[Delivery] = []
    seen: list[bytes] = []

    def on_connect(s: Session) -> None:
        s.consume("c", "q", lambda d, _b: got.append(d), prefetch=2)
        s.consume("e", "events", lambda _d, b: seen.append(b), auto_ack=True)

    t = started(broker, on_connect=on_connect)
    for i in range(3):
        broker.publish("", "q", b"%d" % i)
        broker.publish("", "events", b"%d" % i)
    assert t.pump() == 5
    assert len(got) == 2 and seen == [b"0", b"1", b"2"]
    assert broker.ready_count("events") == 0 and broker.unacked_count("events") == 0
    run(t, lambda s: s.ack(got[0]))
    assert len(got) == 3 and broker.unacked_count("q") == 2  # the ack freed a prefetch slot
    broker.disconnect(t)
    t.pump()
    assert [d.delivery_count for d in got[3:]] == [1, 1] and got[3].generation == 2


def test_private_queue_is_bound_exclusive_and_dies_with_its_connection() -> None:
    broker, _ = make(exchanges=(Exchange("bell", "topic"),))
    rung: list[bytes] = []
    t = started(broker, on_connect=lambda s: s.consume(
        "bell", "", lambda _d, b: rung.append(b), auto_ack=True, bindings=[("bell", "pc1")]))
    [private] = broker.queue_names()
    assert private.startswith("amq.gen-")
    other = broker.transport("other", threaded=False).start()
    assert run(other, lambda s: s.get("g", private)) is None
    assert any("405" in e for e in broker.channel_errors)
    assert broker.publish("bell", "pc1", b"ding") == [private]
    t.pump()
    assert rung == [b"ding"]
    broker.disconnect(t)
    assert broker.queue_names() == []
    t.pump()
    assert broker.queue_names() not in ([], [private])  # a new one, bound again
    assert broker.publish("bell", "pc1", b"dong") == broker.queue_names()


def test_a_consumer_that_raises_gets_its_message_dead_lettered() -> None:
    broker, _ = make(exchanges=(Exchange("dlx", "fanout"),),
                     queues=(Queue("q", {"x-dead-letter-exchange": "dlx"}), Queue("dead")),
                     bindings=(Binding("dlx", "dead"),))

    def boom(_d: Delivery, _b: bytes) -> None:
        raise ValueError("bad message")

    t = started(broker, on_connect=lambda s: s.consume("c", "q", boom))
    broker.publish("", "q", b"bad")
    t.pump()
    assert bodies(broker, "dead") == [b"bad"]


def test_fail_next_publish_nacks_or_loses_the_connection() -> None:
    broker, _ = make(queues=(Queue("q"),))
    t = started(broker)
    broker.fail_next_publish()
    with pytest.raises(Unroutable, match="nack"):
        run(t, lambda s: s.publish("", "q", b"1"))
    broker.fail_next_publish("", lose_connection=True)
    durable = t.publish("", "q", b"2")
    t.pump()
    assert not t.connected.is_set() and not durable.done()
    t.pump()
    durable.result(0)
    broker.fail_next_publish(lose_connection=True)
    lost = t.publish("", "q", b"3", durable=False)
    t.pump()
    with pytest.raises(DeliveryLost):
        lost.result(0)
    t.pump()
    assert bodies(broker, "q") == [b"2"] and t.generation == 3


def test_stop_flushes_calls_returns_deliveries_and_refuses_new_calls() -> None:
    broker, _ = make(queues=(Queue("q", QQ),))
    t = started(broker)
    broker.publish("", "q", b"m")
    get(t, "q")
    flushed = t.publish("", "q", b"n")
    t.stop()
    flushed.result(0)
    assert broker.ready_count("q") == 2 and not t.connected.is_set()
    with pytest.raises(BrokerUnreachable):
        t.call(lambda s: None).result(0)


def test_threaded_transport_pumps_calls_deliveries_and_ticks() -> None:
    broker = MemoryBroker()  # real clock
    broker.declare(Topology(queues=(Queue("q", QQ),)))
    delivered = threading.Event()
    ticks: list[int] = []

    def on_connect(s: Session) -> None:
        s.consume("c", "q", lambda d, _b: delivered.set())

    t: Transport = broker.transport("threaded", on_connect=on_connect,
                                    on_tick=lambda s: ticks.append(s.generation)).start(5)
    try:
        t.publish("", "q", b"m").result(2)
        assert delivered.wait(2) and t.connected.is_set()
        assert t.call(lambda s: s.ready_count("q")).result(2) == 0
        assert broker.unacked_count("q") == 1 and ticks
    finally:
        t.stop()
    assert broker.ready_count("q") == 1  # the stopped connection's delivery went back
