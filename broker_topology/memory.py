"""An in-memory RabbitMQ 3.10 for tests, as dramatiq ships a StubBroker and httpx a
MockTransport: `MemoryBroker` is the server, `MemoryTransport` the twin of `Link` (a
`Transport`), `MemorySession` the twin of `AmqpSession` (a `Session`).

Emulated, as measured on 3.10.8 (shared/research/rabbitmq-lab.md):
* exchanges direct, topic (`*`, `#`), fanout and headers (x-match all/any, x-* binding keys
  ignored unless all-with-x/any-with-x), the default exchange "", `alternate-exchange`;
* declare: idempotent; other queue arguments -> TopologyMismatch, as are quorum queues
  with `x-max-priority` or not durable; another exchange type -> ChannelClosedByBroker 406;
* quorum queues: FIFO, `x-delivery-count` on every delivery, +1 on every return (reject with
  requeue, channel or connection gone), dead-lettered with reason `delivery_limit` once it
  passes `x-delivery-limit` (limit+1 deliveries);
* classic queues: `x-max-priority` (highest first, FIFO within a priority), `redelivered`;
* `x-message-ttl` (expiry kept across requeues; an unacked message never expires) and
  `x-expires` (queue and messages dropped, no dead-lettering), both against `clock`;
* dead-lettering to `x-dead-letter-exchange` [with `x-dead-letter-routing-key`]: `x-death`
  entries per (queue, reason, exchange) with `count`, `x-first-death-*`, cycle drop;
* confirmed publishes are mandatory (Unroutable); a missing exchange closes the channel
  (ChannelClosedByBroker 404), as does basic.get on a missing queue (its unacked deliveries
  are requeued, like the real channel close); an unknown delivery tag closes the channel
  (406) without raising, as pika does; exclusive server-named queues for `consume(queue="")`.

Not emulated: exchange-to-exchange bindings, per-message `expiration`, x-max-length and
overflow, consumer_timeout, heartbeats, basic.nack, global QoS, consumer priorities, vhosts,
permissions, restarts. Consumers of one queue are served in pump order, not round-robin.
Time is `clock` (a ManualClock makes TTLs deterministic): expiry is checked on every
operation and on `advance()`; a dead-lettered copy counts its next TTL from the moment it
died, so one `advance()` shows where a chain of TTLs ends. `x-death` times are wall time.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import datetime
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pika.exceptions

from .errors import BrokerUnreachable, DeliveryLost, TopologyMismatch, Unroutable
from .link import CONNECTION_ERRORS
from .topology import Binding, Exchange, Topology
from .transport import Delivery, OnMessage, Session

__all__ = ["ManualClock", "MemoryBroker", "MemorySession", "MemoryTransport"]

log = logging.getLogger(__name__)
T = TypeVar("T")
TICK_S = 0.01
#: Deliveries one pump makes at most: a consumer that requeues for ever must not hang it.
MAX_DELIVERIES_PER_PUMP = 1000


class ManualClock:
    """A clock that moves only when told: `MemoryBroker(clock=ManualClock())`."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self.now += seconds


@dataclass
class _Message:
    body: bytes
    headers: dict[str, Any]
    exchange: str
    routing_key: str
    priority: int | None = None
    message_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    seq: int = 0
    expires_at: float | None = None
    delivery_count: int = 0
    redelivered: bool = False


@dataclass(eq=False)
class _Queue:
    name: str
    arguments: dict[str, Any]
    durable: bool
    last_used: float
    owner: MemoryTransport | None = None  # exclusive (server-named) queue
    ready: list[tuple[tuple[int, int], _Message]] = field(default_factory=list)
    deleted: bool = False

    @property
    def quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"

    def put(self, msg: _Message) -> None:
        top = int(self.arguments.get("x-max-priority", 0))
        level = min(msg.priority or 0, top) if top and not self.quorum else 0
        # Sorted by (-priority, arrival): a requeued message keeps its place.
        bisect.insort(self.ready, ((-level, msg.seq), msg), key=lambda e: e[0])

    def pop(self) -> _Message | None:
        return self.ready.pop(0)[1] if self.ready else None


@dataclass(eq=False)
class _Consumer:
    queue: _Queue
    on_message: OnMessage
    prefetch: int
    auto_ack: bool


@dataclass(eq=False)
class _Channel:
    key: str
    incarnation: int
    unacked: dict[int, tuple[_Queue, _Message]] = field(default_factory=dict)
    consumer: _Consumer | None = None
    next_tag: int = 1
    open: bool = True


def _topic_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _topic_match(rest, words[1:])


def _headers_match(args: dict[str, Any], headers: dict[str, Any]) -> bool:
    mode = str(args.get("x-match", "all"))
    pairs = [(k, v) for k, v in args.items()
             if k != "x-match" and (mode.endswith("-with-x") or not k.startswith("x-"))]
    hits = (k in headers and (v is None or headers[k] == v) for k, v in pairs)
    return any(hits) if mode.startswith("any") else all(hits)


def _is_cycle(queue: str, deaths: list[dict[str, Any]]) -> bool:
    """RabbitMQ drops a dead-letter back into a queue it already died in, unless a client
    rejected it somewhere in between (rabbit_dead_letter:is_cycle)."""
    for i, death in enumerate(deaths):
        if death.get("queue") == queue:
            return all(d.get("reason") != "rejected" for d in deaths[:i + 1])
    return False


def _closed(code: int, text: str) -> pika.exceptions.ChannelClosedByBroker:
    return pika.exceptions.ChannelClosedByBroker(code, text)


class MemoryBroker:
    """The server. Every method is thread-safe (one re-entrant lock); user callbacks run
    outside it."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or time.monotonic
        self._lock = threading.RLock()
        self._exchanges: dict[str, Exchange] = {}
        self._queues: dict[str, _Queue] = {}
        self._bindings: list[Binding] = []
        self._seq = itertools.count(1)
        self._transports: list[MemoryTransport] = []
        self._publish_faults: list[tuple[str | None, bool]] = []
        #: (queue, reason, body) of messages that died with nowhere to go.
        self.dropped: list[tuple[str, str, bytes]] = []
        #: Channel errors the broker raised (404, 405, 406...), oldest first.
        self.channel_errors: list[str] = []

    # -- tests: set-up, faults, inspection -------------------------------------------------
    def transport(self, name: str, *, on_connect: Callable[[Session], None] | None = None,
                  on_tick: Callable[[Session], None] | None = None,
                  threaded: bool = True) -> MemoryTransport:
        t = MemoryTransport(self, name, on_connect, on_tick, threaded)
        with self._lock:
            self._transports.append(t)
        return t

    def declare(self, topology: Topology) -> None:
        with self._op():
            self._declare(topology)

    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                headers: dict[str, Any] | None = None, priority: int | None = None,
                message_id: str | None = None, mandatory: bool = False) -> list[str]:
        """Inject a message as a client would; returns the queues it landed in."""
        with self._op():
            return self._publish(_Message(body, dict(headers or {}), exchange, routing_key,
                                          priority, message_id), mandatory=mandatory)

    def advance(self, seconds: float = 0.0) -> None:
        """Move a ManualClock on (0: only run due expiries)."""
        if seconds:
            if not isinstance(self.clock, ManualClock):
                raise TypeError("advance(seconds) needs MemoryBroker(clock=ManualClock())")
            self.clock.advance(seconds)
        with self._op():
            pass

    def disconnect(self, transport: MemoryTransport) -> None:
        """The connection is lost: its unacked messages go back to their queues, its
        exclusive queues go, pending non-durable calls fail with DeliveryLost; the
        transport reconnects (new generation, on_connect again) on its next pump."""
        with self._lock:
            self._drop(transport)
        transport._fail_non_durable()
        transport._wake.set()

    def close_channel(self, transport: MemoryTransport, key: str) -> None:
        """The broker closes one channel (consumer timeout, 406...): its deliveries are
        requeued; the transport reopens it (incarnation + 1) on its next pump."""
        with self._op():
            session = transport.session
            ch = session._channels.get(key) if session else None
            if session is not None and ch is not None:
                self._channel_error(session, ch, "406 PRECONDITION_FAILED - closed by test")
        transport._wake.set()

    def fail_next_publish(self, exchange: str | None = None, *,
                          lose_connection: bool = False) -> None:
        """The next publish (to `exchange`, or any) is nacked (Unroutable), or with
        `lose_connection` the connection drops before the broker has the message."""
        with self._lock:
            self._publish_faults.append((exchange, lose_connection))

    def ready(self, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
        """(body, headers as delivered) of the ready messages, in delivery order."""
        with self._op():
            q = self._queues[queue]
            return [(m.body, self._delivered_headers(q, m)) for _, m in q.ready]

    def ready_count(self, queue: str) -> int:
        with self._op():
            return len(self._queues[queue].ready)

    def unacked_count(self, queue: str) -> int:
        with self._op():
            q = self._queues[queue]
            return sum(1 for ch in self._channels() for uq, _ in ch.unacked.values()
                       if uq is q)

    def queue_names(self) -> list[str]:
        with self._op():
            return sorted(self._queues)

    def exchange_names(self) -> list[str]:
        with self._op():
            return sorted(self._exchanges)

    # -- internals (callers hold the lock) -----------------------------------------------
    @contextlib.contextmanager
    def _op(self) -> Iterator[None]:
        with self._lock:
            self._sweep()
            yield

    def _channels(self) -> Iterator[_Channel]:
        for t in self._transports:
            if t.session is not None and t.session.alive:
                yield from (ch for ch in t.session._channels.values() if ch.open)

    def _declare(self, topology: Topology) -> None:
        now = self.clock()
        for ex in topology.exchanges:
            old = self._exchanges.get(ex.name)
            if old is None:
                self._exchanges[ex.name] = ex
            elif (old.type, old.durable, old.arguments) != (ex.type, ex.durable, ex.arguments):
                raise _closed(406, f"PRECONDITION_FAILED - inequivalent exchange {ex.name}")
        for q in topology.queues:
            if q.arguments.get("x-queue-type") == "quorum" and (
                    "x-max-priority" in q.arguments or not q.durable):
                raise TopologyMismatch(f"queue {q.name}: quorum queues take no x-max-priority "
                                       "and must be durable (406)")
            old_q = self._queues.get(q.name)
            if old_q is None:
                self._queues[q.name] = _Queue(q.name, dict(q.arguments), q.durable, now)
            elif (old_q.arguments, old_q.durable) != (q.arguments, q.durable):
                raise TopologyMismatch(
                    f"queue {q.name} exists with other arguments ({old_q.arguments}); use the "
                    "same SEALPOOL_* topology settings everywhere, or delete the queue")
            else:
                old_q.last_used = now  # a redeclare renews x-expires
        for b in topology.bindings:
            self._bind(b)

    def _bind(self, b: Binding) -> None:
        if b.destination not in self._queues or b.source not in self._exchanges:
            raise _closed(404, f"NOT_FOUND - no exchange or queue for binding {b}")
        if b not in self._bindings:
            self._bindings.append(b)

    def _route(self, exchange: str, key: str, headers: dict[str, Any],
               seen: tuple[str, ...] = ()) -> list[_Queue]:
        if exchange == "":
            return [self._queues[key]] if key in self._queues else []
        ex = self._exchanges.get(exchange)
        if ex is None:
            return []
        names: dict[str, None] = {}
        for b in self._bindings:
            if b.source == exchange and (
                    ex.type == "fanout"
                    or (ex.type == "direct" and b.routing_key == key)
                    or (ex.type == "topic"
                        and _topic_match(b.routing_key.split("."), key.split(".")))
                    or (ex.type == "headers" and _headers_match(b.arguments, headers))):
                names[b.destination] = None
        alternate = ex.arguments.get("alternate-exchange")
        if not names and isinstance(alternate, str) and alternate not in seen:
            return self._route(alternate, key, headers, (*seen, exchange))
        return [self._queues[n] for n in names]

    def _publish(self, msg: _Message, *, mandatory: bool) -> list[str]:
        if msg.exchange and msg.exchange not in self._exchanges:
            raise _closed(404, f"NOT_FOUND - no exchange '{msg.exchange}' in vhost '/'")
        targets = self._route(msg.exchange, msg.routing_key, msg.headers)
        if not targets and mandatory:
            raise Unroutable(f"no queue bound for {msg.exchange} / {msg.routing_key}")
        for q in targets:
            self._enqueue(q, msg, self.clock())
        return [q.name for q in targets]

    def _enqueue(self, q: _Queue, msg: _Message, at: float) -> None:
        ttl = q.arguments.get("x-message-ttl")
        # Each queue holds its own copy: counts and expiry are per queue.
        q.put(_Message(msg.body, copy.deepcopy(msg.headers), msg.exchange, msg.routing_key,
                       msg.priority, msg.message_id, msg.reply_to, msg.correlation_id,
                       next(self._seq), None if ttl is None else at + ttl / 1000))
        for t in self._transports:
            t._wake.set()

    def _dead_letter(self, q: _Queue, msg: _Message, reason: str, at: float) -> None:
        dlx = q.arguments.get("x-dead-letter-exchange")
        if not isinstance(dlx, str) or (dlx and dlx not in self._exchanges):
            self.dropped.append((q.name, reason, msg.body))
            return
        headers = copy.deepcopy(msg.headers)
        deaths: list[dict[str, Any]] = list(headers.get("x-death") or [])
        old = next((d for d in deaths if (d.get("queue"), d.get("reason"), d.get("exchange"))
                    == (q.name, reason, msg.exchange)), None)
        if old is not None:  # one entry per (queue, reason, exchange), latest first
            deaths.remove(old)
            entry = {**old, "count": int(old.get("count", 0)) + 1}
        else:
            entry = {"count": 1, "reason": reason, "queue": q.name,
                     "time": datetime.datetime.now(datetime.UTC).replace(microsecond=0),
                     "exchange": msg.exchange, "routing-keys": [msg.routing_key]}
        headers["x-death"] = [entry, *deaths]
        if "x-first-death-reason" not in headers:
            headers |= {"x-first-death-exchange": msg.exchange,
                        "x-first-death-queue": q.name, "x-first-death-reason": reason}
        key = str(q.arguments.get("x-dead-letter-routing-key", msg.routing_key))
        targets = [t for t in self._route(dlx, key, headers)
                   if not _is_cycle(t.name, headers["x-death"])]
        if not targets:
            self.dropped.append((q.name, reason, msg.body))
        for t in targets:
            self._enqueue(t, _Message(msg.body, headers, dlx, key, msg.priority,
                                      msg.message_id, msg.reply_to, msg.correlation_id), at)

    def _return(self, q: _Queue, msg: _Message) -> None:
        """A delivery comes back unacked (reject with requeue, channel or connection gone)."""
        if q.deleted:
            return
        msg.redelivered = True
        if q.quorum:
            msg.delivery_count += 1
            limit = q.arguments.get("x-delivery-limit")
            if isinstance(limit, int) and msg.delivery_count > limit:
                self._dead_letter(q, msg, "delivery_limit", self.clock())
                return
        q.put(msg)
        for t in self._transports:
            t._wake.set()

    def _sweep(self) -> None:
        """Due TTL expiries and x-expires, repeated so that a chain of TTLs completes."""
        now = self.clock()
        changed = True
        while changed:
            changed = False
            for q in list(self._queues.values()):
                if any(ch.consumer.queue is q for ch in self._channels() if ch.consumer):
                    q.last_used = now  # in use: x-expires counts from the last consumer
                expires = q.arguments.get("x-expires")
                if expires is not None and q.last_used + expires / 1000 <= now:
                    self._delete_queue(q)  # messages and all: no dead-lettering
                    changed = True
                    continue
                due = [e for e in q.ready if e[1].expires_at is not None
                       and e[1].expires_at <= now]
                for e in due:
                    q.ready.remove(e)
                for _, m in sorted(due, key=lambda e: e[1].expires_at or 0.0):
                    self._dead_letter(q, m, "expired", m.expires_at or now)
                    changed = True

    def _delete_queue(self, q: _Queue) -> None:
        q.deleted = True
        self._queues.pop(q.name, None)
        self._bindings = [b for b in self._bindings if b.destination != q.name]

    def _delivered_headers(self, q: _Queue, msg: _Message) -> dict[str, Any]:
        return {**msg.headers, "x-delivery-count": msg.delivery_count} if q.quorum \
            else dict(msg.headers)

    def _deliver(self, session: MemorySession, ch: _Channel, q: _Queue, msg: _Message,
                 auto_ack: bool) -> tuple[Delivery, bytes]:
        tag, ch.next_tag = ch.next_tag, ch.next_tag + 1
        if not auto_ack:
            ch.unacked[tag] = (q, msg)
        q.last_used = self.clock()
        return Delivery(session.generation, ch.key, ch.incarnation, tag, msg.routing_key,
                        msg.exchange, msg.redelivered, self._delivered_headers(q, msg),
                        msg.reply_to, msg.correlation_id, msg.message_id), msg.body

    def _close_channel(self, ch: _Channel) -> None:
        if not ch.open:
            return
        ch.open = False
        for tag in sorted(ch.unacked):
            self._return(*ch.unacked[tag])
        ch.unacked.clear()
        consumer, ch.consumer = ch.consumer, None
        if consumer is not None and consumer.queue.owner is not None:
            self._delete_queue(consumer.queue)  # auto-delete: its only consumer is gone

    def _channel_error(self, session: MemorySession, ch: _Channel, text: str) -> None:
        log.warning("%s: channel %s closed by the broker: %s", session.transport.name,
                    ch.key, text)
        self.channel_errors.append(f"{session.transport.name}/{ch.key}: {text}")
        self._close_channel(ch)

    def _drop(self, transport: MemoryTransport) -> None:
        session = transport.session
        if session is None or not session.alive:
            return
        session.alive = False
        transport.connected.clear()
        for ch in session._channels.values():
            self._close_channel(ch)
        for q in [q for q in self._queues.values() if q.owner is transport]:
            self._delete_queue(q)

    def _publish_fault(self, exchange: str) -> bool | None:
        """None, or whether the connection is to be lost, for a publish to `exchange`."""
        for i, (target, lose) in enumerate(self._publish_faults):
            if target is None or target == exchange:
                del self._publish_faults[i]
                return lose
        return None


class MemorySession:
    """One connection of a MemoryTransport, as seen from its "I/O thread" (`Session`)."""

    def __init__(self, broker: MemoryBroker, transport: MemoryTransport,
                 generation: int) -> None:
        self.broker = broker
        self.transport = transport
        self.generation = generation
        self.alive = True
        self._channels: dict[str, _Channel] = {}
        self._incarnations: dict[str, int] = {}
        self._setups: dict[str, Callable[[_Channel], None]] = {}

    @contextlib.contextmanager
    def _op(self) -> Iterator[None]:
        with self.broker._op():
            if not self.alive:
                raise pika.exceptions.ConnectionClosedByBroker(
                    320, "CONNECTION_FORCED - connection lost")
            yield

    def channel(self, key: str, setup: Callable[[_Channel], None] | None = None) -> _Channel:
        """The channel named `key`, (re)opened on demand; `setup` runs on every open."""
        if setup is not None:
            self._setups[key] = setup
        ch = self._channels.get(key)
        if ch is None or not ch.open:
            self._incarnations[key] = self._incarnations.get(key, 0) + 1
            ch = self._channels[key] = _Channel(key, self._incarnations[key])
            if key in self._setups:
                try:
                    self._setups[key](ch)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    self.broker._channel_error(self, ch, str(exc))
                    raise
        return ch

    def reopen_channels(self) -> None:
        """Like AmqpSession.check_channels: channels with a consumer come back."""
        with self._op():
            for key, ch in list(self._channels.items()):
                if not ch.open:
                    if key in self._setups:
                        self.channel(key)
                    else:
                        del self._channels[key]

    def _live_channel_for(self, d: Delivery) -> _Channel:
        ch = self._channels.get(d.channel_key)
        if (d.generation != self.generation or ch is None or not ch.open
                or ch.incarnation != d.incarnation):
            raise DeliveryLost(f"delivery {d.tag} on {d.channel_key} is gone (requeued)")
        return ch

    def declare(self, topology: Topology) -> None:
        with self._op():
            self.broker._declare(topology)

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery, None)

    def reject(self, delivery: Delivery, requeue: bool) -> None:
        self._settle(delivery, requeue)

    def _settle(self, d: Delivery, requeue: bool | None) -> None:
        with self._op():
            ch = self._live_channel_for(d)
            held = ch.unacked.pop(d.tag, None)
            if held is None:  # pika does not raise: the channel just closes
                self.broker._channel_error(
                    self, ch, f"406 PRECONDITION_FAILED - unknown delivery tag {d.tag}")
            elif requeue:
                self.broker._return(*held)
            elif requeue is False and not held[0].deleted:
                self.broker._dead_letter(*held, "rejected", self.broker.clock())

    def get(self, channel_key: str, queue: str) -> tuple[Delivery, bytes] | None:
        with self._op():
            ch = self.channel(channel_key)
            q = self.broker._queues.get(queue)
            if q is None or (q.owner is not None and q.owner is not self.transport):
                code = "404 NOT_FOUND" if q is None else "405 RESOURCE_LOCKED"
                self.broker._channel_error(self, ch, f"{code} - queue '{queue}'")
                return None  # the real AmqpSession returns None for a gone queue too
            q.last_used = self.broker.clock()
            msg = q.pop()
            return None if msg is None else self.broker._deliver(self, ch, q, msg, False)

    def ready_count(self, queue: str) -> int:
        with self._op():
            q = self.broker._queues.get(queue)
            return 0 if q is None else len(q.ready)

    def consume(self, key: str, queue: str, on_message: OnMessage, *, prefetch: int = 0,
                auto_ack: bool = False, bindings: Sequence[tuple[str, str]] = ()) -> None:
        broker = self.broker

        def setup(ch: _Channel) -> None:
            q = broker._queues.get(queue)
            if not queue:
                q = _Queue(f"amq.gen-{next(broker._seq)}", {}, False, broker.clock(),
                           owner=self.transport)
                broker._queues[q.name] = q
            elif q is None:
                raise _closed(404, f"NOT_FOUND - no queue '{queue}' in vhost '/'")
            # the consumer first: a failed bind then closes the channel and its queue
            ch.consumer = _Consumer(q, on_message, prefetch, auto_ack)
            for exchange, routing_key in bindings if not queue else ():
                broker._bind(Binding(exchange, q.name, routing_key))

        with self._op():
            self.channel(key, setup)

    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                headers: dict[str, Any] | None = None, message_id: str | None = None,
                persistent: bool = True, confirm: bool = True, priority: int | None = None,
                reply_to: str | None = None, correlation_id: str | None = None) -> None:
        with self._op():
            lose = self.broker._publish_fault(exchange)
            if lose:
                self.broker.disconnect(self.transport)
                raise pika.exceptions.StreamLostError("connection lost during publish")
            if lose is False:
                raise Unroutable(f"broker refused {exchange} / {routing_key} (nack)")
            ch = self.channel("publish" if confirm else "publish-fast")
            msg = _Message(body, dict(headers or {}), exchange, routing_key, priority,
                           message_id, reply_to, correlation_id)
            try:
                self.broker._publish(msg, mandatory=confirm)
            except pika.exceptions.ChannelClosedByBroker as exc:
                self.broker._channel_error(self, ch, str(exc))
                if confirm:  # unconfirmed: the close comes later, the message is lost
                    raise


@dataclass
class _Call:
    fn: Callable[[Session], Any]
    future: Future[Any]
    durable: bool


class MemoryTransport:
    """The twin of `Link`. threaded=True: a thread pumps (calls, deliveries, on_tick) every
    ~10 ms or when woken; threaded=False: nothing runs until the test calls `pump()`, and
    `start()` connects on the calling thread."""

    def __init__(self, broker: MemoryBroker, name: str,
                 on_connect: Callable[[Session], None] | None,
                 on_tick: Callable[[Session], None] | None, threaded: bool) -> None:
        self.broker = broker
        self.name = name
        self.connected = threading.Event()
        self.generation = 0
        self.session: MemorySession | None = None
        #: What killed the I/O thread (Link would end the process).
        self.error: BaseException | None = None
        self._on_connect = on_connect
        self._on_tick = on_tick
        self._threaded = threaded
        self._calls: deque[_Call] = deque()
        self._calls_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._started = self._finished = False
        self._thread = threading.Thread(target=self._run, name=f"memory-{name}", daemon=True)

    # -- any thread -------------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> MemoryTransport:
        self._started = True
        if not self._threaded:
            self._connect()
            return self
        self._thread.start()
        limit = None if wait_s is None else time.monotonic() + wait_s
        while limit is not None and not self.connected.wait(TICK_S):
            if self.error is not None or time.monotonic() > limit:
                self.stop()
                raise BrokerUnreachable(f"{self.name}: not connected: {self.error!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if not self._threaded:
            self._shutdown()
        elif self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def call(self, fn: Callable[[Session], T], *, durable: bool = False) -> Future[T]:
        fut: Future[T] = Future()
        if self._stopping.is_set():
            fut.set_exception(BrokerUnreachable("link stopped"))
            return fut
        with self._calls_lock:
            self._calls.append(_Call(fn, fut, durable))
        self._wake.set()
        return fut

    def publish(self, exchange: str, routing_key: str, body: bytes, *, durable: bool = True,
                **kwargs: Any) -> Future[None]:
        return self.call(lambda s: s.publish(exchange, routing_key, body, **kwargs),
                         durable=durable)

    def ack(self, delivery: Delivery) -> Future[None]:
        return self.call(lambda s: s.ack(delivery))

    def reject(self, delivery: Delivery, requeue: bool) -> Future[None]:
        return self.call(lambda s: s.reject(delivery, requeue))

    def pump(self) -> int:
        """threaded=False only: reconnect if the connection was lost, reopen closed
        channels, run pending calls, deliver to consumers, run on_tick once. Returns how
        many calls and deliveries ran."""
        if self._threaded or not self._started or self._stopping.is_set():
            raise RuntimeError("pump() is for a started transport with threaded=False")
        return self._pump_once()

    # -- the "I/O thread" -------------------------------------------------------------------
    def _connect(self) -> None:
        with self.broker._lock:
            self.generation += 1
            session = self.session = MemorySession(self.broker, self, self.generation)
        if self._on_connect is not None:
            self._on_connect(session)
        self.connected.set()

    def _pump_once(self) -> int:
        done = 0
        try:
            if self.session is None or not self.session.alive:
                self._connect()
            session = self.session
            assert session is not None
            session.reopen_channels()
            done += self._run_calls(session)
            done += self._deliver(session)
            if self._on_tick is not None:
                try:
                    self._on_tick(session)
                except CONNECTION_ERRORS:
                    raise
                except Exception:
                    log.exception("%s: tick failed; continuing", self.name)
        except CONNECTION_ERRORS as exc:
            log.warning("%s: connection lost (%s); reconnecting", self.name, exc)
            self.broker.disconnect(self)
            done += 1
        return done

    def _run_calls(self, session: MemorySession) -> int:
        ran = 0
        while True:
            with self._calls_lock:
                if not self._calls:
                    return ran
                call = self._calls.popleft()
            if call.future.cancelled():
                continue
            ran += 1
            try:
                call.future.set_result(call.fn(session))
            except CONNECTION_ERRORS:
                if call.durable:
                    with self._calls_lock:
                        self._calls.appendleft(call)
                else:
                    call.future.set_exception(DeliveryLost("connection lost before the call ran"))
                raise
            except Exception as exc:
                call.future.set_exception(exc)

    def _deliver(self, session: MemorySession) -> int:
        broker, n = self.broker, 0
        while n < MAX_DELIVERIES_PER_PUMP:
            batch: list[tuple[_Consumer, Delivery, bytes]] = []
            with session._op():  # one message per consumer per round
                for ch in list(session._channels.values()):
                    c = ch.consumer
                    if (not ch.open or c is None or c.queue.deleted
                            or (c.prefetch and len(ch.unacked) >= c.prefetch)):
                        continue
                    msg = c.queue.pop()
                    if msg is not None:
                        batch.append((c, *broker._deliver(session, ch, c.queue, msg,
                                                          c.auto_ack)))
            if not batch:
                break
            for c, d, body in batch:
                n += 1
                try:
                    c.on_message(d, body)
                except CONNECTION_ERRORS:
                    raise
                except Exception:
                    log.exception("consumer %s failed on a message; rejecting it", d.channel_key)
                    if not c.auto_ack:
                        with contextlib.suppress(Exception):
                            session.reject(d, requeue=False)
        return n

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self._pump_once()
                self._wake.wait(TICK_S)
            self._shutdown()
        except BaseException as exc:
            log.critical("%s: I/O thread died: %r", self.name, exc, exc_info=True)
            self.error = exc
            self.connected.clear()
            with self.broker._lock:
                self.broker._drop(self)
            self._fail_pending(BrokerUnreachable("I/O thread died"))

    def _shutdown(self) -> None:
        """Flush what was asked before stop, then close the connection."""
        if self._finished:
            return
        self._finished = True
        session = self.session
        if session is not None and session.alive:
            with contextlib.suppress(*CONNECTION_ERRORS):
                self._run_calls(session)
        with self.broker._lock:
            self.broker._drop(self)
        self._fail_pending(BrokerUnreachable("link stopped"))

    def _fail_non_durable(self) -> None:
        with self._calls_lock:
            lost = [c for c in self._calls if not c.durable]
            self._calls = deque(c for c in self._calls if c.durable)
        for c in lost:
            if not c.future.done():
                c.future.set_exception(DeliveryLost("connection lost before the call ran"))

    def _fail_pending(self, exc: Exception) -> None:
        with self._calls_lock:
            pending, self._calls = list(self._calls), deque()
        for c in pending:
            if not c.future.done():
                c.future.set_exception(exc)
