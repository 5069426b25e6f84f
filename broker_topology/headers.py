"""Reading AMQP headers that anyone with broker access can set: type-checked, bounded.

pika hands headers over as whatever the sender encoded (str, bytes, int, bool, Decimal,
lists, nested tables). Every reader goes through these helpers, which return None (or skip
an entry) on a wrong type instead of raising on the I/O thread."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .messages import I64_MIN, MAX_TEXT_CHARS, U64_MAX

#: x-death lists one entry per (queue, reason); more than this is not the broker's doing.
MAX_DEATHS = 64


def header_str(headers: object, name: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Header `name` as one printable line (bytes decoded as UTF-8, bad bytes replaced), cut
    to `max_chars`; None when absent or of another type."""
    value = headers.get(name) if isinstance(headers, Mapping) else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:max_chars])


def header_int(headers: object, name: str) -> int | None:
    """Header `name` as an int (not a bool; within 64 bits); None when absent or not."""
    value = headers.get(name) if isinstance(headers, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool) and I64_MIN <= value <= U64_MAX:
        return value
    return None


@dataclass(frozen=True)
class Death:
    """One well-formed entry of the broker's `x-death` header."""

    reason: str
    queue: str
    count: int
    exchange: str
    routing_keys: tuple[str, ...]


def deaths(headers: object) -> tuple[Death, ...]:
    """The x-death entries that are tables with a text `reason` and `queue`; anything
    malformed (x-death not a list, an entry not a table, a field of the wrong type) is
    skipped, never raised on."""
    raw: Any = headers.get("x-death") if isinstance(headers, Mapping) else None
    if not isinstance(raw, list | tuple):
        return ()
    found: list[Death] = []
    for entry in raw[:MAX_DEATHS]:
        reason, queue = header_str(entry, "reason"), header_str(entry, "queue")
        if reason is None or queue is None:
            continue
        keys: Any = entry.get("routing-keys")
        found.append(Death(
            reason=reason, queue=queue, count=max(0, header_int(entry, "count") or 0),
            exchange=header_str(entry, "exchange") or "",
            routing_keys=tuple(k for k in (header_str({"k": k}, "k") for k in keys[:16])
                               if k is not None) if isinstance(keys, list | tuple) else ()))
    return tuple(found)


def death_by_reason(headers: object, reason: str) -> Death | None:
    """The x-death entry for `reason` (3.10 does not keep x-death ordered by recency, so
    entries are looked up by reason, not position)."""
    return next((d for d in deaths(headers) if d.reason == reason), None)
