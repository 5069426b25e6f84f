"""Parking a message that must not be processed: q.poison, with the reason in headers.

Headers: x-sealpool-reason (a short tag: not_json, schema, oversized, misrouted, ...),
x-sealpool-detail (one line), x-sealpool-source (queue it came from), x-sealpool-by (who
parked it), x-sealpool-at (unix seconds)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .naming import Names

if TYPE_CHECKING:
    from .link import Delivery, Session

REASON = "x-sealpool-reason"
DETAIL = "x-sealpool-detail"
SOURCE = "x-sealpool-source"
BY = "x-sealpool-by"
AT = "x-sealpool-at"


def park(session: Session, names: Names, delivery: Delivery, body: bytes, *, reason: str,
         detail: str, source: str, by: str) -> None:
    """Copy to q.poison (confirmed), then ack the original: the message is never lost and
    never retried. Runs on the I/O thread."""
    headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-sealpool-")}
    headers |= {REASON: reason, DETAIL: detail[:500], SOURCE: source, BY: by,
                AT: int(time.time()), "x-original-routing-key": delivery.routing_key}
    session.publish(names.poison, "", body, headers=headers)
    session.ack(delivery)
