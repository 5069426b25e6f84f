"""`miner-publisher run`: consume results, advance sectors, publish what comes next.

The broker thread only receives; this service's own thread does the Redis work, so a slow
or restarting Redis never stalls heartbeats. Order per result: decode, apply (CAS in Redis,
fenced by the result's lease epoch, next job written to the outbox in the same step),
publish the next job (confirmed), ack. One message that cannot be handled is that
message's failure (parked or recorded), never the process's; a wiped Redis is the one
thing that stops it (RedisWiped). Every time it writes or compares is on the Redis clock."""

from __future__ import annotations

import functools
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from broker_topology.errors import DeliveryLost, MessageError
from broker_topology.link import Link, settle
from broker_topology.messages import ErrorClass, Outcome, Phase, Result
from broker_topology.naming import Names
from broker_topology.poison import Reason, park
from broker_topology.topology import miner_topology, pool_topology
from broker_topology.transport import Delivery, Session, Transport
from broker_topology.units import parse_sector_size

from .admission import admit, envelope
from .chain import SimulatedChain
from .deadletters import DeadLetters
from .deadlines import Durations, clamp_duration, urgent_check
from .durable import Durable, RedisWiped
from .fairness import Fairness
from .homes import home_check, no_restart
from .parked import history_of, on_parked
from .pipeline import HomeCheck, State, Transition, is_current, on_chain_due, on_result
from .pledge import pledge
from .publisher import Publisher, build_job, oversize
from .store import Cas, Record, SectorStore, history_entry
from .watch import Watcher
from .workers import members

if TYPE_CHECKING:
    import redis

    from broker_topology.settings import PoolSettings

    from .config import MinerSettings

log = logging.getLogger(__name__)
TICK_S = 0.5
ESCALATE_EVERY_S = 2.0
#: A finished sector is replaced once the results at hand are applied, or after this long.
REFILL_S = 0.05
#: How often the offset of the Redis clock from the monotonic one is read again.
CLOCK_READ_S = 1.0
#: Finished sectors forgotten per round of periodic work at most (retention).
RETAIN_BATCH = 200


class MinerService:
    def __init__(self, settings: PoolSettings, cfg: MinerSettings, miner: str,
                 client: redis.Redis, *, durable: Durable | None = None,
                 transport: Callable[[Callable[[Session], None]], Transport] | None = None
                 ) -> None:
        self.settings = settings
        self.cfg = cfg
        self.miner = miner
        self.names = Names(settings.namespace)
        #: This host's memory of the dataset (None: no wipe detection, tests and tools).
        self.durable = durable
        self.store = SectorStore(client, self.names, miner, grace_s=cfg.outbox_grace,
                                 claim_s=cfg.outbox_claim, guard=durable)
        self.publisher = Publisher(self.names, self.store, settings.delay_buckets)
        self.fairness = Fairness(client, self.names, miner, cfg.weight, cfg.pool_depth)
        self.durations = Durations(client, self.names)
        self.chain = SimulatedChain()
        self.pledge_size = parse_sector_size(cfg.pledge_size)
        self._observed: dict[tuple[Any, int], float] = {}
        self.dead_letters = DeadLetters(client, self.names)
        self.client = client
        #: (queue kind, delivery, body) handed over by the I/O thread.
        self.inbox: queue.SimpleQueue[tuple[str, Delivery, bytes]] = queue.SimpleQueue()
        self.stopping = threading.Event()
        #: When to admit in place of finished sectors (monotonic; inf: nothing finished).
        self._refill_due = float("inf")
        #: Redis TIME - time.monotonic() as last read, and when (see _clock).
        self._clock_offset = 0.0
        self._clock_read = -math.inf
        self.rng = random.Random()
        self.watcher = Watcher(self.store, cfg, lambda env: self.publisher.publish(self.link, env),
                               lambda rec, t, now, history: self._commit(rec, t, now,
                                                                         history=history),
                               lambda: members(client, self.names))
        self._finished_filled = False
        #: `transport(on_connect)` builds another Transport (the in-memory twin in tests).
        self.link: Transport = transport(self._on_connect) if transport else Link(
            settings.amqp_url, name=f"miner-publisher/{miner}", on_connect=self._on_connect,
            heartbeat=settings.heartbeat)

    # -- I/O thread ------------------------------------------------------------------------
    def _on_connect(self, session: Session) -> None:
        session.declare(pool_topology(self.settings) + miner_topology(self.settings, self.miner))
        session.consume("results", self.names.results_queue(self.miner),
                        lambda d, b: self.inbox.put(("results", d, b)), prefetch=64)
        # Any running miner records what lands in q.poison (and fails crashed sectors).
        session.consume("poison", self.names.poison_queue,
                        lambda d, b: self.inbox.put(("poison", d, b)), prefetch=16)

    # -- service thread --------------------------------------------------------------------
    def run(self, ready_timeout: float = 30.0) -> None:
        """Serve until stop(); raises RedisWiped when the dataset vanished under us."""
        self.link.start(wait_s=ready_timeout)
        log.info("miner %s running (namespace %s)", self.miner, self.settings.namespace)
        next_tick = next_escalation = 0.0
        try:
            while not self.stopping.is_set():
                try:
                    kind, delivery, body = self.inbox.get(timeout=TICK_S)
                except queue.Empty:
                    pass
                else:
                    handler = self.handle_poison if kind == "poison" else self.handle
                    # Left unacked if it fails here: the broker redelivers it later.
                    self._guarded(f"{kind} message", functools.partial(handler, delivery, body))
                if time.monotonic() >= self._refill_due or (
                        self._refill_due < float("inf") and self.inbox.empty()):
                    self._guarded("refill", self.refill)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self._guarded("tick", self.tick)
                if time.monotonic() >= next_escalation:
                    next_escalation = time.monotonic() + ESCALATE_EVERY_S
                    self._guarded("escalation", self.periodic)
        finally:
            self.link.stop()

    def _guarded(self, what: str, work: Callable[[], None]) -> None:
        """One message or one round of periodic work fails alone (e.g. Redis away past its
        retries); the service goes on. A wiped Redis is not one failure: it stops it."""
        try:
            work()
        except RedisWiped:
            raise
        except Exception:
            log.exception("%s failed; trying again next round", what)

    def tick(self) -> None:
        if self.durable is not None:
            self.durable.check()  # before anything writes to a wiped Redis
        self.act_on_parked()
        self.advance_due()
        self.sweep_outbox()
        admit(self.store, self.fairness, self.publisher, self.link, self._urgent())

    def refill(self) -> None:
        """Admit sectors in place of those that finished: once per burst of results (the
        tick's admission also looks for deadline-urgent ones)."""
        self._refill_due = float("inf")
        admit(self.store, self.fairness, self.publisher, self.link)

    def periodic(self) -> None:
        self.escalate()
        pledge(self.store, self.cfg, self.pledge_size)
        self.retain()

    def retain(self) -> int:
        """Forget sectors finished longer than the retention ago, a bounded batch."""
        if not self._finished_filled:  # sectors that finished before the index existed
            self.store.fill_finished()
            self._finished_filled = True
        cutoff = self.store.redis_now() - self.cfg.retention
        trimmed = self.store.trim(cutoff, RETAIN_BATCH)
        if trimmed:
            log.info("retention: forgot %d sector(s) finished over %.0fs ago", trimmed,
                     self.cfg.retention)
        return trimmed

    def stop(self) -> None:
        self.stopping.set()

    def handle(self, delivery: Delivery, body: bytes) -> None:
        source = self.names.results_queue(self.miner)
        try:
            result = Result.from_bytes(body)
            if result.miner != self.miner:
                raise MessageError(Reason.MISROUTED, f"result for {result.miner} in {source}")
        except MessageError as exc:
            log.warning("result parked in poison queue: %s", exc)
            self._park(delivery, body, exc.reason, exc.detail)
            return
        except Exception as exc:  # a decoder bug: that message's failure only
            log.exception("result could not be decoded; parking it")
            self._park(delivery, body, Reason.NOT_JSON, f"{type(exc).__name__}: {exc}")
            return
        try:
            self.apply(result)
        except RedisWiped:
            raise
        except Exception as exc:
            # Parked, not lost: its dead letter moves the sector on (a retry).
            log.exception("result %s attempt %d could not be applied; parking it",
                          result.job_id, result.attempt)
            self._park(delivery, body, Reason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
            return
        # Not waited for: the next result is applied meanwhile (a lost ack is a redelivery,
        # which finds the sector moved on).
        self.link.ack(delivery).add_done_callback(
            functools.partial(_settled, what=f"result {result.job_id}"))

    def _park(self, delivery: Delivery, body: bytes, reason: str, detail: str) -> None:
        source = self.names.results_queue(self.miner)
        try:
            self.link.call(lambda s: park(s, self.names, delivery, body, reason=reason,
                                          detail=detail, source=source,
                                          by=f"miner-publisher/{self.miner}")).result()
        except Exception:  # the broker went away: the message is redelivered later
            log.exception("could not park a result; it stays in %s", source)

    def handle_poison(self, delivery: Delivery, body: bytes) -> None:
        """Record a dead letter and ack it; act on it now if it is this miner's (other
        miners' runs act on theirs). Nothing in a poison message can stop the service."""
        try:
            entry = self.dead_letters.record(delivery.headers, body, self.store.redis_now())
            log.warning("dead letter %s: %s (%s) from %s", entry["id"], entry["reason"],
                        entry["detail"], entry["source"])
            if entry["miner"] == self.miner:
                self.act_on_parked()
        except RedisWiped:
            raise
        except Exception as exc:
            log.exception("dead letter could not be handled; recording it as unknown")
            try:
                self.dead_letters.record({}, body, self.store.redis_now())
            except Exception:
                log.exception("dead letter not recorded either; the broker keeps it")
                settle(self.link.reject(delivery, requeue=True), "dead letter")
                return
            log.info("dead letter kept without its headers (%s)", exc)
        settle(self.link.ack(delivery), "dead letter")

    def act_on_parked(self) -> None:
        """Move on every sector of ours whose current attempt's job was parked."""
        for entry_id in self.dead_letters.to_act_on(self.miner):
            entry = self.dead_letters.get(entry_id)
            if entry is not None and isinstance(entry.get("sector"), int):
                self._act_on(entry)
            self.dead_letters.acted_on(self.miner, entry_id)

    def _act_on(self, entry: dict[str, Any]) -> None:
        while True:
            rec = self.store.get(entry["sector"])
            moved = on_parked(rec.sector, rec.size, entry, self.cfg, self.rng) if rec else None
            if rec is None or moved is None:
                return  # not the attempt the sector waits for: nothing to move
            t, error_class = moved
            history = history_of(entry, error_class, t.sector.error)
            if self._commit(rec, t, self.store.redis_now(), history=history) is Cas.APPLIED:
                self.store.count("parked_jobs")
                log.error("%s attempt %d was parked (%s): sector %s", entry["job_id"],
                          entry["attempt"], entry["reason"],
                          f"failed: {t.sector.error}" if t.sector.state is State.FAILED
                          else f"retries as attempt {t.sector.attempt}")
                return

    def apply(self, result: Result) -> bool:
        """Apply a result if it is the first for the attempt the sector waits for, made
        under the attempt's current lease epoch."""
        while True:
            rec = self.store.get(result.sector)
            if rec is None or not is_current(rec.sector, result) or result.epoch < 1:
                return self._stale(result, "not the attempt the sector waits for"
                                   if result.epoch >= 1 else "no lease epoch")
            now = self._clock()
            home = (self._home(rec, now) if result.error_class is ErrorClass.NEEDS_DATA
                    else None)
            t = on_result(rec.sector, result, self.cfg, now, self.rng, home)
            history = history_entry(result)
            if t.note:  # why the sector left its path (a home given up)
                history["note"] = t.note
            params = rec.params
            if result.outcome is Outcome.OK and result.outputs:
                params = {**params, result.phase.value: result.outputs}
            if t.sector.phase is Phase.PC1 and "ticket" not in params:
                params = {**params, "ticket": self.chain.ticket()}
            done = self._commit(rec, t, now, history=history, params=params,
                                epoch=result.epoch)
            if done is Cas.STALE_EPOCH:
                return self._stale(result, f"epoch {result.epoch} is not the current lease")
            if done is Cas.APPLIED:
                log.info("%s attempt %d: %s -> %s %s", result.job_id, result.attempt,
                         result.outcome, t.sector.state, t.sector.phase)
                if result.outcome is Outcome.OK:
                    self._observe(rec, result, now)
                if t.sector.state in (State.DONE, State.FAILED):  # refill the pool soon
                    self._refill_due = min(self._refill_due, time.monotonic() + REFILL_S)
                return True

    def _home(self, rec: Record, now: float) -> HomeCheck | None:
        """What the registry says of the sector's home (None: it cannot be read now)."""
        if rec.sector.home is None:
            return HomeCheck(None, False, no_restart(rec))
        try:
            return home_check(members(self.client, self.names), rec.sector.home, now,
                              no_restart(rec))
        except Exception as exc:  # the rounds and the time since the first still bound it
            log.warning("registry not read for home %s: %s", rec.sector.home, exc)
            return None

    def _stale(self, result: Result, why: str) -> bool:
        self.store.count("stale_results")
        log.info("dropped stale/duplicate result %s attempt %d epoch %d from %s: %s",
                 result.job_id, result.attempt, result.epoch, result.worker, why)
        return False

    def _clock(self) -> float:
        """The Redis clock (seconds), read at most once a second and carried on by this
        host's monotonic clock in between: one Redis round trip less per result."""
        mono = time.monotonic()
        if mono - self._clock_read >= CLOCK_READ_S:
            self._clock_offset = self.store.redis_now() - time.monotonic()
            self._clock_read = mono
        return mono + self._clock_offset

    def _observe(self, rec: Record, result: Result, now: float) -> None:
        """Feed the shared durations table from miner-side times: the worker's span, but
        never more than the time since we handed the attempt out (`now`: Redis clock)."""
        # (updated_at: a record from before dispatch times were kept)
        since = rec.dispatched_at if rec.dispatched_at is not None else rec.updated_at
        window = now - since
        seconds = clamp_duration(result.started_at, result.finished_at, window)
        if seconds is not None:
            self.durations.observe(result.phase, rec.size, seconds)

    def _urgent(self) -> Callable[[Record], bool]:
        """Is a sector short of slack now (the observed durations of the last round)?"""
        return urgent_check(self.cfg, self._observed, self.store.redis_now())

    def escalate(self) -> None:
        """Escalate, flag and watch the sectors due a look in the watch index (watch.py)."""
        self._observed = self.durations.table()
        self.watcher.round(self._observed)

    def advance_due(self) -> None:
        now = self.store.redis_now()
        for number in self.store.due(now):
            rec = self.store.get(number)
            if rec is not None and rec.sector.chain_step:
                self._commit(rec, on_chain_due(rec.sector), now)

    def sweep_outbox(self) -> None:
        for env in self.store.outbox_stale():
            log.warning("republishing %s attempt %d from the outbox", env.job.job_id,
                        env.job.attempt)
            self.publisher.publish(self.link, env)

    def _commit(self, rec: Record, t: Transition, now: float, *,
                history: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None, epoch: int | None = None) -> Cas:
        env = None
        if t.dispatch_after is not None:
            job_rec = rec if params is None else replace(rec, params=params)
            job = build_job(job_rec, t.sector, now)
            too_big = oversize(job)
            if too_big is None:
                env = envelope(self.store, self.fairness, job, t.dispatch_after, False, now)
            else:  # every worker would park it: fail the sector now, saying why
                log.error("sector %s/%d failed: %s", self.miner, rec.sector.number, too_big)
                self.store.count("oversized_jobs")
                t = Transition(replace(t.sector, state=State.FAILED, error=too_big), None)
        done = self.store.cas(rec, t.sector, now, history=history, envelope=env,
                              params=params, epoch=epoch)
        if done is Cas.APPLIED and env is not None and not env.held:
            self.publisher.publish(self.link, env, fresh=True)
        return done


def _settled(fut: Future[None], what: str) -> None:
    """Done-callback of an ack not waited for: what settle() would have logged."""
    try:
        fut.result()
    except DeliveryLost:
        log.info("%s: delivery gone before its ack; the broker redelivers it", what)
    except Exception as exc:
        log.warning("%s: ack failed (%s); the broker redelivers it", what, exc)
