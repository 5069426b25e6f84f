"""Dead letters: what q.poison received, kept in Redis for `dead-letters list/requeue`.

Every running miner-publisher drains q.poison: each message is recorded (reason, source,
who parked it, the body) and acked. An entry whose body is one of our jobs (or results) is
named `<job_id>#<attempt>` and queued for its miner (`MinerKey.PARKED`); that miner's
`run` then moves the sector on (see `parked.py`), whichever instance drained it.
`requeue` replays a failed sector from the failed phase or an earlier one, with a fresh
attempt number so no old result or done marker can stand in for the new run."""

from __future__ import annotations

import builtins
import json
import uuid
from typing import Any

import redis
from pydantic import BaseModel

from broker_topology.errors import MessageError
from broker_topology.headers import death_by_reason, header_str
from broker_topology.messages import MAX_BODY_BYTES, PIPELINE, Job, Phase, Result, parse_job_id
from broker_topology.naming import MinerKey, Names, attempt_ref
from broker_topology.poison import BY, DETAIL, REASON, SOURCE, Reason

from .pipeline import State, enter
from .publisher import build_job, oversize
from .redis_text import opt_text, texts
from .store import Envelope, SectorStore

_BODY_KEEP = 4000
#: An oversized body is still read for its job id up to this size (the broker's own
#: limit is far above MAX_BODY_BYTES); bigger ones are recorded without one.
_IDENTIFY_MAX = 16 * MAX_BODY_BYTES


def reason_of(headers: object) -> tuple[str, str, str]:
    """(reason, detail, source) of a poison message, whoever parked it. Headers are
    untrusted: anything malformed reads as `unknown`, never raises."""
    reason = header_str(headers, REASON, 64)
    if reason is not None:
        return reason, header_str(headers, DETAIL) or "", header_str(headers, SOURCE) or ""
    death = death_by_reason(headers, Reason.DELIVERY_LIMIT)
    if death is not None:
        times = f" after {death.count} deliveries" if death.count else ""
        return (Reason.DELIVERY_LIMIT.value,
                f"delivery limit reached in {death.queue}{times}", death.queue)
    return (header_str(headers, "x-first-death-reason", 64) or Reason.UNKNOWN.value,
            "dead-lettered by the broker", header_str(headers, "x-first-death-queue") or "")


def identify(body: bytes) -> Job | Result | None:
    """The job (or result) a parked body is, when it decodes; None otherwise. Oversized
    bodies are read too (parked for their size, not their form)."""
    kinds: tuple[type[Job] | type[Result], ...] = (Job, Result)
    for kind in kinds:
        try:
            return kind.from_bytes(body)
        except MessageError as exc:
            if exc.reason != Reason.OVERSIZED or len(body) > _IDENTIFY_MAX:
                continue
        except Exception:  # a decoder bug must not stop the poison drain
            continue
        try:
            found: BaseModel = kind.model_validate_json(body)
        except Exception:  # anything that is not one of ours
            continue
        assert isinstance(found, Job | Result)
        return found
    return None


class DeadLetters:
    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.r = client
        self.names = names
        self.key = names.deadletters_key

    def record(self, headers: object, body: bytes, now: float) -> dict[str, Any]:
        """Keep the entry; if it is one of our jobs or results, queue it for its miner."""
        reason, detail, source = reason_of(headers)
        entry: dict[str, Any] = {"reason": reason, "detail": detail, "source": source,
                                 "parked_by": header_str(headers, BY, 200) or "broker",
                                 "at": now, "job_id": None,
                                 "miner": None, "sector": None, "phase": None,
                                 "attempt": None, "kind": None,
                                 "id": f"msg-{uuid.uuid4().hex[:12]}"}
        found = identify(body)
        if found is not None:
            entry |= {"job_id": found.job_id, "miner": found.miner, "sector": found.sector,
                      "phase": found.phase.value, "attempt": found.attempt,
                      "kind": "job" if isinstance(found, Job) else "result",
                      "id": attempt_ref(found.job_id, found.attempt)}
            if isinstance(found, Job):
                entry["size"] = found.size
        entry["body"] = body[:_BODY_KEEP].decode("utf-8", "replace")
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key, entry["id"], json.dumps(entry))
        if entry["miner"] is not None:
            pipe.sadd(self.names.miner_key(MinerKey.PARKED, entry["miner"]), entry["id"])
        pipe.execute()
        return entry

    def get(self, entry_id: str) -> dict[str, Any] | None:
        raw = opt_text(self.r.hget(self.key, entry_id))
        return dict(json.loads(raw)) if raw else None

    def to_act_on(self, miner: str) -> list[str]:
        """Ids of this miner's dead letters whose sector was not moved on yet."""
        return sorted(texts(self.r.smembers(self.names.miner_key(MinerKey.PARKED, miner))))

    def acted_on(self, miner: str, entry_id: str) -> None:
        self.r.srem(self.names.miner_key(MinerKey.PARKED, miner), entry_id)

    def list(self, miner: str | None = None) -> list[dict[str, Any]]:
        entries = [json.loads(v) for v in self.r.hvals(self.key)]
        if miner is not None:
            entries = [e for e in entries if e["miner"] == miner]
        return sorted(entries, key=lambda e: e["at"])

    def for_job(self, job_id: str) -> builtins.list[dict[str, Any]]:
        return [e for e in self.list() if e["job_id"] == job_id]

    def remove_job(self, job_id: str) -> int:
        ids = [e["id"] for e in self.for_job(job_id)]
        return int(self.r.hdel(self.key, *ids)) if ids else 0


def check_requeue(store: SectorStore, dead: DeadLetters, job_id: str, force: bool) -> None:
    """Requeue only a failed sector whose dead letter is for its current attempt (else a
    stale dead letter or a typo would reset a done or running sector); `force` skips it."""
    if force:
        return
    miner, number, phase = parse_job_id(job_id)
    rec = store.get(number)
    if rec is None:
        raise ValueError(f"no sector {number} for {miner}")
    s = rec.sector
    where = f"sector {miner}/{number} is {s.state} at {s.phase} attempt {s.attempt}"
    if s.state is not State.FAILED:
        raise ValueError(f"{where}, not failed: requeue refused (--force to replay anyway)")
    current = [e for e in dead.for_job(job_id)
               if e["phase"] == s.phase.value and e["attempt"] == s.attempt]
    if s.phase is not phase or not current:
        raise ValueError(f"{where}: no dead letter of {job_id} for that attempt; requeue "
                         "refused (--force to replay anyway)")


def replay(store: SectorStore, job_id: str, from_phase: Phase | None) -> Envelope:
    """Put a sector back into the pipeline at `from_phase` (default: the job's phase).
    Returns the job to publish (already in the outbox)."""
    miner, number, dead_phase = parse_job_id(job_id)
    if miner != store.miner:
        raise ValueError(f"{job_id} belongs to {miner}, not {store.miner}")
    rec = store.get(number)
    if rec is None:
        raise ValueError(f"no sector {number} for {miner}")
    phase = from_phase or dead_phase
    if PIPELINE.index(phase) > PIPELINE.index(dead_phase):
        raise ValueError(f"--from-phase {phase} is after the dead job's phase {dead_phase}")
    if phase is not Phase.AP and PIPELINE.index(phase) <= PIPELINE.index(Phase.PC1) \
            and rec.sector.home is None:
        raise ValueError("the sector has no home worker yet; replay from ap")
    now = store.redis_now()
    after = enter(rec.sector, phase, state=State.QUEUED, chain_step=None, due_at=None,
                  error=None, home=None if phase is Phase.AP else rec.sector.home)
    attempt = after.attempt
    env = Envelope(build_job(rec, after, now), 0.0, False, now)
    too_big = oversize(env.job)
    if too_big:
        raise ValueError(f"cannot replay {job_id}: {too_big}")
    history = {"phase": phase.value, "attempt": attempt, "worker": "operator",
               "started_at": now, "finished_at": now, "outcome": "requeued",
               "error_class": None, "error": f"replayed from {phase} ({job_id})"}
    if not store.transition(rec, after, now, history=history, envelope=env):
        raise ValueError(f"sector {number} changed meanwhile; try again")
    return env
