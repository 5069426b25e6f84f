"""Handing a message back: a new copy through a delay queue, then ack the original.

Never reject with requeue: on a quorum queue every return counts toward its delivery
limit (on 3.10 and, for rejects, on 4.x too), so a job handed back a few times would
end in the poison queue although nothing was wrong with it. A copy is a new message
with a fresh count. Runs on the I/O thread, like `park`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .headers import header_int
from .naming import RETURNS, Names, delay_headers

if TYPE_CHECKING:
    from .transport import Delivery, Session



def returns(delivery: Delivery) -> int:
    return header_int(delivery.headers, RETURNS) or 0


def hand_back(session: Session, names: Names, delivery: Delivery, body: bytes,
              delay_s: int, *, count_return: bool = False) -> None:
    """Publish `body` (confirmed) to come back where `delivery` came from after `delay_s`
    (a delay bucket), then ack the delivery. The delay queues dead-letter to `local`,
    whose alternate exchange is `jobs`: the copy lands in the queue its key names.
    `count_return`: the worker could not run it (see RETURNS)."""
    headers: dict[str, object] = dict(delay_headers(delay_s))
    seen = returns(delivery)
    if count_return or seen:
        headers[RETURNS] = seen + int(count_return)
    session.publish(names.delay, delivery.routing_key, body, headers=headers,
                    message_id=delivery.message_id)
    session.ack(delivery)
