"""Idempotent declaration of a Topology, its removal, and export as RabbitMQ definitions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pika.exceptions

from .errors import TopologyMismatch
from .topology import Topology

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingConnection


def declare(connection: BlockingConnection, topology: Topology) -> None:
    """Declare everything; a second run with the same arguments changes nothing. A queue that
    exists with other arguments raises TopologyMismatch naming it (RabbitMQ refuses to
    change queue arguments in place)."""
    channel = connection.channel()
    try:
        for ex in topology.exchanges:
            channel.exchange_declare(ex.name, ex.type, durable=ex.durable,
                                     arguments=ex.arguments or None)
        for q in topology.queues:
            try:
                channel.queue_declare(q.name, durable=q.durable, arguments=q.arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 406:
                    raise
                raise TopologyMismatch(
                    f"queue {q.name} exists with other arguments ({exc.reply_text}); "
                    "use the same SEALPOOL_* topology settings everywhere, or delete the queue"
                ) from None
        for b in topology.bindings:
            channel.queue_bind(b.destination, b.source, routing_key=b.routing_key,
                               arguments=b.arguments or None)
    finally:
        if channel.is_open:
            channel.close()


def delete(connection: BlockingConnection, topology: Topology) -> None:
    """Remove queues and exchanges (tests, and `broker-topology delete`)."""
    channel = connection.channel()
    for q in topology.queues:
        channel.queue_delete(q.name)
    for ex in topology.exchanges:
        channel.exchange_delete(ex.name)
    channel.close()


def to_definitions(topology: Topology, vhost: str = "/") -> dict[str, Any]:
    """RabbitMQ definitions.json (importable with `rabbitmqctl import_definitions` or the
    management UI)."""
    return {
        "rabbit_version": "3.10.8",
        "exchanges": [
            {"name": e.name, "vhost": vhost, "type": e.type, "durable": e.durable,
             "auto_delete": False, "internal": False, "arguments": e.arguments}
            for e in topology.exchanges
        ],
        "queues": [
            {"name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": False,
             "arguments": q.arguments}
            for q in topology.queues
        ],
        "bindings": [
            {"source": b.source, "vhost": vhost, "destination": b.destination,
             "destination_type": "queue", "routing_key": b.routing_key,
             "arguments": b.arguments}
            for b in topology.bindings
        ],
    }
