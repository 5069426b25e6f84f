"""Parking a message that must not be processed: q.poison, with the reason in headers.

Headers: x-sealpool-reason (a short tag: not_json, schema, oversized, misrouted, ...),
x-sealpool-detail (one line), x-sealpool-source (queue it came from), x-sealpool-by (who
parked it), x-sealpool-at (unix seconds)."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING

from .naming import AT, BY, DETAIL, REASON, SOURCE, Names

if TYPE_CHECKING:
    from .transport import Delivery, Session

class Reason(StrEnum):
    """Why a message was parked. Both sides import these; a new one is added here only."""

    NOT_JSON = "not_json"
    SCHEMA = "schema"
    SCHEMA_VERSION = "schema_version"
    OVERSIZED = "oversized"
    MISROUTED = "misrouted"
    #: No results queue for the job's miner: its result could not be delivered.
    NO_RESULTS_QUEUE = "no_results_queue"
    #: The attempt started `max_starts` times and never finished (the worker died each time).
    CRASH_LOOP = "crash_loop"
    #: The broker's own quorum delivery limit (x-death); not a worker's crash count.
    DELIVERY_LIMIT = "delivery_limit"
    #: A job of a sector size no live worker takes.
    UNSERVED_SIZE = "unserved_size"
    #: The consumer failed on a message it could decode (a bug or a long outage): it is
    #: parked instead of killing the process, and its sector moves on from the dead letter.
    HANDLER_ERROR = "handler_error"
    UNKNOWN = "unknown"


__all__ = ["AT", "BY", "DETAIL", "REASON", "SOURCE", "Reason", "park"]


def park(session: Session, names: Names, delivery: Delivery, body: bytes, *, reason: str | Reason,
         detail: str, source: str, by: str) -> None:
    """Copy to q.poison (confirmed), then ack the original: the message is never lost and
    never retried. Runs on the I/O thread."""
    headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-sealpool-")}
    headers |= {REASON: str(reason), DETAIL: detail[:500], SOURCE: source, BY: by,
                AT: int(time.time()), "x-original-routing-key": delivery.routing_key}
    session.publish(names.poison, "", body, headers=headers)
    session.ack(delivery)
