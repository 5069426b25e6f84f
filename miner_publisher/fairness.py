"""Sharing one pool between miners by weight.

Jobs of all miners wait in the same FIFO queues, so a miner's share of worker time is its
share of the jobs in the pool. Each miner therefore admits new sectors (their ap job) only
while it has fewer than its target in flight: target = pool capacity × weight / Σ weights
of the miners that have work. A miner without work drops out of the sum, so its share goes
to the others; one with a burst cannot fill the queues ahead of everyone else.

Redis: shares (hash) miner -> {"weight", "backlog", "at"}; capacity comes from the worker
registry (slots of live workers)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import redis

from broker_topology.naming import Names

from .redis_text import text_map
from .workers import registry

#: A share not refreshed for this long belongs to a miner that stopped running.
SHARE_STALE_S = 15.0


@dataclass(frozen=True)
class Share:
    miner: str
    weight: float
    backlog: int
    at: float


def targets(shares: list[Share], capacity: int, now: float) -> dict[str, int]:
    """Sectors each active miner may have in flight. Pure."""
    active = [s for s in shares if s.backlog > 0 and now - s.at < SHARE_STALE_S]
    total = sum(s.weight for s in active)
    if total <= 0:
        return {}
    return {s.miner: max(1, math.floor(capacity * s.weight / total)) for s in active}


class Fairness:
    def __init__(self, client: redis.Redis, names: Names, miner: str, weight: float,
                 depth: int) -> None:
        self.r = client
        self.names = names
        self.miner = miner
        self.weight = weight
        #: Sectors in flight per pool slot: one running, the rest waiting ready to start.
        self.depth = depth
        self.key = names.redis_key("shares")
        self._slots: tuple[float, int] = (0.0, 0)
        #: The last target computed (sectors in flight, and jobs out in the pool).
        self.current = 1

    def publish(self, backlog: int, now: float) -> None:
        self.r.hset(self.key, self.miner, json.dumps(
            {"weight": self.weight, "backlog": backlog, "at": now}))

    def shares(self) -> list[Share]:
        out = []
        for miner, raw in text_map(self.r.hgetall(self.key)).items():
            d = json.loads(raw)
            out.append(Share(miner, float(d["weight"]), int(d["backlog"]), float(d["at"])))
        return out

    def pool_slots(self) -> int:
        """Slots of the live workers in the registry; re-read every few seconds."""
        if time.monotonic() - self._slots[0] < 3.0:
            return self._slots[1]
        now = time.time()
        slots = sum(len(w.slots) for w in registry(self.r, self.names) if not w.stale(now))
        self._slots = (time.monotonic(), slots)
        return slots

    def peek(self) -> int:
        """The current target, without publishing a share (for queries)."""
        capacity = max(1, self.pool_slots()) * self.depth
        return targets(self.shares(), capacity, time.time()).get(self.miner, capacity)

    def target(self, backlog: int) -> int:
        """Publish our share and return how many sectors we may have in flight."""
        now = time.time()
        self.publish(backlog, now)
        capacity = max(1, self.pool_slots()) * self.depth
        self.current = targets(self.shares(), capacity, now).get(self.miner, capacity)
        return self.current
