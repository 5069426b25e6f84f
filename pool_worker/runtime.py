"""The worker process: claims jobs for free slots, runs them, reports results.

Threads: the AMQP I/O thread (claims on its ticks, acks and publishes for everyone), one
thread per slot (runs the executor), one keeper (renews leases, heartbeats the registry).
Per job: claim (basic.get, strict order) -> decode (bad: poison) -> done marker? republish
the recorded result -> lease (held by another live worker: defer) -> execute -> record the
result (done marker) -> publish it (confirmed) -> ack. A crash anywhere before the ack
leaves the delivery unacked, and the broker redelivers it."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pika.exceptions
import redis

from broker_topology.control import REGISTRY_TTL_S, GpuInfo, registry_key
from broker_topology.declare import declare
from broker_topology.errors import JobError, MessageError, Unroutable
from broker_topology.link import Link, Session, settle
from broker_topology.messages import Job, Outcome, Result
from broker_topology.naming import Names
from broker_topology.poison import park
from broker_topology.redis_conn import connect_redis
from broker_topology.topology import pool_topology, worker_topology

from .claimer import first_nonempty, phase_of_queue
from .control import Controller, control_channel
from .cpus import pin_current_thread
from .executors.base import Cancelled, ExecContext
from .leases import Leases
from .registry import Registry
from .resources import Admission
from .slots import Slot, SlotState, build_slots
from .storage import Storage

if TYPE_CHECKING:
    from broker_topology.settings import PoolSettings

    from .config import WorkerSettings
    from .executors.base import Executor

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, pool: PoolSettings, cfg: WorkerSettings,
                 executors: dict[Any, Executor], client: redis.Redis,
                 gpus: dict[int, GpuInfo] | None = None) -> None:
        self.pool = pool
        self.cfg = cfg
        self.names = Names(pool.namespace)
        self.executors = executors
        self.redis = client
        self.instance = uuid.uuid4().hex[:8]
        self.leases = Leases(client, self.names, cfg.name, self.instance, cfg.lease_ttl)
        self.storage = Storage.from_config(cfg)
        self.slots = build_slots(cfg, self.names, self.storage)
        self.admission = Admission(executors, cfg.sector_sizes, self.storage.sealed_dir,
                                   self.names)
        self.control = Controller(cfg.name, self.slots, gpus or {}, self.request_claim)
        self.registry = Registry(name=cfg.name, instance=self.instance,
                                 broker_url=pool.amqp_url,
                                 heartbeat_interval=cfg.heartbeat_interval, phases=cfg.phases,
                                 storage_group=cfg.storage_group,
                                 sector_sizes=cfg.sector_sizes)
        self.stopping = threading.Event()
        self._claim_now = True
        self._next_poll = 0.0
        self._rng = random.Random()
        #: Queues doorbells named since the last claim pass, and whether that pass found
        #: every candidate queue empty (then a doorbell's queue is tried directly).
        self._rung: set[str] = set()
        self._all_empty = False
        self.link = Link(pool.amqp_url, name=f"pool-worker/{cfg.name}",
                         on_connect=self._on_connect, on_tick=self._on_tick,
                         heartbeat=pool.heartbeat)
        self._threads = [threading.Thread(target=self._slot_loop, args=(s,),
                                          name=f"slot-{s.index}", daemon=True)
                         for s in self.slots]
        self._keeper = threading.Thread(target=self._keep, name="keeper", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, ready_timeout: float = 30.0) -> None:
        self.storage.prepare()
        self.link.start(wait_s=ready_timeout)
        for t in [*self._threads, self._keeper]:
            t.start()
        log.info("worker %s up: %d slot(s), phases %s", self.cfg.name, len(self.slots),
                 ",".join(sorted(p.value for p in self.cfg.phases)))

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish for drain_timeout, then hand them back."""
        self.stopping.set()
        limit = time.monotonic() + (self.cfg.drain_timeout if drain_timeout is None
                                    else drain_timeout)
        while any(s.state is SlotState.BUSY for s in self.slots) and time.monotonic() < limit:
            time.sleep(0.1)
        for s in self.slots:
            s.cancel.set()
            s.inbox.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self.link.stop()
        try:  # best effort, no outage retries: the entry expires by itself anyway
            connect_redis(self.pool.redis_url, retries=0).delete(
                self.names.redis_key("worker", self.cfg.name))
        except redis.RedisError as exc:
            log.warning("could not remove registry entry: %s", exc)

    def request_claim(self) -> None:
        self._claim_now = True
        self.link.call(lambda _s: None)  # wakes the I/O thread

    # -- I/O thread: topology, doorbell, claims ----------------------------------------------
    def _on_connect(self, session: Session) -> None:
        declare(session.connection, pool_topology(self.pool)
                + worker_topology(self.pool, self.cfg.locality, self.cfg.phases))

        def doorbell(ch: Any) -> None:
            q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            for phase in self.cfg.phases:
                ch.queue_bind(q, self.names.doorbell, routing_key=phase.value)
            ch.basic_consume(q, lambda _c, _m, _p, body: self._ring(body), auto_ack=True)

        session.channel("doorbell", doorbell)
        session.channel("control", control_channel(self.control, self.names, self.cfg.name))
        self._claim_now = True

    def _ring(self, body: bytes) -> None:
        """A publisher's doorbell: work arrived in the queue it names."""
        self._rung.add(body.decode(errors="replace"))
        self._claim_now = True

    def _on_tick(self, session: Session) -> None:
        if self.stopping.is_set():
            return
        idle = [s for s in self.slots if s.claimable]
        if not idle or not (self._claim_now or time.monotonic() >= self._next_poll):
            return
        self._claim_now = False
        rung, self._rung = self._rung, set()
        polling = time.monotonic() >= self._next_poll
        self._next_poll = time.monotonic() + self.cfg.idle_poll * self._rng.uniform(0.8, 1.2)
        idle = self.admission.admit(idle, self.slots)  # enough disk and memory, per phase
        if self._all_empty and not polling and any(
                q in s.candidates for s in idle for q in rung):
            # Everything was empty, so the rung queue is the best there is: ask it alone
            # instead of probing every queue (every idle worker hears the same doorbell).
            self._claim_rung(session, idle, rung)
            return
        counts = self._probe(session, {q for s in idle for q in s.candidates})
        self._all_empty = not any(counts.values())
        for slot in idle:
            while (queue := first_nonempty(slot.candidates, counts)) is not None:
                if self._claim_into(session, slot, queue):
                    self._claim_now = True  # there may be more for other slots
                    break
                counts[queue] = max(0, counts[queue] - 1)

    def _claim_rung(self, session: Session, idle: list[Slot], rung: set[str]) -> None:
        for queue in rung:
            slot = next((s for s in idle if queue in s.candidates), None)
            if slot is not None and self._claim_into(session, slot, queue):
                idle.remove(slot)
                self._all_empty = False
                self._claim_now = True  # the next pass probes everything again

    def _probe(self, session: Session, queues: set[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for q in queues:
            try:
                ch = session.channel("probe")
                counts[q] = ch.queue_declare(q, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                counts[q] = 0  # queue gone (expired worker queue); channel reopens next use
        return counts

    def _claim_into(self, session: Session, slot: Slot, queue: str) -> bool:
        """One basic.get. True if the slot got a job; False if the queue had nothing
        usable (empty, or the message was parked as poison)."""
        ch = session.channel(slot.channel_key)
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            return False
        delivery = session.delivery(slot.channel_key, method, props)
        try:
            job = Job.from_bytes(body)
            if job.phase is not phase_of_queue(self.names, queue):
                raise MessageError("misrouted", f"{job.phase} job in {queue}")
        except MessageError as exc:
            log.warning("message in %s parked in poison queue: %s", queue, exc)
            park(session, self.names, delivery, body, reason=exc.reason, detail=exc.detail,
                 source=queue, by=f"pool-worker/{self.cfg.name}")
            return False
        if job.size not in self.cfg.sector_sizes:
            self._not_our_size(session, delivery, job, queue)
            return False
        slot.assign(delivery, job)
        return True

    def _not_our_size(self, session: Session, delivery: Any, job: Job, queue: str) -> None:
        """Send a job of a size this worker does not take back through the shortest delay
        queue (resources were checked for the sizes it takes), and leave its queue to the
        others until they have polled it once. Not a reject: that would count toward the
        queue's delivery limit and end in the poison queue."""
        bucket = min(self.pool.delay_buckets)
        self.admission.shun(queue, bucket + 1.5 * self.cfg.idle_poll)
        log.warning("%s is a %d-byte sector; this worker takes %s: sent back for %ds",
                    job.job_id, job.size, ",".join(map(str, self.cfg.sector_sizes)), bucket)
        session.publish(self.names.delay, delivery.routing_key, job.to_bytes(),
                        headers={"delay": f"{bucket}s"})
        session.ack(delivery)

    # -- slot threads ----------------------------------------------------------------------
    def _slot_loop(self, slot: Slot) -> None:
        pin_current_thread(slot.cores)  # executors and their children inherit it
        while (item := slot.inbox.get()) is not None:
            delivery, job = item
            try:
                self._handle(slot, delivery, job)
            except Exception as exc:  # e.g. Redis away for minutes: hand the job back
                log.exception("slot %d: %s failed outside the executor; handing it back",
                              slot.index, job.job_id)
                slot.last_error = f"{type(exc).__name__}: {exc}"
                settle(self.link.reject(delivery, requeue=True), job.job_id)
            finally:
                slot.release()
                if not self.stopping.is_set():
                    self.request_claim()
        slot.state = SlotState.STOPPED

    def _handle(self, slot: Slot, delivery: Any, job: Job) -> None:
        recorded = self.leases.done_result(job)
        if recorded is not None:
            log.info("%s attempt %d already done; republishing its result", job.job_id,
                     job.attempt)
            self._report(delivery, job, recorded)
            return
        holder = self.leases.acquire(job)
        if holder is not None:
            log.info("%s attempt %d is running on %s; deferring this copy", job.job_id,
                     job.attempt, holder)
            self._defer(delivery, job)
            return
        starts = self.leases.count_start(job)
        if starts > self.cfg.max_starts:
            self._park_crashed(delivery, job, starts)
            return
        result = self._execute(slot, job)
        if result is None and slot.lease_lost:
            # Another worker took the attempt over (we were frozen or cut off past the
            # lease): drop our copy, it runs there.
            log.warning("%s attempt %d: lease taken over by another worker; dropping our copy",
                        job.job_id, job.attempt)
            settle(self.link.ack(delivery), job.job_id)
            return
        if result is None:  # handed back: drain timeout or pause --now
            self.leases.uncount_start(job)
            self.leases.release(job)
            settle(self.link.reject(delivery, requeue=True), job.job_id)
            return
        body = result.to_bytes()
        self.leases.finish(job, body)
        self._report(delivery, job, body)

    def _execute(self, slot: Slot, job: Job) -> Result | None:
        ctx = self._context(slot, job)
        started = time.time()
        fields: dict[str, Any]
        try:
            outputs = self.executors[job.phase].run(job, ctx)
            fields = {"outcome": Outcome.OK, "outputs": outputs}
        except Cancelled:
            return None
        except JobError as exc:
            fields = {"outcome": Outcome.ERROR, "error_class": exc.error_class,
                      "error": str(exc)}
        except Exception as exc:  # an executor bug is a temporary failure, capped by attempts
            log.exception("%s: executor raised", job.job_id)
            fields = {"outcome": Outcome.ERROR, "error_class": JobError.error_class,
                      "error": f"{type(exc).__name__}: {exc}"}
        if fields["outcome"] is Outcome.ERROR:
            slot.last_error = f"{job.job_id}: {fields['error']}"
        log.info("%s attempt %d on slot %d: %s in %.2fs", job.job_id, job.attempt, slot.index,
                 fields.get("error_class") or "ok", time.time() - started)
        return Result.for_job(job, self.cfg.name, started, time.time(),
                              home=self.cfg.locality, **fields)

    def _context(self, slot: Slot, job: Job) -> ExecContext:
        return ExecContext(workdir=self.storage.workdir(slot.index, job.miner, job.sector),
                           sealed_dir=self.storage.sealed_dir, worker=self.cfg.name,
                           slot=slot.index, gpu=slot.gpu, cores=slot.cores,
                           cancelled=slot.cancel)

    def _report(self, delivery: Any, job: Job, result: bytes) -> None:
        """Publish the result (confirmed; waits out a reconnect), then ack the job."""
        try:
            self.link.publish(self.names.results, job.miner, result).result()
        except Unroutable:
            log.error("no results queue for miner %s; parking %s", job.miner, job.job_id)
            self.link.call(lambda s: park(
                s, self.names, delivery, job.to_bytes(), reason="no_results_queue",
                detail=f"results queue of {job.miner} missing", source=delivery.routing_key,
                by=f"pool-worker/{self.cfg.name}")).result()
            return
        settle(self.link.ack(delivery), job.job_id)

    def _park_crashed(self, delivery: Any, job: Job, starts: int) -> None:
        """The attempt started `starts` times and never finished: every worker that took it
        died. Park it as a crash (the miner fails the sector with reason delivery_limit)."""
        log.error("%s attempt %d started %d times without finishing; parking it", job.job_id,
                  job.attempt, starts - 1)
        self.leases.release(job)
        self.link.call(lambda s: park(
            s, self.names, delivery, job.to_bytes(), reason="delivery_limit",
            detail=f"started {starts - 1} times without finishing (the worker died each time)",
            source=delivery.routing_key, by=f"pool-worker/{self.cfg.name}")).result()

    def _defer(self, delivery: Any, job: Job) -> None:
        bucket = min(self.pool.delay_buckets)
        self.link.call(lambda s: s.publish(self.names.delay, delivery.routing_key,
                                           job.to_bytes(),
                                           headers={"delay": f"{bucket}s"})).result()
        settle(self.link.ack(delivery), job.job_id)

    # -- keeper ----------------------------------------------------------------------------
    def _keep(self) -> None:
        renew_every = self.cfg.lease_ttl / 3
        next_renew = next_beat = 0.0
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            try:
                if now >= next_renew:
                    lost = self.leases.renew()
                    for slot in self.slots:
                        if slot.job is not None and self.leases.lease_key(slot.job) in lost:
                            slot.lease_lost = True
                            slot.cancel.set()
                    next_renew = now + renew_every
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.cfg.heartbeat_interval
            except Exception as exc:  # Redis away: try again next round
                log.warning("keeper: %s", exc)

    def _heartbeat(self) -> None:
        """The registry entry; kept an hour after the last beat so a dead worker is listed
        as stale instead of vanishing (a clean stop removes it)."""
        status = self.registry.status(self.control.views())
        self.redis.set(registry_key(self.names, self.cfg.name), status.to_bytes(),
                       ex=max(REGISTRY_TTL_S, int(self.cfg.heartbeat_interval * 6)))
