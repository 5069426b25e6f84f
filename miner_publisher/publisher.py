"""Turning sector transitions into published jobs: build the job, pick its route, publish
with confirms, then clear it from the outbox."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker_topology.link import Link, Session
from broker_topology.messages import LANE_PRIORITY, LOCAL_PHASES, Job, Lane, job_id
from broker_topology.naming import POOL_ORIGIN, Names, routing_key

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
        return names.delay, key, {"delay": f"{bucket}s"}
    return (names.local if job.home else names.jobs), key, None


def target_queue(names: Names, env: Envelope) -> str:
    """The queue a job published now lands in (a home without a queue for the phase sends
    it on to the pool: the home's queue is still the right doorbell for its workers)."""
    if env.job.home:
        return names.worker_queue(env.job.home, env.job.phase)
    return names.pool_queue(env.job.phase, lane_of(env))


class Publisher:
    def __init__(self, names: Names, store: SectorStore, delay_buckets: tuple[int, ...]) -> None:
        self.names = names
        self.store = store
        self.delay_buckets = delay_buckets

    def publish(self, link: Link, env: Envelope) -> None:
        """Publish (confirmed, retried across reconnects), then clear the outbox entry."""
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

        link.call(send, durable=True).result()
        self.store.outbox_done(env)
        self.store.count("jobs_published")
        log.debug("published %s attempt %d to %s %s", env.job.job_id, env.job.attempt,
                  exchange, key)
