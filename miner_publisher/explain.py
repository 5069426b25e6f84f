"""`miner-publisher explain <job-id>`: why is this job not running (or where is it)?

Answers from what the miner knows (the sector record, its outbox, the Redis lease), what
the broker says (ready count of the queue the job waits in) and the worker registry (which
workers could take it, and why each does not)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from broker_topology.control import SlotStatus, WorkerStatus, why_held
from broker_topology.messages import LOCAL_PHASES, PIPELINE, Lane, Phase, parse_job_id
from broker_topology.naming import Names, lease_holder
from broker_topology.units import sector_size_name

from .pipeline import State
from .store import Record, SectorStore


def explain(job_id: str, store: SectorStore, workers: list[WorkerStatus],
            queue_depth: Callable[[str], int | None], target: int) -> dict[str, Any]:
    miner, number, phase = parse_job_id(job_id)
    rec = store.get(number)
    if rec is None:
        raise ValueError(f"no sector {number} for {miner}")
    s = rec.sector
    out: dict[str, Any] = {"job_id": job_id, "sector_state": s.state.value,
                           "sector_phase": s.phase.value, "attempt": s.attempt, "home": s.home,
                           "waiting_in": None, "queue_ready": None, "reasons": [],
                           "workers": []}
    reasons: list[str] = out["reasons"]
    if s.state is State.PENDING:
        pending, inflight, _ = store.counts()
        reasons.append(f"not in the pool yet: the miner admits sectors by its share of the "
                       f"pool ({inflight} in flight, target {target}); {pending} pending")
        return out
    if s.state in (State.DONE, State.FAILED) or PIPELINE.index(s.phase) > PIPELINE.index(phase):
        ran = [h for h in store.history(s.number) if h["phase"] == phase.value]
        last = ran[-1] if ran else None
        reasons.append(f"{phase} is over: " + (f"{last['outcome']} on {last['worker']}"
                                               if last else "never ran"))
        if s.state is State.FAILED:
            reasons.append(f"the sector failed: {s.error}")
        return out
    if PIPELINE.index(s.phase) < PIPELINE.index(phase):
        reasons.append(f"not issued yet: the sector is at {s.phase} ({s.state})")
        return out
    if s.state is State.CHAIN:
        reasons.append(f"waiting for the chain step '{s.chain_step}' before {phase}")
        return out
    names = store.names
    lease = store.r.get(names.lease_key(job_id, s.attempt))
    if lease:
        reasons.append(f"running on {lease_holder(str(lease))} (attempt {s.attempt})")
        return out
    if rec.stalled is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.stalled))
        reasons.append(f"stalled: no progress since {since} UTC (the watchdog's flag)")
    if any(e.job.job_id == job_id for _, e in store.held()):
        reasons.append("held in the outbox by an earlier version; released at the next tick")
        return out
    if s.error:
        reasons.append(f"last attempt: {s.error}")
    queue = _queue_of(names, rec, phase, queue_depth)
    out["waiting_in"] = queue
    out["queue_ready"] = queue_depth(queue) if queue else None
    if out["queue_ready"] == 0:
        reasons.append("not in its queue now: waiting out a retry backoff in a delay queue, "
                       "or being claimed this moment")
    elif out["queue_ready"] is not None:
        reasons.append(f"waiting in {queue} with {out['queue_ready']} ready job(s) (FIFO; "
                       "free slots choose between miners by slot time per weight)")
    now = store.redis_now()  # the clock the workers' entries are stamped with
    for w in workers:
        out["workers"].append({"worker": w.name, "why_not": _why_not(w, rec, phase, now)})
    if not any(w["why_not"] is None for w in out["workers"]) and workers:
        reasons.append("no worker can take it now (see workers)")
    elif not workers:
        reasons.append("no worker is registered in this pool")
    return out


def _queue_of(names: Names, rec: Record, phase: Phase,
              queue_depth: Callable[[str], int | None]) -> str | None:
    lane = Lane.URGENT if rec.escalated == rec.sector.attempt else Lane(rec.sector_class.value)
    if phase in LOCAL_PHASES and rec.sector.home:
        local = names.worker_queue(rec.sector.home, phase)
        if queue_depth(local) is not None:
            return local
    pool = (names.pool_queue(phase, lane) if lane is Lane.URGENT
            else names.miner_queue(phase, lane, rec.sector.miner))
    # Aged jobs move from deal/cc to urgent on their own.
    if lane is not Lane.URGENT and not queue_depth(pool):
        return names.pool_queue(phase, Lane.URGENT)
    return pool


def _why_not(w: WorkerStatus, rec: Record, phase: Phase, now: float) -> str | None:
    """Why this worker does not take the job now; None if it could."""
    if w.stale(now):
        return f"no heartbeat for {now - w.at:.0f}s"
    if phase not in w.phases:
        return f"does not serve {phase}"
    if rec.size not in w.sector_sizes:
        return f"does not take {sector_size_name(rec.size)} sectors"
    if phase in LOCAL_PHASES and rec.sector.home and rec.sector.home not in (
            w.name, w.storage_group):
        return f"data elsewhere (home {rec.sector.home})"
    slots = [s for s in w.slots if phase in s.phases]
    if not slots:
        return f"no slot serves {phase} now (paused or narrowed)"
    if all(s.paused for s in slots):
        return "paused"
    idle = [s for s in slots if not s.paused and s.state is not SlotStatus.BUSY]
    held = [why_held(s.held_back, s.held_sizes, phase, rec.size) for s in idle]
    if any(why is None for why in held):
        return None
    if held:
        return f"held back: {held[0]}"
    return "slots busy: " + ", ".join(s.job or "?" for s in slots if s.state is SlotStatus.BUSY)
