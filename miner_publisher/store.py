"""Sector records in Redis, changed only by atomic compare-and-set.

Keys (all under the namespace, spelled by `Names.miner_key`, kinds in `naming.MinerKey`):
  sector:<miner>:<n>   hash: the record (state, phase, attempt, home, dispatched_at, ...)
  history:<miner>:<n>  list: one JSON entry per finished attempt
  sectors:<miner>      zset: sector number -> created_at (the index)
  seq:<miner>          counter: last sector number (never below the host's high-water mark)
  outbox:<miner>       hash: job key -> publish envelope, written in the same transaction as
                       the transition and removed once the broker confirmed the job. Whoever
                       dies in between, another instance republishes it: no lost transition.
  outbox-claims:<miner> hash: job key -> `<instance>|<until ms>` on the Redis clock: who
                       publishes the entry now; the sweep takes only unclaimed entries.
  due:<miner>          zset: sector number -> time its chain step completes
  pending:<miner>      zset: sectors not yet admitted to the pool, best first (deal, deadline)
  inflight:<miner>     set: sectors with a job in the pool (a chain wait uses no worker)
  watch:<miner>        zset: queued and chain sectors -> when the miner looks at them next
                       (slack crossing the escalation threshold or zero, the watchdog's
                       limit; Redis clock). A transition sets it to now: look again.
  finished:<miner>     zset: done and failed sectors -> when they finished (Redis clock):
                       what the retention trims, oldest first
  stats:<miner>        hash: counters (stale results, ...)

Any number of `miner-publisher run` instances may share one miner: a transition applies
only if (state, phase, attempt) are still what the caller read, so exactly one of them wins.
A result's transition also needs the result's lease epoch to be the current one.
The scripts are in `lua/` (named locals, one purpose each).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import redis

from broker_topology.messages import PIPELINE, Job, Phase, Result, SectorClass, job_id
from broker_topology.naming import MinerKey, Names, attempt_ref

from .durable import RedisWiped
from .pipeline import Sector, State
from .redis_text import fields, text, text_map, texts
from .scripts import register

#: Stats field set once the finished index holds every finished sector (fill_finished).
FINISHED_INDEXED = "finished_indexed"


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
        return attempt_ref(self.job.job_id, self.job.attempt)


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
    #: When the current attempt was handed out (Redis clock), and the delay it was given.
    dispatched_at: float | None = None
    dispatch_delay: float = 0.0
    #: The watchdog flagged the sector: no progress since this time.
    stalled: float | None = None
    #: When `slack` was computed (Redis clock): status extrapolates from it.
    slack_at: float | None = None


class Cas(IntEnum):
    """What a compare-and-set transition did (the script's return value)."""

    APPLIED = 1
    CHANGED = 0  # the sector is no longer as the caller read it
    QUOTA = -1  # admission: the miner's in-flight quota is used up
    STALE_EPOCH = -2  # a result whose lease epoch is not the current one


class AllocationGuard(Protocol):
    """Who keeps sector numbers from being reused (durable.Durable)."""

    generation: str
    high_water: int

    def allocated(self, last: int) -> None: ...


class SectorStore:
    def __init__(self, client: redis.Redis, names: Names, miner: str, *,
                 instance: str | None = None, grace_s: float = 10.0, claim_s: float = 60.0,
                 guard: AllocationGuard | None = None) -> None:
        self.r = client
        self.names = names
        self.miner = miner
        #: Who claims outbox entries (one id per process).
        self.instance = instance or uuid.uuid4().hex[:12]
        #: A freshly written job is left to its writer for this long before the sweep may
        #: publish it; a publisher's claim lasts `claim_ms` and is renewed while it waits.
        self.grace_ms = int(grace_s * 1000)
        self.claim_ms = int(claim_s * 1000)
        self.guard = guard
        self._cas = register(client, "transition.lua")
        self._claim = register(client, "claim_outbox.lua")
        self._published = register(client, "published.lua")
        self._escalate = register(client, "escalate.lua")
        self._allocate = register(client, "allocate.lua")
        self._rewatch = register(client, "rewatch.lua")
        self._trim = register(client, "trim.lua")

    def _k(self, kind: MinerKey, *rest: object) -> str:
        return self.names.miner_key(kind, self.miner, *rest)

    # -- creation ------------------------------------------------------------------------
    def create(self, count: int, sector_class: SectorClass, size: int, deadline: float,
               params: dict[str, Any], now: float) -> list[Record]:
        guard = self.guard
        last = int(self._allocate(
            keys=[self._k(MinerKey.SEQ), self.names.generation_key],
            args=[count, guard.high_water if guard else 0, guard.generation if guard else ""]))
        if last < 0:
            raise RedisWiped(f"Redis lost generation {guard.generation if guard else '?'} "
                             f"of namespace {self.names.namespace}: no sector numbers are "
                             "allocated on a wiped Redis; restore it from AOF, or run "
                             f"`miner-publisher recover --miner {self.miner}`")
        if guard is not None:
            guard.allocated(last)  # on this host's disk before any sector exists
        records = []
        pipe = self.r.pipeline(transaction=True)
        for number in range(last - count + 1, last + 1):
            sector = Sector(self.miner, number, State.PENDING, Phase.AP, 0)
            rec = Record(sector, sector_class, size, deadline, now, now, dict(params))
            pipe.hset(self._k(MinerKey.SECTOR, number), mapping=fields(self._fields(rec)))
            pipe.zadd(self._k(MinerKey.SECTORS), {str(number): now})
            pipe.zadd(self._k(MinerKey.PENDING),
                      {str(number): pending_score(sector_class, deadline, number)})
            records.append(rec)
        pipe.execute()
        return records

    # -- reads ---------------------------------------------------------------------------
    def numbers(self) -> list[int]:
        return [int(n) for n in texts(self.r.zrange(self._k(MinerKey.SECTORS), 0, -1))]

    def get(self, number: int) -> Record | None:
        raw = text_map(self.r.hgetall(self._k(MinerKey.SECTOR, number)))
        return _record(self.miner, number, raw) if raw else None

    def get_many(self, numbers: list[int]) -> list[Record | None]:
        """`get` of each number, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for n in numbers:
            pipe.hgetall(self._k(MinerKey.SECTOR, n))
        return [_record(self.miner, n, text_map(raw)) if raw else None
                for n, raw in zip(numbers, pipe.execute(), strict=True)]

    def all(self) -> list[Record]:
        nums = self.numbers()
        pipe = self.r.pipeline(transaction=False)
        for n in nums:
            pipe.hgetall(self._k(MinerKey.SECTOR, n))
        return [_record(self.miner, n, text_map(raw))
                for n, raw in zip(nums, pipe.execute(), strict=True)
                if raw]

    def history(self, number: int) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.r.lrange(self._k(MinerKey.HISTORY, number), 0, -1)]

    def histories(self, numbers: list[int]) -> dict[int, list[dict[str, Any]]]:
        pipe = self.r.pipeline(transaction=False)
        for n in numbers:
            pipe.lrange(self._k(MinerKey.HISTORY, n), 0, -1)
        return {n: [json.loads(e) for e in entries]
                for n, entries in zip(numbers, pipe.execute(), strict=True)}

    def pending(self, limit: int) -> list[int]:
        """Sectors waiting for admission, best first."""
        return [int(n) for n in texts(self.r.zrange(self._k(MinerKey.PENDING), 0, limit - 1))] \
            if limit > 0 else []

    def counts(self) -> tuple[int, int, int]:
        """(pending, in flight, deal sectors in flight)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(self._k(MinerKey.PENDING))
        pipe.scard(self._k(MinerKey.INFLIGHT))
        pipe.scard(self._k(MinerKey.INFLIGHT_DEAL))
        pending, inflight, deal = pipe.execute()
        return int(pending), int(inflight), int(deal)

    def inflight(self) -> list[int]:
        return sorted(int(n) for n in self.r.smembers(self._k(MinerKey.INFLIGHT)))

    def due(self, now: float) -> list[int]:
        return [int(n) for n in texts(self.r.zrangebyscore(self._k(MinerKey.DUE), "-inf", now))]

    # -- the watch index (escalation, watchdog) -------------------------------------------
    def watch_due(self, now: float, limit: int) -> list[tuple[int, float]]:
        """In-flight sectors due a look at `now` (Redis clock), earliest first, with the
        score seen (pass it back to `rewatch`)."""
        got: list[Any] = self.r.zrangebyscore(self._k(MinerKey.WATCH), "-inf", now, start=0,
                                              num=limit, withscores=True)
        return [(int(text(n)), float(score)) for n, score in got]

    def rewatch(self, number: int, seen: float, next_at: float | None) -> bool:
        """Look at the sector next at `next_at` (None: stop watching it), unless a
        transition moved it since it was read with score `seen`."""
        return int(self._rewatch(keys=[self._k(MinerKey.WATCH)],
                                 args=[str(number), repr(seen),
                                       "" if next_at is None else repr(next_at)])) == 1

    def fill_watch(self) -> int:
        """Index in-flight sectors written before the watch index existed (due now)."""
        members = {str(n) for n in self.inflight()} | set(
            texts(self.r.zrange(self._k(MinerKey.DUE), 0, -1)))
        if not members:
            return 0
        return int(self.r.zadd(self._k(MinerKey.WATCH), dict.fromkeys(members, 0.0), nx=True)
                   or 0)

    # -- retention -----------------------------------------------------------------------
    def trim(self, cutoff: float, limit: int) -> int:
        """Forget up to `limit` sectors that finished before `cutoff` (Redis clock): their
        record, history and index entries. Returns how many."""
        numbers = texts(self.r.zrangebyscore(self._k(MinerKey.FINISHED), "-inf", cutoff,
                                             start=0, num=limit))
        return sum(int(self._trim(
            keys=[self._k(MinerKey.SECTOR, n), self._k(MinerKey.HISTORY, n),
                  self._k(MinerKey.SECTORS), self._k(MinerKey.FINISHED),
                  self._k(MinerKey.STATS)],
            args=[n, repr(cutoff)])) for n in numbers)

    def fill_finished(self, batch: int = 1000) -> int:
        """Once per dataset: index sectors that finished before the finished index existed
        (by their last update). Returns how many were added."""
        if self.r.hget(self._k(MinerKey.STATS), FINISHED_INDEXED):
            return 0
        nums, added = self.numbers(), 0
        for i in range(0, len(nums), batch):
            part = nums[i:i + batch]
            pipe = self.r.pipeline(transaction=False)
            for n in part:
                pipe.hmget(self._k(MinerKey.SECTOR, n), "state", "updated_at")
            done = {str(n): float(at) for n, (state, at) in zip(part, pipe.execute(),
                                                                 strict=True)
                    if state in ("done", "failed") and at}
            if done:
                added += int(self.r.zadd(self._k(MinerKey.FINISHED), done, nx=True) or 0)
        self.r.hset(self._k(MinerKey.STATS), FINISHED_INDEXED, "1")
        return added

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in text_map(self.r.hgetall(self._k(MinerKey.STATS))).items()}

    def count(self, stat: str, by: int = 1) -> None:
        self.r.hincrby(self._k(MinerKey.STATS), stat, by)

    def redis_now(self) -> float:
        """The Redis server clock (seconds): one clock for every instance and host."""
        sec, usec = self.r.time()
        return float(sec) + float(usec) / 1e6

    # -- transitions ---------------------------------------------------------------------
    def transition(self, before: Record, after: Sector, now: float, *,
                   history: dict[str, Any] | None = None, envelope: Envelope | None = None,
                   params: dict[str, Any] | None = None, max_inflight: int | None = None,
                   quota_of: SectorClass | None = None) -> bool:
        """Apply `after` if the sector is still as `before` says; False if someone else won
        (or, with max_inflight, if the miner already has that many sectors in the pool; of
        class `quota_of` only, if given)."""
        return self.cas(before, after, now, history=history, envelope=envelope,
                        params=params, max_inflight=max_inflight,
                        quota_of=quota_of) is Cas.APPLIED

    def cas(self, before: Record, after: Sector, now: float, *,
            history: dict[str, Any] | None = None, envelope: Envelope | None = None,
            params: dict[str, Any] | None = None, max_inflight: int | None = None,
            quota_of: SectorClass | None = None, epoch: int | None = None) -> Cas:
        """`transition`, saying why it did not apply. With `epoch` (a result's), it applies
        only while the attempt's lease epoch is that one: a result made under an older
        lease (a worker frozen past it) is stale."""
        b = before.sector
        fields: dict[str, str] = {
            "state": after.state.value, "phase": after.phase.value,
            "attempt": str(after.attempt), "home": after.home or "",
            "chain_step": after.chain_step or "", "error": after.error or "",
            "updated_at": repr(now), "attempts": json.dumps(dict(after.attempts)),
            "base_attempt": str(after.base_attempt),
            "home_rounds": str(after.home_rounds) if after.home_rounds else "",
            "home_lost_at": repr(after.home_lost_at) if after.home_lost_at is not None else "",
            "stalled": "",  # progress: the watchdog looks afresh
        }
        if params is not None:
            fields["params"] = json.dumps(params)
        if envelope is not None:
            fields["dispatch_delay"] = repr(envelope.delay_s)
        ok = self._cas(
            keys=[self._k(MinerKey.SECTOR, b.number), self._k(MinerKey.HISTORY, b.number),
                  self._k(MinerKey.OUTBOX), self._k(MinerKey.DUE), self._k(MinerKey.PENDING),
                  self._k(MinerKey.INFLIGHT), self._k(MinerKey.INFLIGHT_DEAL),
                  self._k(MinerKey.PUBLISHED), self._k(MinerKey.OUTBOX_CLAIMS),
                  self.names.epoch_key(job_id(self.miner, b.number, b.phase), b.attempt),
                  self._k(MinerKey.WATCH), self._k(MinerKey.FINISHED)],
            args=[b.state.value, b.phase.value, str(b.attempt), json.dumps(fields),
                  json.dumps(history) if history else "",
                  envelope.key if envelope else "", envelope.encode() if envelope else "",
                  repr(after.due_at) if after.due_at is not None else "", str(b.number),
                  after.state.value,
                  repr(pending_score(before.sector_class, before.deadline, b.number)),
                  "" if max_inflight is None else str(max_inflight),
                  before.sector_class.value, quota_of.value if quota_of else "all",
                  "" if epoch is None else str(epoch),
                  self.instance if envelope is not None and not envelope.held else "",
                  self.grace_ms])
        return Cas(int(ok))

    def mark(self, number: int, **flags: str) -> None:
        """Set informational fields (at_risk, slack) outside the state machine."""
        self.r.hset(self._k(MinerKey.SECTOR, number), mapping=fields(flags))

    def flag_stalled(self, rec: Record, since: float) -> bool:
        """Flag the sector stalled (no progress since `since`); True for the one caller
        that set it (log it once). A transition clears the flag."""
        return bool(self.r.hsetnx(self._k(MinerKey.SECTOR, rec.sector.number), "stalled",
                                  repr(since)))

    def escalate(self, rec: Record, envelope: Envelope) -> bool:
        """Mark the sector escalated for its attempt and write the urgent copy to the outbox,
        claimed by us; True when we must publish it (of several instances, exactly one)."""
        s = rec.sector
        return int(self._escalate(
            keys=[self._k(MinerKey.SECTOR, s.number), self._k(MinerKey.OUTBOX),
                  self._k(MinerKey.OUTBOX_CLAIMS)],
            args=[s.phase.value, str(s.attempt), envelope.key, envelope.encode(),
                  self.instance, self.claim_ms])) == 1

    # -- the outbox ----------------------------------------------------------------------
    def put_outbox(self, envelope: Envelope) -> None:
        """Write an entry claimed by us (tools and tests; the service writes through
        transitions)."""
        self.r.hset(self._k(MinerKey.OUTBOX), envelope.key, envelope.encode())
        self.claim(envelope)

    def claim(self, envelope: Envelope, replaces: Envelope | None = None, *,
              sweeping: bool = False) -> int:
        """Claim (or extend our claim on) an entry before publishing it: 1 claimed, 0 the
        entry is gone or changed, -1 another instance publishes it (sweeping: anyone,
        us included). With `replaces`, the entry must still be that one and becomes
        `envelope` (a held job released)."""
        current = replaces or envelope
        return int(self._claim(
            keys=[self._k(MinerKey.OUTBOX), self._k(MinerKey.OUTBOX_CLAIMS)],
            args=[current.key, current.encode(), self.instance, self.claim_ms,
                  envelope.encode() if replaces else "", "1" if sweeping else "0"]))

    def outbox_done(self, envelope: Envelope, count: str = "") -> None:
        """The broker confirmed the entry: clear it (and add one to the stat `count`)."""
        job = envelope.job
        self._published(keys=[self._k(MinerKey.OUTBOX), self._k(MinerKey.PUBLISHED),
                              self._k(MinerKey.SECTOR, job.sector),
                              self._k(MinerKey.OUTBOX_CLAIMS), self._k(MinerKey.STATS)],
                        args=[envelope.key, envelope.encode(), str(job.sector),
                              job.phase.value, str(job.attempt), count])

    def published_count(self) -> int:
        """Sectors of this miner with a job out in the pool (waiting or running)."""
        return int(self.r.scard(self._k(MinerKey.PUBLISHED)))

    def is_published(self, number: int) -> bool:
        return bool(self.r.sismember(self._k(MinerKey.PUBLISHED), str(number)))

    def _entries(self) -> list[tuple[str, Envelope]]:
        return [(k, Envelope.decode(raw))
                for k, raw in text_map(self.r.hgetall(self._k(MinerKey.OUTBOX))).items()]

    def held(self) -> list[tuple[str, Envelope]]:
        """Held-back jobs, in release order."""
        return sorted(((k, e) for k, e in self._entries() if e.held),
                      key=lambda ke: ke[1].release_order())

    def release(self, key: str, env: Envelope, now: float) -> Envelope | None:
        """Take a held job for publishing (None if another instance took it)."""
        fresh = Envelope(env.job, env.delay_s, env.urgent, now, held=False)
        return fresh if self.claim(fresh, replaces=env) == 1 else None

    def outbox_stale(self) -> list[Envelope]:
        """Entries nobody publishes: their writer's grace and any publisher's claim ran out
        (on the Redis clock). Each returned one is claimed by us."""
        return [env for _, env in self._entries()
                if not env.held and self.claim(env, sweeping=True) == 1]

    def outbox_size(self) -> int:
        return int(self.r.hlen(self._k(MinerKey.OUTBOX)))

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
                    int(raw.get("base_attempt", 1)), int(raw.get("home_rounds") or 0),
                    _float(raw.get("home_lost_at")))
    return Record(sector, SectorClass(raw["class"]), int(raw["size"]), float(raw["deadline"]),
                  float(raw["created_at"]), float(raw.get("updated_at", raw["created_at"])),
                  json.loads(raw.get("params", "{}")), int(raw.get("escalated", 0)),
                  raw.get("at_risk") == "1",
                  float(raw["slack"]) if raw.get("slack") else None,
                  _float(raw.get("dispatched_at")), _float(raw.get("dispatch_delay")) or 0.0,
                  _float(raw.get("stalled")), _float(raw.get("slack_at")))


def _float(raw: str | None) -> float | None:
    return float(raw) if raw else None


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
