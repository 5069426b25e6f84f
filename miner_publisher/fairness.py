"""Sharing one pool between miners by weight: the miner's side.

Two mechanisms, neither of which ever leaves a slot idle while a job exists:

- At claim time (pool_worker.policy): each miner has its own deal and cc lanes per phase,
  and a free slot takes the next job of the miner furthest behind on slot time per weight.
- At admission (here): a sector's follow-up phases run where its files are, from the home
  worker's queue in FIFO order, so the sectors each miner has in flight set its share of
  those phases. A miner admits new sectors while it has fewer in flight than its target:
  the pool's capacity (live slots × SEALPOOL_MINER_POOL_DEPTH) split by weight among the
  miners with work, and what a miner cannot use (its backlog is smaller) handed on to the
  others by weight (water-filling). So the targets always add up to the capacity while
  there is work for it: admission never holds a sector back that a slot could run.

Jobs are never held back once their sector is admitted: holding them would leave slots
idle, and would let a miner's own CC block its deals.

Redis: shares (hash) miner -> {"weight", "backlog", "at"}; miners (hash) miner -> weight,
read by the workers; capacity comes from the worker registry (slots of live workers).
Every time here (a share's `at`, staleness) is on the Redis clock: a miner whose host clock
is behind keeps its share, a worker whose clock is behind still counts."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import redis

from broker_topology.control import redis_now
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
    """Sectors each active miner may have in flight: weighted max-min fair (water-filling)
    over the miners' backlogs, so capacity a miner cannot use goes to the others. Pure."""
    active = [s for s in shares if s.backlog > 0 and now - s.at < SHARE_STALE_S
              and s.weight > 0]
    out: dict[str, float] = {}
    left, room = float(capacity), list(active)
    while room and left > 1e-9:
        total = sum(s.weight for s in room)
        sated = [s for s in room if s.backlog - out.get(s.miner, 0.0)
                 <= left * s.weight / total]
        if not sated:
            for s in room:
                out[s.miner] = out.get(s.miner, 0.0) + left * s.weight / total
            break
        for s in sated:
            give = s.backlog - out.get(s.miner, 0.0)
            out[s.miner] = float(s.backlog)
            left -= give
            room.remove(s)
    return {s.miner: max(1, math.floor(out.get(s.miner, 0.0) + 1e-9)) for s in active}


class Fairness:
    def __init__(self, client: redis.Redis, names: Names, miner: str, weight: float,
                 depth: int) -> None:
        self.r = client
        self.names = names
        self.miner = miner
        self.weight = weight
        #: Sectors in flight per pool slot: one running, the rest waiting ready to start.
        self.depth = depth
        self.key = names.shares_key
        self._slots: tuple[float, int] = (0.0, 0)
        #: The last target computed (sectors in flight).
        self.current = 1

    def publish(self, backlog: int, now: float) -> None:
        """Our share entry, and our weight where the workers read it."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.key, self.miner, json.dumps(
            {"weight": self.weight, "backlog": backlog, "at": now}))
        pipe.hset(self.names.miners_key, self.miner, repr(float(self.weight)))
        pipe.execute()

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
        now = redis_now(self.r)
        slots = sum(len(w.slots) for w in registry(self.r, self.names) if not w.stale(now))
        self._slots = (time.monotonic(), slots)
        return slots

    def peek(self) -> int:
        """The current target, without publishing a share (for queries)."""
        capacity = max(1, self.pool_slots()) * self.depth
        return targets(self.shares(), capacity, redis_now(self.r)).get(self.miner, capacity)

    def target(self, backlog: int) -> int:
        """Publish our share and return how many sectors we may have in flight."""
        now = redis_now(self.r)
        self.publish(backlog, now)
        capacity = max(1, self.pool_slots()) * self.depth
        self.current = targets(self.shares(), capacity, now).get(self.miner, capacity)
        return self.current
