"""The pool's workers as a manager sees them: the registry in Redis, and request/reply
control of one worker through the broker's `control` exchange (direct reply-to)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from broker_topology.control import (
    REPLY_TO,
    ControlReply,
    ControlRequest,
    Registered,
    SlotStatus,
    WorkerStatus,
    control_key,
    decode,
    read_index,
)
from broker_topology.errors import MessageError, SealpoolError
from broker_topology.link import connect_blocking

if TYPE_CHECKING:
    import redis

    from broker_topology.naming import Names

log = logging.getLogger(__name__)


class WorkerUnreachable(SealpoolError):
    """The worker is not connected, or did not answer in time (one line)."""


def registry(client: redis.Redis, names: Names) -> list[WorkerStatus]:
    """Every worker's last registry entry, by name, read through the registry index (no
    keyspace scan); members whose entry is gone or unreadable are skipped."""
    return [m.status for m in members(client, names) if m.status is not None]


def members(client: redis.Redis, names: Names) -> list[Registered]:
    """Every worker in the registry index with its last beat, entry or not."""
    out = read_index(client, names)
    for m in out:
        if m.status is None and client.exists(names.worker_key(m.name)):
            log.warning("registry entry of %s unreadable; skipped", m.name)
    return out


def summary(status: WorkerStatus, now: float) -> dict[str, Any]:
    """One row of `miner-publisher workers`."""
    slots = status.slots

    def count(state: SlotStatus) -> int:
        return sum(1 for s in slots if s.state is state and not s.paused)

    return {
        "name": status.name, "address": status.address, "host": status.host,
        "pid": status.pid, "storage_group": status.storage_group,
        "phases": [p.value for p in status.phases], "slots": len(slots),
        "idle": count(SlotStatus.IDLE), "busy": sum(s.state is SlotStatus.BUSY for s in slots),
        "blocked": count(SlotStatus.BLOCKED), "paused": sum(s.paused for s in slots),
        "errors": sum(s.last_error is not None for s in slots),
        "last_ping": status.at, "age": round(now - status.at, 3),
        "stale": status.stale(now),
    }


def call(amqp_url: str, names: Names, worker: str, request: ControlRequest,
         timeout: float) -> ControlReply:
    """Send `request` to `worker` and wait for its reply."""
    conn = connect_blocking(amqp_url, "miner-publisher/control")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        corr = uuid.uuid4().hex
        replies: list[bytes] = []

        def on_reply(_ch: Any, _method: Any, props: pika.BasicProperties, body: bytes) -> None:
            if props.correlation_id == corr:
                replies.append(body)

        ch.basic_consume(REPLY_TO, on_reply, auto_ack=True)
        props = pika.BasicProperties(
            content_type="application/json", reply_to=REPLY_TO, correlation_id=corr,
            # a worker that cannot take it in time must not act on it later
            expiration=str(int(timeout * 1000)))
        try:
            ch.basic_publish(names.control, control_key(worker), request.to_bytes(), props,
                             mandatory=True)
        except pika.exceptions.UnroutableError:
            raise WorkerUnreachable(f"worker {worker} is not connected to the pool "
                                    f"(nothing listens on {names.control} for it)") from None
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise WorkerUnreachable(f"no control exchange {names.control} "
                                    f"({exc.reply_text}); is the pool declared?") from None
        deadline = time.monotonic() + timeout
        while not replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerUnreachable(f"worker {worker} did not answer within {timeout:g}s")
            conn.process_data_events(time_limit=min(left, 0.2))
        try:
            reply: ControlReply = decode(ControlReply, replies[0])
        except MessageError as exc:
            raise WorkerUnreachable(f"worker {worker} answered unreadably: {exc}") from None
        return reply
    finally:
        if conn.is_open:
            conn.close()
