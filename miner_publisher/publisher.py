"""Turning sector transitions into published jobs: build the job, pick its route, publish
with confirms, then clear it from the outbox."""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

from broker_topology.messages import (
    LANE_PRIORITY,
    LOCAL_PHASES,
    MAX_BODY_BYTES,
    Job,
    Lane,
    job_id,
)
from broker_topology.naming import POOL_ORIGIN, Names, delay_headers, routing_key
from broker_topology.transport import Session, Transport

from .store import Envelope, Record, SectorStore

if TYPE_CHECKING:
    from .pipeline import Sector

log = logging.getLogger(__name__)


def build_job(rec: Record, sector: Sector, now: float) -> Job:
    return Job(job_id=job_id(sector.miner, sector.number, sector.phase), miner=sector.miner,
               sector=sector.number, phase=sector.phase, attempt=sector.attempt,
               sector_class=rec.sector_class, size=rec.size, deadline=rec.deadline,
               home=sector.home if sector.phase in LOCAL_PHASES else None, issued_at=now,
               params=rec.params)


def lane_of(env: Envelope) -> Lane:
    return Lane.URGENT if env.urgent else Lane(env.job.sector_class.value)


def route(names: Names, env: Envelope, delay_buckets: tuple[int, ...]
          ) -> tuple[str, str, dict[str, str] | None]:
    """(exchange, routing key, headers). Follow-ups go to the home worker through `local`
    (which falls back to the pool when that worker has no queue for the phase); a retry
    waits in the delay bucket nearest its backoff and then returns the same way."""
    job = env.job
    lane = lane_of(env)
    origin = job.home if job.home else POOL_ORIGIN
    key = routing_key(origin, job.phase, lane, job.miner)
    if env.delay_s > 0 and delay_buckets:
        bucket = min(delay_buckets, key=lambda b: abs(b - env.delay_s))
        return names.delay, key, delay_headers(bucket)
    return (names.local if job.home else names.jobs), key, None


def target_queue(names: Names, env: Envelope) -> str:
    """The queue a job published now lands in (a home without a queue for the phase sends
    it on to the pool: the home's queue is still the right doorbell for its workers)."""
    if env.job.home:
        return names.worker_queue(env.job.home, env.job.phase)
    lane = lane_of(env)
    if lane is Lane.URGENT:
        return names.pool_queue(env.job.phase, lane)
    return names.miner_queue(env.job.phase, lane, env.job.miner)


class Publisher:
    def __init__(self, names: Names, store: SectorStore, delay_buckets: tuple[int, ...]) -> None:
        self.names = names
        self.store = store
        self.delay_buckets = delay_buckets

    def publish(self, link: Transport, env: Envelope, *, fresh: bool = False) -> bool:
        """Claim the outbox entry, publish (confirmed, retried across reconnects), then
        clear it. False when the entry is gone or another instance is publishing it: that
        one does, so the sweep never sends a second copy of an entry in flight. `fresh`:
        the caller's transition wrote the entry just now, claimed by us for the outbox
        grace, so the claim is only renewed if the broker takes a third of that."""
        if not fresh and self.store.claim(env) != 1:
            log.debug("%s attempt %d: outbox entry taken or gone; not publishing",
                      env.job.job_id, env.job.attempt)
            return False
        exchange, key, headers = route(self.names, env, self.delay_buckets)
        body = env.job.to_bytes()

        def send(session: Session) -> None:
            session.publish(exchange, key, body, headers=headers, message_id=env.key,
                            priority=LANE_PRIORITY[lane_of(env)])
            if headers is None:
                # Wake idle workers of this phase instead of having them poll, naming the
                # queue (transient, unconfirmed: a lost doorbell costs one poll interval).
                session.publish(self.names.doorbell, env.job.phase.value,
                                target_queue(self.names, env).encode(), persistent=False,
                                confirm=False)

        pending = link.call(send, durable=True)
        renew_s = (self.store.grace_ms if fresh else self.store.claim_ms) / 3000
        while True:
            try:
                pending.result(timeout=renew_s)
                break
            except FutureTimeout:  # a reconnect, a blocked broker: keep the entry ours
                self.store.claim(env)
                renew_s = self.store.claim_ms / 3000
        self.store.outbox_done(env, count="jobs_published")
        log.debug("published %s attempt %d to %s %s", env.job.job_id, env.job.attempt,
                  exchange, key)
        return True


def oversize(job: Job) -> str | None:
    """Why `job` cannot be published (encoded over MAX_BODY_BYTES: every worker would park
    it), or None. The reason becomes the sector's permanent error."""
    size = len(job.to_bytes())
    if size <= MAX_BODY_BYTES:
        return None
    return (f"{job.phase}: permanent: the {job.phase} job is {size} bytes, over the "
            f"{MAX_BODY_BYTES}-byte message limit (phase outputs too large to carry inline)")
