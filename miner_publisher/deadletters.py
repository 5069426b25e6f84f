"""Dead letters: what q.poison received, kept in Redis for `dead-letters list/requeue`.

Every running miner-publisher drains q.poison: each message is recorded (reason, source,
who parked it, the body) and acked. A job parked as a crash (`delivery_limit`: the broker's
delivery limits, or a worker seeing an attempt start again and again) fails its sector with
that reason, if the sector still waits for that attempt. `requeue` replays a sector from
the failed phase or an earlier one, with a fresh attempt number so no old result or done
marker can stand in for the new run."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

import redis

from broker_topology.errors import MessageError
from broker_topology.messages import PIPELINE, Job, Phase, parse_job_id
from broker_topology.naming import Names
from broker_topology.poison import BY, DETAIL, REASON, SOURCE

from .pipeline import State, enter
from .publisher import build_job
from .store import Envelope, SectorStore

CRASH_REASON = "delivery_limit"
_BODY_KEEP = 4000


def reason_of(headers: dict[str, Any]) -> tuple[str, str, str]:
    """(reason, detail, source) of a poison message, whoever parked it."""
    if REASON in headers:
        return (str(headers[REASON]), str(headers.get(DETAIL, "")),
                str(headers.get(SOURCE, "")))
    deaths = headers.get("x-death") or []
    # 3.10 does not keep x-death ordered by recency: look entries up by reason.
    for death in deaths:
        if death.get("reason") == CRASH_REASON:
            return (CRASH_REASON, f"delivery limit reached in {death.get('queue')}",
                    str(death.get("queue", "")))
    first = str(headers.get("x-first-death-reason", "unknown"))
    return first, "dead-lettered by the broker", str(headers.get("x-first-death-queue", ""))


class DeadLetters:
    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.r = client
        self.names = names
        self.key = names.redis_key("deadletters")

    def record(self, headers: dict[str, Any], body: bytes, now: float) -> dict[str, Any]:
        reason, detail, source = reason_of(headers)
        entry: dict[str, Any] = {"reason": reason, "detail": detail, "source": source,
                                 "parked_by": str(headers.get(BY, "broker")), "at": now,
                                 "job_id": None, "miner": None, "sector": None,
                                 "phase": None, "attempt": None}
        try:
            job = Job.from_bytes(body)
            entry |= {"job_id": job.job_id, "miner": job.miner, "sector": job.sector,
                      "phase": job.phase.value, "attempt": job.attempt,
                      "id": f"{job.job_id}#{job.attempt}"}
        except MessageError:
            entry["id"] = f"msg-{uuid.uuid4().hex[:12]}"
        entry["body"] = body[:_BODY_KEEP].decode("utf-8", "replace")
        self.r.hset(self.key, entry["id"], json.dumps(entry))
        return entry

    def list(self, miner: str | None = None) -> list[dict[str, Any]]:
        entries = [json.loads(v) for v in self.r.hvals(self.key)]
        if miner is not None:
            entries = [e for e in entries if e["miner"] == miner]
        return sorted(entries, key=lambda e: e["at"])

    def remove_job(self, job_id: str) -> int:
        ids = [e["id"] for e in self.list() if e["job_id"] == job_id]
        return int(self.r.hdel(self.key, *ids)) if ids else 0


def fail_crashed(store: SectorStore, entry: dict[str, Any], now: float) -> bool:
    """Fail the sector of a job parked as a crash, if it still waits for that attempt."""
    rec = store.get(entry["sector"])
    if rec is None:
        return False
    s = rec.sector
    if not (s.state is State.QUEUED and s.phase.value == entry["phase"]
            and s.attempt == entry["attempt"]):
        return False
    error = f"{entry['phase']}: crash: {CRASH_REASON} ({entry['detail']})"
    history = {"phase": entry["phase"], "attempt": entry["attempt"],
               "worker": entry["parked_by"], "started_at": entry["at"],
               "finished_at": entry["at"], "outcome": "crash", "error_class": "crash",
               "error": error}
    return store.transition(rec, replace(s, state=State.FAILED, error=error), now,
                            history=history)


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
    now = time.time()
    after = enter(rec.sector, phase, state=State.QUEUED, chain_step=None, due_at=None,
                  error=None, home=None if phase is Phase.AP else rec.sector.home)
    attempt = after.attempt
    env = Envelope(build_job(rec, after, now), 0.0, False, now)
    history = {"phase": phase.value, "attempt": attempt, "worker": "operator",
               "started_at": now, "finished_at": now, "outcome": "requeued",
               "error_class": None, "error": f"replayed from {phase} ({job_id})"}
    if not store.transition(rec, after, now, history=history, envelope=env):
        raise ValueError(f"sector {number} changed meanwhile; try again")
    return env
