"""One AMQP connection, owned by one I/O thread, usable from any thread.

pika's BlockingConnection is not thread-safe, and a job run on the connection's thread
starves heartbeats until the broker drops the connection (measured: 2-3 heartbeat
intervals). So the I/O thread only pumps events, runs short calls handed to it with
`call()`, and keeps heartbeats flowing; jobs run elsewhere. Every other thread talks to the
broker through futures.

Leases: an unacked delivery is the broker-side lease. A delivery is named by a
`Delivery` handle carrying the connection generation and the channel incarnation: after a
reconnect or a broker-closed channel (pika 1.4.4 does not raise on that, so channels are
checked with `is_open` every tick) the broker has already requeued it, and acking the stale
handle raises DeliveryLost instead of acking some other message with the same tag.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from tenacity import Retrying, retry_if_exception_type, wait_exponential_jitter

from .declare import declare
from .errors import BrokerUnreachable, DeliveryLost, Unroutable
from .topology import Topology
from .transport import Delivery, OnMessage, Session

__all__ = ["AmqpSession", "Delivery", "Link", "Session", "connect_blocking", "settle"]

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 30
#: Seconds for TCP connect plus the whole AMQP handshake. A broker out of file descriptors
#: accepts TCP and then never answers: without a bound, a connect hangs for ever.
CONNECT_TIMEOUT_S = 15
#: Exit status of a process whose I/O thread died: its supervisor must restart it, since
#: a process that heartbeats to Redis without a broker connection looks healthy and is not.
EXIT_IO_THREAD = 70
#: Errors after which the connection is rebuilt (anything else is the caller's problem).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    # a handshake that never completes (stack timeout) is raised outside that tree
    AMQPConnectorException,
    pika.exceptions.ConnectionClosed,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


class AmqpSession:
    """The live pika connection as seen from the I/O thread (implements `Session`)."""

    def __init__(self, connection: BlockingConnection, generation: int) -> None:
        self.connection = connection
        self.generation = generation
        self._channels: dict[str, BlockingChannel] = {}
        self._incarnations: dict[str, int] = {}
        self._setups: dict[str, Callable[[BlockingChannel], None]] = {}

    def channel(self, key: str, setup: Callable[[BlockingChannel], None] | None = None
                ) -> BlockingChannel:
        """The channel named `key`, opened (or reopened after a broker close) on demand.
        `setup` runs on every (re)open: qos, confirms, consumers."""
        if setup is not None:
            self._setups[key] = setup
        ch = self._channels.get(key)
        if ch is None or not ch.is_open:
            ch = self.connection.channel()
            self._incarnations[key] = self._incarnations.get(key, 0) + 1
            self._channels[key] = ch
            if key in self._setups:
                self._setups[key](ch)
        return ch

    def check_channels(self) -> None:
        """Reopen channels the broker closed (consumer timeout, 404, 406...)."""
        for key, ch in list(self._channels.items()):
            if not ch.is_open:
                log.warning("channel %s was closed by the broker; its deliveries are requeued",
                            key)
                if key in self._setups:
                    self.channel(key)
                else:
                    del self._channels[key]

    def delivery(self, key: str, method: Any, properties: pika.BasicProperties) -> Delivery:
        headers = properties.headers if isinstance(properties.headers, dict) else {}
        return Delivery(self.generation, key, self._incarnations.get(key, 0),
                        method.delivery_tag, str(method.routing_key), str(method.exchange),
                        bool(method.redelivered), dict(headers),
                        _str_or_none(properties.reply_to),
                        _str_or_none(properties.correlation_id),
                        _str_or_none(properties.message_id))

    def _live_channel_for(self, d: Delivery) -> BlockingChannel:
        ch = self._channels.get(d.channel_key)
        if (d.generation != self.generation or ch is None or not ch.is_open
                or self._incarnations.get(d.channel_key) != d.incarnation):
            raise DeliveryLost(f"delivery {d.tag} on {d.channel_key} is gone (requeued)")
        return ch

    def declare(self, topology: Topology) -> None:
        declare(self.connection, topology)

    def ack(self, d: Delivery) -> None:
        self._live_channel_for(d).basic_ack(d.tag)

    def reject(self, d: Delivery, requeue: bool) -> None:
        self._live_channel_for(d).basic_reject(d.tag, requeue=requeue)

    def get(self, channel_key: str, queue: str) -> tuple[Delivery, bytes] | None:
        try:
            method, props, body = self.channel(channel_key).basic_get(queue, auto_ack=False)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return None  # queue gone (an expired home queue); the channel reopens next use
        if method is None:
            return None
        return self.delivery(channel_key, method, props), bytes(body)

    def ready_count(self, queue: str) -> int:
        try:
            return int(self.channel("probe").queue_declare(queue, passive=True)
                       .method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # queue gone; the channel reopens on next use

    def consume(self, key: str, queue: str, on_message: OnMessage, *, prefetch: int = 0,
                auto_ack: bool = False, bindings: Sequence[tuple[str, str]] = ()) -> None:
        def setup(ch: BlockingChannel) -> None:
            if prefetch:
                ch.basic_qos(prefetch_count=prefetch)
            name = queue
            if not name:
                name = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
                for exchange, routing_key in bindings:
                    ch.queue_bind(name, exchange, routing_key=routing_key)
            def deliver(_c: Any, m: Any, p: pika.BasicProperties, b: bytes) -> None:
                d = self.delivery(key, m, p)
                try:
                    on_message(d, bytes(b))
                except CONNECTION_ERRORS:
                    raise
                except Exception:
                    # That message fails, not the connection: it goes to the queue's
                    # dead-letter exchange (if any) instead of killing the I/O thread.
                    log.exception("consumer %s failed on a message; rejecting it", key)
                    if not auto_ack:
                        with contextlib.suppress(Exception):
                            ch.basic_reject(m.delivery_tag, requeue=False)

            ch.basic_consume(name, deliver, auto_ack=auto_ack)

        self.channel(key, setup)

    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                headers: dict[str, Any] | None = None, message_id: str | None = None,
                persistent: bool = True, confirm: bool = True, priority: int | None = None,
                reply_to: str | None = None, correlation_id: str | None = None) -> None:
        """Publish with confirms and mandatory: returns when the broker has the message in
        a queue; raises Unroutable when no queue is bound for it."""
        props = pika.BasicProperties(
            content_type="application/json", delivery_mode=2 if persistent else 1,
            message_id=message_id, headers=headers, timestamp=int(time.time()),
            reply_to=reply_to, correlation_id=correlation_id, priority=priority)
        if not confirm:
            self.channel("publish-fast").basic_publish(exchange, routing_key, body, props)
            return
        ch = self.channel("publish", lambda c: c.confirm_delivery())
        try:
            ch.basic_publish(exchange, routing_key, body, props, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise Unroutable(f"no queue bound for {exchange} / {routing_key}") from None
        except pika.exceptions.NackError:
            raise Unroutable(f"broker refused {exchange} / {routing_key} (nack)") from None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class _Call:
    fn: Callable[[Session], Any]
    future: Future[Any]
    #: Survive a reconnect (publishes of results must reach the broker eventually).
    durable: bool


class Link:
    """A reconnecting AMQP connection on its own I/O thread."""

    def __init__(self, url: str, *, name: str,
                 on_connect: Callable[[Session], None] | None = None,
                 on_tick: Callable[[Session], None] | None = None,
                 heartbeat: int = HEARTBEAT_S, tick_s: float = 0.25,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self._params = pika.URLParameters(url)
        self._params.heartbeat = heartbeat
        self._params.blocked_connection_timeout = 60
        self._params.connection_attempts = 1
        self._params.socket_timeout = CONNECT_TIMEOUT_S
        self._params.stack_timeout = CONNECT_TIMEOUT_S
        self._on_fatal = on_fatal or _exit_process
        self._params.client_properties = {"connection_name": name}
        self._url = url
        self.name = name
        self._on_connect = on_connect
        self._on_tick = on_tick
        self._tick_s = tick_s
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._connection: BlockingConnection | None = None
        self._generation = 0
        self._thread = threading.Thread(target=self._run, name=f"amqp-{name}", daemon=True)
        self.last_error: str | None = None

    # -- any thread -------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> Link:
        self._thread.start()
        if wait_s is not None and not self.connected.wait(wait_s):
            self.stop()
            raise BrokerUnreachable(f"cannot reach RabbitMQ at {_safe(self._url)}: "
                                    f"{self.last_error or _HANDSHAKE_HINT}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def call(self, fn: Callable[[Session], T], *, durable: bool = False) -> Future[T]:
        fut: Future[T] = Future()
        if self._stop.is_set():
            fut.set_exception(BrokerUnreachable("link stopped"))
            return fut
        self._calls.put(_Call(fn, fut, durable))
        self._wake()
        return fut

    def publish(self, exchange: str, routing_key: str, body: bytes, *, durable: bool = True,
                **kwargs: Any) -> Future[None]:
        return self.call(lambda s: s.publish(exchange, routing_key, body, **kwargs),
                         durable=durable)

    def ack(self, d: Delivery) -> Future[None]:
        return self.call(lambda s: s.ack(d))

    def reject(self, d: Delivery, requeue: bool) -> Future[None]:
        return self.call(lambda s: s.reject(d, requeue))

    def _wake(self) -> None:
        conn = self._connection
        if conn is not None:
            # closed between the check and the call: the next tick runs the call
            with contextlib.suppress(Exception):
                conn.add_callback_threadsafe(lambda: None)

    # -- I/O thread ----------------------------------------------------------------------
    def _connect(self) -> BlockingConnection:
        retrying = Retrying(
            wait=wait_exponential_jitter(initial=0.5, max=15),
            retry=retry_if_exception_type(CONNECTION_ERRORS),
            before_sleep=self._log_retry,
            stop=lambda _state: self._stop.is_set(),
            reraise=True,
        )
        return retrying(BlockingConnection, self._params)

    def _log_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = describe_connect_error(exc) if exc else "unknown"
        log.warning("%s: broker unreachable (%s); retrying", self.name, self.last_error)

    def _run(self) -> None:
        """The thread's body: if anything escapes the loop, the process must not go on
        without its broker connection (see EXIT_IO_THREAD)."""
        try:
            self._loop()
        except BaseException as exc:
            log.critical("%s: AMQP I/O thread died: %s: %s", self.name, type(exc).__name__,
                         exc, exc_info=True)
            self.connected.clear()
            self._fail_pending(BrokerUnreachable("I/O thread died"))
            self._on_fatal(exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except CONNECTION_ERRORS:
                break  # only when stopping
            self._generation += 1
            session = AmqpSession(conn, self._generation)
            self._connection = conn
            try:
                if self._on_connect is not None:
                    self._on_connect(session)
                self.connected.set()
                log.info("%s: connected (generation %d)", self.name, self._generation)
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=self._tick_s)
                    session.check_channels()
                    self._run_calls(session)
                    if self._on_tick is not None:
                        self._tick(self._on_tick, session)
                self._run_calls(session)  # flush what was asked before stop
            except CONNECTION_ERRORS as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: connection lost (%s); reconnecting", self.name, self.last_error)
            finally:
                self.connected.clear()
                self._connection = None
                try:
                    if conn.is_open:
                        conn.close()
                except Exception:  # already broken
                    pass
        self._fail_pending(BrokerUnreachable("link stopped"))

    def _tick(self, on_tick: Callable[[Session], None], session: Session) -> None:
        """on_tick, where one failure is that tick's only (a bad message is the consumer's
        to park; anything else is logged and the next tick tries again)."""
        try:
            on_tick(session)
        except CONNECTION_ERRORS:
            raise
        except Exception:
            log.exception("%s: tick failed; continuing", self.name)

    def _run_calls(self, session: Session) -> None:
        retry: list[_Call] = []
        try:
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call.future.cancelled():
                    continue
                try:
                    call.future.set_result(call.fn(session))
                except CONNECTION_ERRORS:
                    if call.durable:
                        retry.append(call)
                    else:
                        call.future.set_exception(
                            DeliveryLost("connection lost before the call ran"))
                    raise
                except Exception as exc:
                    call.future.set_exception(exc)
        finally:
            for c in retry:
                self._calls.put(c)

    def _fail_pending(self, exc: Exception) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            if not call.future.done():
                call.future.set_exception(exc)


_HANDSHAKE_HINT = ("no AMQP handshake within the connect timeout: a broker that accepts TCP "
                   "but never answers is most often out of file descriptors (see README, "
                   "Broker limits)")


def describe_connect_error(exc: BaseException) -> str:
    """One line: what failed, and the likely cause where the error alone does not say."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    lowered = text.lower()
    if "timeout" in lowered or "timed out" in lowered:
        return f"{text} ({_HANDSHAKE_HINT})"
    if "refused" in lowered:
        return f"{text} (is RabbitMQ running and listening there?)"
    if "access_refused" in lowered or "probableauthenticationerror" in lowered:
        return f"{text} (wrong user or password for this vhost?)"
    return text


def _exit_process(exc: BaseException) -> None:
    """Default on_fatal: end the whole process now (threads cannot be joined reliably)."""
    logging.shutdown()
    os._exit(EXIT_IO_THREAD)


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    params = pika.URLParameters(url)
    return f"{params.host}:{params.port}"


def settle(fut: Future[None], what: str) -> bool:
    """Wait for an ack/reject; False when its delivery was already gone (the broker
    requeued it, and the copy will find its done marker or be fenced)."""
    try:
        fut.result()
        return True
    except DeliveryLost:
        log.info("%s: delivery gone before its ack/reject; the broker redelivers it", what)
        return False


def connect_blocking(url: str, name: str, attempts: int = 3) -> BlockingConnection:
    """A plain connection for short CLI operations on the calling thread."""
    params = pika.URLParameters(url)
    params.heartbeat = HEARTBEAT_S
    params.client_properties = {"connection_name": name}
    params.connection_attempts = attempts
    params.retry_delay = 0.5
    params.socket_timeout = 5
    params.stack_timeout = 5  # a CLI call: three 5-s tries, then one line, never a hang
    try:
        return BlockingConnection(params)
    except CONNECTION_ERRORS as exc:
        raise BrokerUnreachable(f"cannot reach RabbitMQ at {_safe(url)}: "
                                f"{describe_connect_error(exc)}") from None
