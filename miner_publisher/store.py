"""Sector records in Redis, changed only by atomic compare-and-set.

Keys (all under the namespace):
  sector:<miner>:<n>   hash: the record (state, phase, attempt, home, ...)
  history:<miner>:<n>  list: one JSON entry per finished attempt
  sectors:<miner>      zset: sector number -> created_at (the index)
  seq:<miner>          counter: last sector number
  outbox:<miner>       hash: job key -> publish envelope, written in the same transaction as
                       the transition and removed once the broker confirmed the job. Whoever
                       dies in between, another instance republishes it: no lost transition.
  due:<miner>          zset: sector number -> time its chain step completes
  pending:<miner>      zset: sectors not yet admitted to the pool, best first (deal, deadline)
  inflight:<miner>     set: sectors with a job in the pool (a chain wait uses no worker)
  stats:<miner>        hash: counters (stale results, ...)

Any number of `miner-publisher run` instances may share one miner: a transition applies
only if (state, phase, attempt) are still what the caller read, so exactly one of them wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from broker_topology.messages import PIPELINE, Job, Phase, Result, SectorClass
from broker_topology.naming import Names

from .pipeline import Sector, State

# KEYS: sector, history, outbox, due, pending, inflight, inflight-deal, published
# ARGV: expected state, phase, attempt, fields JSON, history entry|"", outbox key|"",
#       outbox value|"", due_at|"", sector number, new state, pending score,
#       max in flight|"" (admission: refuse with -1 when the quota is used up),
#       sector class, which in-flight set the quota counts ("all" | "deal")
_CAS = """
local s = redis.call('HMGET', KEYS[1], 'state', 'phase', 'attempt')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] or s[3] ~= ARGV[3] then return 0 end
if ARGV[12] ~= '' then
  local counted = ARGV[14] == 'deal' and KEYS[7] or KEYS[6]
  if redis.call('SCARD', counted) >= tonumber(ARGV[12]) then return -1 end
end
local fields = cjson.decode(ARGV[4])
for k, v in pairs(fields) do
  if v == '' then redis.call('HDEL', KEYS[1], k) else redis.call('HSET', KEYS[1], k, v) end
end
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], ARGV[6], ARGV[7]) end
if ARGV[8] ~= '' then redis.call('ZADD', KEYS[4], ARGV[8], ARGV[9])
else redis.call('ZREM', KEYS[4], ARGV[9]) end
redis.call('SREM', KEYS[8], ARGV[9])  -- its previous job, if any, is settled
local st = ARGV[10]
if st == 'pending' then redis.call('ZADD', KEYS[5], ARGV[11], ARGV[9])
else redis.call('ZREM', KEYS[5], ARGV[9]) end
if st == 'queued' then
  redis.call('SADD', KEYS[6], ARGV[9])
  if ARGV[13] == 'deal' then redis.call('SADD', KEYS[7], ARGV[9]) end
else
  redis.call('SREM', KEYS[6], ARGV[9])
  redis.call('SREM', KEYS[7], ARGV[9])
end
return 1
"""

# Take an outbox entry for republishing only if nobody touched it since it was read.
_CLAIM_OUTBOX = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# The broker has the job: clear it from the outbox and count it as out in the pool, unless
# the sector already moved on (its result came back before we got here).
# KEYS: outbox, published, sector  ARGV: outbox key, value, sector number, phase, attempt
_PUBLISHED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
local s = redis.call('HMGET', KEYS[3], 'state', 'phase', 'attempt')
if s[1] == 'queued' and s[2] == ARGV[4] and s[3] == ARGV[5] then
  redis.call('SADD', KEYS[2], ARGV[3])
end
return 1
"""


@dataclass(frozen=True)
class Envelope:
    """A job waiting in the outbox to be published."""

    job: Job
    delay_s: float
    urgent: bool
    written_at: float
    #: Held back: the miner is at its share of jobs in the pool; released in priority order.
    held: bool = False

    def encode(self) -> str:
        return json.dumps({"job": self.job.model_dump(mode="json"), "delay_s": self.delay_s,
                           "urgent": self.urgent, "written_at": self.written_at,
                           "held": self.held})

    @classmethod
    def decode(cls, raw: str) -> Envelope:
        d = json.loads(raw)
        return cls(Job.model_validate(d["job"]), d["delay_s"], d["urgent"], d["written_at"],
                   d.get("held", False))

    def release_order(self) -> tuple[int, int, int, float]:
        """Held jobs go out urgent first, then pipeline-end first, deal first, deadline."""
        return (0 if self.urgent else 1, -PIPELINE.index(self.job.phase),
                0 if self.job.sector_class is SectorClass.DEAL else 1, self.job.deadline)

    @property
    def key(self) -> str:
        return f"{self.job.job_id}#{self.job.attempt}"


@dataclass(frozen=True)
class Record:
    """Everything stored about a sector, beyond its pipeline position."""

    sector: Sector
    sector_class: SectorClass
    size: int
    deadline: float
    created_at: float
    updated_at: float
    params: dict[str, Any]
    #: The attempt an urgent copy was published for (deadline escalation), 0 if none.
    escalated: int = 0
    #: The sector cannot make its deadline at the expected pace.
    at_risk: bool = False
    #: Slack as the running miner last computed it (its settings and observed durations).
    slack: float | None = None


class SectorStore:
    def __init__(self, client: redis.Redis, names: Names, miner: str) -> None:
        self.r = client
        self.names = names
        self.miner = miner
        self._cas = client.register_script(_CAS)
        self._claim = client.register_script(_CLAIM_OUTBOX)
        self._published = client.register_script(_PUBLISHED)

    def _k(self, kind: str, *rest: object) -> str:
        return self.names.redis_key(kind, self.miner, *rest)

    # -- creation ------------------------------------------------------------------------
    def create(self, count: int, sector_class: SectorClass, size: int, deadline: float,
               params: dict[str, Any], now: float) -> list[Record]:
        last = int(self.r.incrby(self._k("seq"), count))
        records = []
        pipe = self.r.pipeline(transaction=True)
        for number in range(last - count + 1, last + 1):
            sector = Sector(self.miner, number, State.PENDING, Phase.AP, 0)
            rec = Record(sector, sector_class, size, deadline, now, now, dict(params))
            pipe.hset(self._k("sector", number), mapping=self._fields(rec))
            pipe.zadd(self._k("sectors"), {str(number): now})
            pipe.zadd(self._k("pending"),
                      {str(number): pending_score(sector_class, deadline, number)})
            records.append(rec)
        pipe.execute()
        return records

    # -- reads ---------------------------------------------------------------------------
    def numbers(self) -> list[int]:
        return [int(n) for n in self.r.zrange(self._k("sectors"), 0, -1)]

    def get(self, number: int) -> Record | None:
        raw = self.r.hgetall(self._k("sector", number))
        return _record(self.miner, number, raw) if raw else None

    def all(self) -> list[Record]:
        nums = self.numbers()
        pipe = self.r.pipeline(transaction=False)
        for n in nums:
            pipe.hgetall(self._k("sector", n))
        return [_record(self.miner, n, raw) for n, raw in zip(nums, pipe.execute(), strict=True)
                if raw]

    def history(self, number: int) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.r.lrange(self._k("history", number), 0, -1)]

    def histories(self, numbers: list[int]) -> dict[int, list[dict[str, Any]]]:
        pipe = self.r.pipeline(transaction=False)
        for n in numbers:
            pipe.lrange(self._k("history", n), 0, -1)
        return {n: [json.loads(e) for e in entries]
                for n, entries in zip(numbers, pipe.execute(), strict=True)}

    def pending(self, limit: int) -> list[int]:
        """Sectors waiting for admission, best first."""
        return [int(n) for n in self.r.zrange(self._k("pending"), 0, limit - 1)] \
            if limit > 0 else []

    def counts(self) -> tuple[int, int, int]:
        """(pending, in flight, deal sectors in flight)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(self._k("pending"))
        pipe.scard(self._k("inflight"))
        pipe.scard(self._k("inflight-deal"))
        pending, inflight, deal = pipe.execute()
        return int(pending), int(inflight), int(deal)

    def inflight(self) -> list[int]:
        return sorted(int(n) for n in self.r.smembers(self._k("inflight")))

    def due(self, now: float) -> list[int]:
        return [int(n) for n in self.r.zrangebyscore(self._k("due"), "-inf", now)]

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self._k("stats")).items()}

    def count(self, stat: str, by: int = 1) -> None:
        self.r.hincrby(self._k("stats"), stat, by)

    # -- transitions ---------------------------------------------------------------------
    def transition(self, before: Record, after: Sector, now: float, *,
                   history: dict[str, Any] | None = None, envelope: Envelope | None = None,
                   params: dict[str, Any] | None = None, max_inflight: int | None = None,
                   quota_of: SectorClass | None = None) -> bool:
        """Apply `after` if the sector is still as `before` says; False if someone else won
        (or, with max_inflight, if the miner already has that many sectors in the pool; of
        class `quota_of` only, if given)."""
        b = before.sector
        fields: dict[str, str] = {
            "state": after.state.value, "phase": after.phase.value,
            "attempt": str(after.attempt), "home": after.home or "",
            "chain_step": after.chain_step or "", "error": after.error or "",
            "updated_at": repr(now), "attempts": json.dumps(dict(after.attempts)),
            "base_attempt": str(after.base_attempt),
        }
        if params is not None:
            fields["params"] = json.dumps(params)
        ok = self._cas(
            keys=[self._k("sector", b.number), self._k("history", b.number), self._k("outbox"),
                  self._k("due"), self._k("pending"), self._k("inflight"),
                  self._k("inflight-deal"), self._k("published")],
            args=[b.state.value, b.phase.value, str(b.attempt), json.dumps(fields),
                  json.dumps(history) if history else "",
                  envelope.key if envelope else "", envelope.encode() if envelope else "",
                  repr(after.due_at) if after.due_at is not None else "", str(b.number),
                  after.state.value,
                  repr(pending_score(before.sector_class, before.deadline, b.number)),
                  "" if max_inflight is None else str(max_inflight),
                  before.sector_class.value, quota_of.value if quota_of else "all"])
        return int(ok) == 1

    def mark(self, number: int, **flags: str) -> None:
        """Set informational fields (escalated, at_risk) outside the state machine."""
        self.r.hset(self._k("sector", number), mapping=flags)

    def put_outbox(self, envelope: Envelope) -> None:
        self.r.hset(self._k("outbox"), envelope.key, envelope.encode())

    def outbox_done(self, envelope: Envelope) -> None:
        job = envelope.job
        self._published(keys=[self._k("outbox"), self._k("published"),
                              self._k("sector", job.sector)],
                        args=[envelope.key, envelope.encode(), str(job.sector),
                              job.phase.value, str(job.attempt)])

    def published_count(self) -> int:
        """Sectors of this miner with a job out in the pool (waiting or running)."""
        return int(self.r.scard(self._k("published")))

    def is_published(self, number: int) -> bool:
        return bool(self.r.sismember(self._k("published"), str(number)))

    def held(self) -> list[tuple[str, Envelope]]:
        """Held-back jobs, in release order."""
        out = [(k, Envelope.decode(raw)) for k, raw in self.r.hgetall(self._k("outbox")).items()]
        return sorted(((k, e) for k, e in out if e.held), key=lambda ke: ke[1].release_order())

    def release(self, key: str, env: Envelope, now: float) -> Envelope | None:
        """Take a held job for publishing (None if another instance took it)."""
        fresh = Envelope(env.job, env.delay_s, env.urgent, now, held=False)
        return fresh if self._claim(keys=[self._k("outbox")],
                                    args=[key, env.encode(), fresh.encode()]) else None

    def outbox_stale(self, older_than: float, now: float) -> list[Envelope]:
        """Entries nobody has published for a while; each returned one is claimed by us."""
        taken = []
        for key, raw in self.r.hgetall(self._k("outbox")).items():
            env = Envelope.decode(raw)
            if env.held or env.written_at > now - older_than:
                continue
            fresh = Envelope(env.job, env.delay_s, env.urgent, now)
            if self._claim(keys=[self._k("outbox")], args=[key, raw, fresh.encode()]):
                taken.append(fresh)
        return taken

    def outbox_size(self) -> int:
        return int(self.r.hlen(self._k("outbox")))

    @staticmethod
    def _fields(rec: Record) -> dict[str, str]:
        s = rec.sector
        return {
            "state": s.state.value, "phase": s.phase.value, "attempt": str(s.attempt),
            "home": s.home or "", "chain_step": s.chain_step or "", "error": s.error or "",
            "attempts": json.dumps(dict(s.attempts)), "base_attempt": str(s.base_attempt),
            "class": rec.sector_class.value, "size": str(rec.size),
            "deadline": repr(rec.deadline), "created_at": repr(rec.created_at),
            "updated_at": repr(rec.updated_at), "params": json.dumps(rec.params),
        }


def _record(miner: str, number: int, raw: dict[str, str]) -> Record:
    sector = Sector(miner, number, State(raw["state"]), Phase(raw["phase"]), int(raw["attempt"]),
                    raw.get("home") or None, raw.get("chain_step") or None, None,
                    raw.get("error") or None, json.loads(raw.get("attempts", "{}")),
                    int(raw.get("base_attempt", 1)))
    return Record(sector, SectorClass(raw["class"]), int(raw["size"]), float(raw["deadline"]),
                  float(raw["created_at"]), float(raw.get("updated_at", raw["created_at"])),
                  json.loads(raw.get("params", "{}")), int(raw.get("escalated", 0)),
                  raw.get("at_risk") == "1",
                  float(raw["slack"]) if raw.get("slack") else None)


def pending_score(sector_class: SectorClass, deadline: float, number: int) -> float:
    """Admission order: deal sectors first, then the earliest deadline, then the lowest
    sector number (1e-4 s per number keeps a batch in order without reordering deadlines
    that differ by more than a few seconds)."""
    return (0.0 if sector_class is SectorClass.DEAL else 1e11) + deadline + number * 1e-4


def history_entry(result: Result) -> dict[str, Any]:
    return {
        "phase": result.phase.value, "attempt": result.attempt, "worker": result.worker,
        "started_at": result.started_at, "finished_at": result.finished_at,
        "outcome": result.outcome.value,
        "error_class": result.error_class.value if result.error_class else None,
        "error": result.error,
    }


def now_s() -> float:
    return time.time()
