"""The I/O thread's half of the worker: topology, doorbell, control, and the claim pass.

A free slot pulls (basic.get, in the order policy.py gives: pipeline-end first, then fair
between miners). What it gets is triaged here,
on the I/O thread, before any slot sees it: a message that does not decode, or sits in the
wrong queue, is parked in q.poison with the reason; a sector size this worker does not take
goes round again through the delay queue; a copy of a job already running in this process
is deferred the same way (never run beside it, never counted as a start). Triage cannot
fail for the process: whatever goes wrong with one message parks that message."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING

from broker_topology.errors import MessageError
from broker_topology.handback import hand_back, returns
from broker_topology.messages import Job, Phase
from broker_topology.naming import Names
from broker_topology.poison import Reason, park
from broker_topology.topology import pool_topology, worker_topology
from broker_topology.units import sector_size_name

from .claimer import candidate_queues, is_miner_lane, phase_of_queue, slot_lanes
from .control import Controller, consume_control
from .policy import slot_order
from .shares import Shares

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker_topology.control import WorkerStatus
    from broker_topology.settings import PoolSettings
    from broker_topology.transport import Delivery, Session

    from .config import WorkerSettings
    from .resources import Admission
    from .slots import Slot

log = logging.getLogger(__name__)
#: Fair-share state (miners, virtual times, durations) is re-read at most this often.
SHARES_REFRESH_S = 0.1
#: Returns of one job (sent round again by workers that cannot run it) after which the
#: registry is asked whether any live worker takes it at all.
UNSERVED_AFTER = 3


class Consumer:
    def __init__(self, pool: PoolSettings, cfg: WorkerSettings, slots: list[Slot],
                 admission: Admission, control: Controller, shares: Shares,
                 registry: Callable[[], list[WorkerStatus]]) -> None:
        self.pool = pool
        self.cfg = cfg
        self.names = Names(pool.namespace)
        self.slots = slots
        self.admission = admission
        self.control = control
        self.shares = shares
        #: The live workers' registry entries (read only when a job keeps coming back).
        self.registry = registry
        self.by = f"pool-worker/{cfg.name}"
        self.stopping = threading.Event()
        self._claim_now = True
        self._next_poll = 0.0
        self._rng = random.Random()
        #: Queues doorbells named since the last claim pass, and whether that pass found
        #: every candidate queue empty (then a doorbell's queue is tried directly).
        self._rung: set[str] = set()
        self._all_empty = False
        #: Ready counts as last read or claimed down; a queue that was empty and has not
        #: been rung since is not probed again until the next full probe (every idle_poll).
        self._counts: dict[str, int] = {}
        self._next_full = 0.0
        self._next_refresh = 0.0
        self._queues: dict[tuple[frozenset[Phase], tuple[str, ...]], list[str]] = {}

    def request_claim(self) -> None:
        """Run a claim pass at the next tick (a slot freed up, a slot was resumed)."""
        self._claim_now = True

    # -- I/O thread ----------------------------------------------------------------------------
    def on_connect(self, session: Session) -> None:
        session.declare(pool_topology(self.pool)
                        + worker_topology(self.pool, self.cfg.locality, self.cfg.phases))
        session.consume("doorbell", "", lambda _d, body: self._ring(body), auto_ack=True,
                        bindings=[(self.names.doorbell, p.value) for p in self.cfg.phases])
        consume_control(session, self.control, self.names, self.cfg.name)
        self._claim_now = True

    def _ring(self, body: bytes) -> None:
        """A publisher's doorbell: work arrived in the queue it names."""
        self._rung.add(body.decode(errors="replace")[:300])
        self._claim_now = True

    def on_tick(self, session: Session) -> None:
        if self.stopping.is_set():
            return
        idle = [s for s in self.slots if s.claimable]
        if not idle or not (self._claim_now or time.monotonic() >= self._next_poll):
            return
        self._claim_now = False
        rung, self._rung = self._rung, set()
        polling = time.monotonic() >= self._next_poll
        self._next_poll = time.monotonic() + self.cfg.idle_poll * self._rng.uniform(0.8, 1.2)
        if polling or time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + SHARES_REFRESH_S
            self.shares.refresh()
        for slot in idle:
            slot.queues = self._candidates(slot.phases, tuple(self.shares.miners))
        idle = self.admission.admit(idle, self.slots)  # enough disk and memory, per phase
        if self._all_empty and not polling and any(
                q in s.candidates for s in idle for q in rung):
            # Everything was empty, so the rung queue is the best there is: ask it alone
            # instead of probing every queue (every idle worker hears the same doorbell).
            self._claim_rung(session, idle, rung)
            return
        counts = self._probe(session, {q for s in idle for q in s.candidates}, rung, polling)
        self._all_empty = not any(counts.values())
        for slot in idle:
            self._claim_best(session, slot, counts)

    def _candidates(self, phases: frozenset[Phase], miners: tuple[str, ...]) -> list[str]:
        """candidate_queues, kept per (phases, miners): they change rarely."""
        key = (phases, miners)
        queues = self._queues.get(key)
        if queues is None:
            if len(self._queues) > 64:
                self._queues.clear()
            queues = self._queues[key] = candidate_queues(self.names, self.cfg.locality,
                                                          phases, miners)
        return list(queues)

    def _probe(self, session: Session, queues: set[str], rung: set[str],
               polling: bool) -> dict[str, int]:
        """Ready counts of `queues` (a passive declare each, ~0.1 ms of broker CPU and one
        round trip on this thread). Between full probes only the queues that may hold
        work are read: rung since the last pass, not empty when last read, or never read.
        Work that arrives without a doorbell (a retry out of a delay queue, a lost
        doorbell) is seen at the next full probe, within idle_poll."""
        now = time.monotonic()
        full = polling or now >= self._next_full
        if full:
            self._next_full = now + self.cfg.idle_poll
            self._counts = {}
        known = self._counts
        counts = {q: session.ready_count(q) if full or q in rung or known.get(q, 1) > 0
                  else 0 for q in queues}
        known.update(counts)
        return known

    def _claim_best(self, session: Session, slot: Slot, counts: dict[str, int]) -> None:
        """Ask the slot's queues in policy order until one gives it a job."""
        allowed = {q: counts.get(q, 0) for q in slot.candidates}
        lanes = slot_lanes(self.names, self.cfg.locality, slot.phases, self.shares.miners)
        while order := slot_order(lanes, self.shares.vtimes, allowed,
                                  deals_first=self.pool.deals_first, rng=self._rng):
            queue = order[0]
            if self.claim_into(session, slot, queue):
                counts[queue] = max(0, counts.get(queue, 0) - 1)
                self._charge(slot, queue)
                self._claim_now = True  # there may be more for other slots
                return
            allowed[queue] = counts[queue] = 0

    def _charge(self, slot: Slot, queue: str) -> None:
        """Charge the claimed job's miner its expected slot time (fair queuing)."""
        if slot.job is not None:
            slot.charge = self.shares.charge(
                slot.job, chosen=is_miner_lane(self.names, queue))

    def _claim_rung(self, session: Session, idle: list[Slot], rung: set[str]) -> None:
        for queue in rung:
            slot = next((s for s in idle if queue in s.candidates), None)
            # Every idle worker hears the doorbell and one takes the job: a passive declare
            # (~0.1 ms of broker CPU) spares the others an empty quorum-queue get (~0.6 ms).
            if slot is None or session.ready_count(queue) == 0:
                continue
            if self.claim_into(session, slot, queue):
                self._charge(slot, queue)
                idle.remove(slot)
                self._all_empty = False
                self._counts[queue] = 1  # there may be more: the next pass reads it again
                self._claim_now = True

    def claim_into(self, session: Session, slot: Slot, queue: str) -> bool:
        """One basic.get. True if the slot got a job; False if the queue had nothing it
        may run (empty, parked, sent round again)."""
        got = session.get(slot.channel_key, queue)
        if got is None:
            return False
        delivery, body = got
        try:
            return self._triage(session, slot, queue, delivery, body)
        except Exception as exc:  # that message's failure, never the I/O thread's
            log.exception("triage of a message in %s failed; parking it", queue)
            park(session, self.names, delivery, body, reason=Reason.UNKNOWN,
                 detail=f"triage failed: {type(exc).__name__}: {exc}", source=queue,
                 by=self.by)
            return False

    def _triage(self, session: Session, slot: Slot, queue: str, delivery: Delivery,
                body: bytes) -> bool:
        try:
            job = Job.from_bytes(body)
            if job.phase is not phase_of_queue(self.names, queue):
                raise MessageError(Reason.MISROUTED, f"{job.phase} job in {queue}")
        except MessageError as exc:
            log.warning("message in %s parked in poison queue: %s", queue, exc)
            park(session, self.names, delivery, body, reason=exc.reason, detail=exc.detail,
                 source=queue, by=self.by)
            return False
        why = self.admission.fits(slot, job.phase, job.size)
        if why is not None:
            self._cannot_run(session, delivery, job, queue, why)
            return False
        running = next((s for s in self.slots if s.job is not None
                        and s.job.job_id == job.job_id and s.job.attempt == job.attempt), None)
        if running is not None:
            log.info("%s attempt %d already runs on slot %d; deferring this copy",
                     job.job_id, job.attempt, running.index)
            self._round_again(session, delivery, job)
            return False
        slot.assign(delivery, job)
        return True

    def _cannot_run(self, session: Session, delivery: Delivery, job: Job, queue: str,
                    why: str) -> None:
        """A job this slot cannot run (its size is not taken here, or does not fit now):
        back through the shortest delay queue, and its queue left to the others until they
        have polled it once. After a few such returns, if no live worker takes the size at
        all, it is parked (the miner fails the sector saying so) instead of going round for
        ever."""
        if returns(delivery) + 1 >= UNSERVED_AFTER and not self._anyone_takes(job):
            size = sector_size_name(job.size)
            log.error("%s: no live worker takes %s %s jobs; parking it", job.job_id, size,
                      job.phase)
            park(session, self.names, delivery, job.to_bytes(), reason=Reason.UNSERVED_SIZE,
                 detail=f"no live worker takes {size} {job.phase} jobs", source=queue,
                 by=self.by)
            return
        bucket = min(self.pool.delay_buckets)
        self.admission.shun(queue, bucket + 1.5 * self.cfg.idle_poll)
        log.warning("%s: %s; sent back for %ds", job.job_id, why, bucket)
        hand_back(session, self.names, delivery, job.to_bytes(), bucket, count_return=True)

    def _anyone_takes(self, job: Job) -> bool:
        """Does a live worker serve this phase at this size (the registry says)? True when
        the registry cannot be read: never park on a guess."""
        try:
            return any(job.phase in w.phases and job.size in w.sector_sizes
                       for w in self.registry())
        except Exception as exc:
            log.debug("registry not read: %s", exc)
            return True

    def _round_again(self, session: Session, delivery: Delivery, job: Job) -> None:
        hand_back(session, self.names, delivery, job.to_bytes(), min(self.pool.delay_buckets))
