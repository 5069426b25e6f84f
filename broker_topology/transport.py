"""The seam between sealpool's protocol code and the broker.

`Transport` is what a process holds (the pika `Link`, or the in-memory twin in
`broker_topology.memory`); `Session` is what runs on its I/O thread. Protocol code (the
worker's consumer and runner, the miner's service) uses only these two, so the same code
runs against RabbitMQ and, in unit tests, against the twin: deterministic, in milliseconds.

A `Delivery` names one unacked message: the connection generation and channel incarnation
make an ack on a stale handle (the channel or connection has gone since, so the broker has
requeued the message) raise DeliveryLost instead of acking a stranger with the same tag.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .topology import Topology

T = TypeVar("T")
#: A consumer callback, run on the I/O thread: it must not raise (see `guarded`).
OnMessage = Callable[["Delivery", bytes], None]


@dataclass(frozen=True)
class Delivery:
    generation: int
    channel_key: str
    incarnation: int
    tag: int
    routing_key: str
    exchange: str
    redelivered: bool
    headers: dict[str, Any] = field(default_factory=dict, compare=False)
    reply_to: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None

    @property
    def delivery_count(self) -> int:
        """The quorum queue's count of earlier deliveries (0 when absent or malformed)."""
        value = self.headers.get("x-delivery-count", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Session(Protocol):
    """The live connection, as seen from the I/O thread (only inside `Transport.call`, a
    consumer callback or `on_connect` / `on_tick`)."""

    generation: int

    def declare(self, topology: Topology) -> None:
        """Declare idempotently; TopologyMismatch names a queue with other arguments."""

    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                headers: dict[str, Any] | None = None, message_id: str | None = None,
                persistent: bool = True, confirm: bool = True, priority: int | None = None,
                reply_to: str | None = None, correlation_id: str | None = None) -> None:
        """With `confirm`: returns once the broker holds the message in a queue; raises
        Unroutable when no queue takes it (mandatory)."""

    def ack(self, delivery: Delivery) -> None: ...

    def reject(self, delivery: Delivery, requeue: bool) -> None: ...

    def get(self, channel_key: str, queue: str) -> tuple[Delivery, bytes] | None:
        """One basic.get (unacked) on the channel named `channel_key`; None when the queue
        is empty or does not exist."""

    def ready_count(self, queue: str) -> int:
        """Messages ready in `queue` (0 when it does not exist)."""

    def consume(self, key: str, queue: str, on_message: OnMessage, *, prefetch: int = 0,
                auto_ack: bool = False, bindings: Sequence[tuple[str, str]] = ()) -> None:
        """Consume on the channel named `key`, set up again after every reconnect or
        broker-closed channel. `queue` "" declares a private (exclusive, auto-delete)
        queue bound to each (exchange, routing key) of `bindings`."""


class Transport(Protocol):
    """A process's connection to the broker, usable from any thread."""

    name: str
    #: Set while connected.
    connected: threading.Event

    def start(self, wait_s: float | None = None) -> Transport: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def call(self, fn: Callable[[Session], T], *, durable: bool = False) -> Future[T]:
        """Run `fn` on the I/O thread. `durable` calls survive a reconnect (they run again
        on the new connection); others fail with DeliveryLost when the connection drops."""

    def publish(self, exchange: str, routing_key: str, body: bytes, *, durable: bool = True,
                **kwargs: Any) -> Future[None]: ...

    def ack(self, delivery: Delivery) -> Future[None]: ...

    def reject(self, delivery: Delivery, requeue: bool) -> Future[None]: ...
