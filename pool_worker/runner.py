"""The slot threads and the job protocol: what happens to a job once a slot has it.

Per job: lease (one script: already done? republish the recorded result; held by a live
instance, this one included? defer the copy; else granted, with a fencing epoch) ->
crash loop? park it -> execute -> record the result under the epoch (fenced off: drop it)
-> publish it (confirmed) -> ack. A crash anywhere before the ack leaves the delivery
unacked, and the broker redelivers it.

A job handed back (drain, `pause --now`, Redis away) is published again through the
shortest delay queue and then acked: a reject with requeue would count toward the quorum
queue's delivery limit, and a job handed back ten times would end in the poison queue."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker_topology.blobs import Blobs
from broker_topology.errors import DeliveryLost, JobError, PermanentError, Unroutable
from broker_topology.handback import hand_back
from broker_topology.link import settle
from broker_topology.messages import MAX_BODY_BYTES, Job, Outcome, Result
from broker_topology.naming import Names
from broker_topology.poison import Reason, park

from .cpus import pin_current_thread
from .executors.base import Cancelled, ExecContext
from .leases import Done, Grant, Held, Leases
from .shares import Shares
from .slots import Slot, SlotState

if TYPE_CHECKING:
    from broker_topology.settings import PoolSettings
    from broker_topology.transport import Delivery, Session, Transport

    from .config import WorkerSettings
    from .executors.base import Executor
    from .storage import Storage

log = logging.getLogger(__name__)
#: An error text longer than this is cut (the full text is in the worker's log).
ERROR_CHARS = 4000


class Runner:
    def __init__(self, pool: PoolSettings, cfg: WorkerSettings, transport: Transport,
                 executors: dict[Any, Executor], leases: Leases, blobs: Blobs,
                 shares: Shares, storage: Storage, slots: list[Slot],
                 on_free: Callable[[], None]) -> None:
        self.pool = pool
        self.cfg = cfg
        self.names = Names(pool.namespace)
        self.transport = transport
        self.executors = executors
        self.leases = leases
        self.blobs = blobs
        self.shares = shares
        self.storage = storage
        self.slots = slots
        #: Called when a slot frees up: run a claim pass now.
        self.on_free = on_free
        self.by = f"pool-worker/{cfg.name}"
        self._threads = [threading.Thread(target=self._slot_loop, args=(s,),
                                          name=f"slot-{s.index}", daemon=True)
                         for s in slots]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, join_s: float) -> list[int]:
        """Cancel every running job (each is handed back), wait up to `join_s` for the
        slot threads; returns the indexes of slots still running then."""
        for s in self.slots:
            s.cancel.set()
            s.inbox.put(None)
        limit = time.monotonic() + join_s
        for t in self._threads:
            t.join(max(0.0, limit - time.monotonic()))
        return [s.index for s, t in zip(self.slots, self._threads, strict=True)
                if t.is_alive()]

    # -- slot threads ------------------------------------------------------------------------
    def _slot_loop(self, slot: Slot) -> None:
        pin_current_thread(slot.cores)  # executors and their children inherit it
        while (item := slot.inbox.get()) is not None:
            delivery, job = item
            try:
                self.handle(slot, delivery, job)
            except Exception as exc:  # e.g. Redis away for minutes: hand the job back
                log.exception("slot %d: %s failed outside the executor; handing it back",
                              slot.index, job.job_id)
                slot.last_error = f"{type(exc).__name__}: {exc}"
                self._try_hand_back(slot, delivery, job)
            finally:
                if slot.started_at is not None:  # handed back or failed: what it used
                    self._settle_charge(slot, time.time() - slot.started_at)
                slot.release()
                self.on_free()
        slot.state = SlotState.STOPPED

    def handle(self, slot: Slot, delivery: Delivery, job: Job) -> None:
        lease = self.leases.acquire(job, slot.index)
        if isinstance(lease, Done):
            log.info("%s attempt %d already done; republishing its result", job.job_id,
                     job.attempt)
            self._report(delivery, job, lease.result)
            return
        if isinstance(lease, Held):
            log.info("%s attempt %d is running on %s; deferring this copy", job.job_id,
                     job.attempt, lease.holder)
            self._defer(delivery, job)
            return
        slot.grant = lease
        if lease.starts > self.cfg.max_starts:
            self._park_crash_loop(delivery, job, lease)
            return
        result = self._execute(slot, job, lease)
        if result is None:
            if slot.lease_lost:
                # Another worker was granted the attempt (we were frozen or cut off past the
                # lease): it runs there; drop our copy.
                log.warning("%s attempt %d: lease taken over; dropping our copy", job.job_id,
                            job.attempt)
                settle(self.transport.ack(delivery), job.job_id)
                return
            log.info("%s attempt %d handed back", job.job_id, job.attempt)
            self._defer(delivery, job)
            self.leases.release(lease)
            return
        body = result.to_bytes()
        self._settle_charge(slot, result.finished_at - result.started_at)
        if not self.leases.finish(lease, body):
            log.warning("%s attempt %d: epoch %d fenced off (granted to another worker "
                        "since); dropping our result", job.job_id, job.attempt, lease.epoch)
            settle(self.transport.ack(delivery), job.job_id)
            return
        self._report(delivery, job, body)

    def _execute(self, slot: Slot, job: Job, grant: Grant) -> Result | None:
        ctx = self._context(slot, job)
        started = time.time()
        fields: dict[str, Any]
        try:
            runnable = job.model_copy(update={"params": self.blobs.resolve(job.params)})
            outputs = self.executors[job.phase].run(runnable, ctx)
            fields = {"outcome": Outcome.OK, "outputs": self.blobs.outbound(outputs)}
        except Cancelled:
            return None
        except JobError as exc:
            fields = {"outcome": Outcome.ERROR, "error_class": exc.error_class,
                      "error": str(exc)[-ERROR_CHARS:]}
        except Exception as exc:  # an executor bug is a temporary failure, capped by attempts
            log.exception("%s: executor raised", job.job_id)
            fields = {"outcome": Outcome.ERROR, "error_class": JobError.error_class,
                      "error": f"{type(exc).__name__}: {exc}"[-ERROR_CHARS:]}
        if fields["outcome"] is Outcome.ERROR:
            slot.last_error = f"{job.job_id}: {fields['error']}"
        log.info("%s attempt %d on slot %d: %s in %.2fs", job.job_id, job.attempt, slot.index,
                 fields.get("error_class") or "ok", time.time() - started)
        result = Result.for_job(job, self.cfg.name, started, time.time(),
                                home=self.cfg.locality, epoch=grant.epoch, **fields)
        if len(result.to_bytes()) > MAX_BODY_BYTES:  # cannot happen with blobs; never park
            error = PermanentError(f"result of {len(result.to_bytes())} bytes exceeds "
                                   f"{MAX_BODY_BYTES}")
            result = Result.for_job(job, self.cfg.name, started, time.time(),
                                    home=self.cfg.locality, epoch=grant.epoch,
                                    outcome=Outcome.ERROR, error_class=error.error_class,
                                    error=str(error))
        return result

    def _settle_charge(self, slot: Slot, seconds: float) -> None:
        """The miner is charged the slot time the job really took (fair queuing)."""
        charge = slot.charge
        if charge is None:
            return
        slot.charge = None
        try:
            self.shares.correct(charge, seconds)
        except Exception as exc:  # Redis away: shares are a little off, the job is fine
            log.debug("slot time of %s not settled: %s", charge.miner, exc)

    def _context(self, slot: Slot, job: Job) -> ExecContext:
        return ExecContext(workdir=self.storage.workdir(slot.index, job.miner, job.sector),
                           sealed_dir=self.storage.sealed_dir, worker=self.cfg.name,
                           slot=slot.index, gpu=slot.gpu, cores=slot.cores,
                           cancelled=slot.cancel)

    # -- talking back ------------------------------------------------------------------------
    def _report(self, delivery: Delivery, job: Job, result: bytes) -> None:
        """Publish the result (confirmed; waits out a reconnect), then ack the job: one
        call on the I/O thread, the ack only once the broker confirmed the result."""
        published = threading.Event()

        def publish_then_ack(session: Session) -> None:
            if not published.is_set():  # a retry after a reconnect publishes again
                session.publish(self.names.results, job.miner, result)
                published.set()
            session.ack(delivery)

        try:
            self.transport.call(publish_then_ack, durable=True).result()
        except Unroutable:
            log.error("no results queue for miner %s; parking %s", job.miner, job.job_id)
            self._park(delivery, job, Reason.NO_RESULTS_QUEUE,
                       f"results queue of {job.miner} missing")
        except DeliveryLost:
            log.info("%s: delivery gone before its ack/reject; the broker redelivers it",
                     job.job_id)

    def _defer(self, delivery: Delivery, job: Job) -> None:
        """Send the job round again through the shortest delay queue, then ack this copy:
        a new message, so no delivery limit is spent on it."""
        body, bucket = job.to_bytes(), min(self.pool.delay_buckets)
        settle(self.transport.call(lambda s: hand_back(s, self.names, delivery, body, bucket)),
               job.job_id)

    def _try_hand_back(self, slot: Slot, delivery: Delivery, job: Job) -> None:
        try:
            self._defer(delivery, job)
        except Exception as exc:  # broker gone too: the unacked delivery is requeued anyway
            log.warning("%s: could not hand back (%s); the broker requeues it", job.job_id, exc)
        grant = slot.grant
        if grant is not None:
            try:
                self.leases.release(grant)
            except Exception as exc:  # Redis away: the lease expires by itself
                log.warning("%s: could not release the lease (%s)", job.job_id, exc)

    def _park_crash_loop(self, delivery: Delivery, job: Job, grant: Grant) -> None:
        """The attempt was granted `starts` times and never finished: every worker that
        took it died. Park it (the miner fails the sector as a crash)."""
        log.error("%s attempt %d started %d times without finishing; parking it", job.job_id,
                  job.attempt, grant.starts - 1)
        self._park(delivery, job, Reason.CRASH_LOOP,
                   f"started {grant.starts - 1} times without finishing "
                   "(the worker died each time)")
        self.leases.release(grant)

    def _park(self, delivery: Delivery, job: Job, reason: Reason, detail: str) -> None:
        body = job.to_bytes()
        settle(self.transport.call(lambda s: park(
            s, self.names, delivery, body, reason=reason, detail=detail,
            source=delivery.routing_key, by=self.by)), job.job_id)
