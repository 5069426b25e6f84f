"""Admission: pending sectors enter the pool (their ap job is published) while the miner has
fewer in flight than its target (fairness.py: its weighted, work-conserving part of the
pool's capacity). Jobs of admitted sectors are never held back.

Deal sectors are counted on their own: a deal enqueued behind a batch of CC sectors is
admitted at once and goes before the miner's CC in every queue. Sectors whose deadline is
at risk are admitted regardless, on the urgent lane."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from broker_topology.messages import Job, Phase, SectorClass

from .pipeline import State, enter
from .publisher import Publisher, build_job, oversize
from .store import Envelope, Record, SectorStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker_topology.transport import Transport

    from .fairness import Fairness

log = logging.getLogger(__name__)
#: Pending sectors looked at per round when searching for deadline-urgent ones.
SCAN_LIMIT = 256


def admit(store: SectorStore, fairness: Fairness, publisher: Publisher, link: Transport,
          is_urgent: Callable[[Record], bool] | None = None) -> int:
    """Admit as many pending sectors as the share allows; returns how many."""
    pending, inflight, deal_inflight = store.counts()
    target = fairness.target(pending + inflight)
    release_held(store, fairness, publisher, link)
    if pending == 0:
        return 0
    admitted = 0
    now = store.redis_now()  # deadlines and dispatch times are on the Redis clock
    quota_full = {SectorClass.DEAL: deal_inflight >= target, SectorClass.CC: inflight >= target}
    # Pending sectors come best first (deal, then earliest deadline); scan a bounded window.
    window = store.pending(min(pending, SCAN_LIMIT) if is_urgent else target)
    for number, rec in zip(window, store.get_many(window), strict=True):
        if rec is None or rec.sector.state is not State.PENDING:
            continue
        urgent = is_urgent is not None and is_urgent(rec)
        if quota_full[rec.sector_class] and not urgent:
            if all(quota_full.values()) and is_urgent is None:
                break
            continue
        after = enter(rec.sector, Phase.AP, state=State.QUEUED)
        job = build_job(rec, after, now)
        too_big = oversize(job)
        if too_big is not None:  # every worker would park it: fail it now, saying why
            store.transition(rec, replace(after, state=State.FAILED, error=too_big), now)
            log.error("sector %s/%d failed: %s", store.miner, number, too_big)
            continue
        env = envelope(store, fairness, job, 0.0, urgent, now)
        quota = None if urgent else target
        if store.transition(rec, after, now, envelope=env, max_inflight=quota,
                            quota_of=rec.sector_class if rec.sector_class is SectorClass.DEAL
                            else None):
            if not env.held:
                publisher.publish(link, env)
            admitted += 1
        else:
            quota_full[rec.sector_class] = True
    if admitted:
        log.info("admitted %d sector(s) (target: %d in flight)", admitted, target)
    return admitted


def envelope(store: SectorStore, fairness: Fairness, job: Job, delay_s: float, urgent: bool,
             now: float) -> Envelope:
    """The job to publish. Never held: a job that exists is in the pool, where free slots
    choose between miners by weight (work-conserving)."""
    return Envelope(job, delay_s, urgent, now)


def release_held(store: SectorStore, fairness: Fairness, publisher: Publisher,
                 link: Transport) -> int:
    """Publish any job an earlier version held back in the outbox, best first."""
    released = 0
    for key, env in store.held():
        fresh = store.release(key, env, store.redis_now())
        if fresh is not None:
            released += publisher.publish(link, fresh)
    return released
