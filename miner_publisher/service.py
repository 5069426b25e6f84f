"""`miner-publisher run`: consume results, advance sectors, publish what comes next.

The broker thread only receives; this service's own thread does the Redis work, so a slow
or restarting Redis never stalls heartbeats. Order per result: decode, apply (CAS in Redis,
next job written to the outbox in the same step), publish the next job (confirmed), ack."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker_topology.declare import declare
from broker_topology.errors import MessageError
from broker_topology.link import Delivery, Link, Session, settle
from broker_topology.messages import Outcome, Phase, Result
from broker_topology.naming import Names
from broker_topology.poison import park
from broker_topology.topology import miner_topology, pool_topology
from broker_topology.units import parse_sector_size

from .admission import admit, envelope
from .chain import SimulatedChain
from .deadletters import CRASH_REASON, DeadLetters, fail_crashed
from .deadlines import Durations, Slack, slack, urgent_check
from .fairness import Fairness
from .pipeline import State, is_current, on_chain_due, on_result
from .pledge import pledge
from .publisher import Publisher, build_job
from .store import Envelope, Record, SectorStore, history_entry

if TYPE_CHECKING:
    import redis

    from broker_topology.settings import PoolSettings

    from .config import MinerSettings
    from .pipeline import Transition

log = logging.getLogger(__name__)
TICK_S = 0.5
ESCALATE_EVERY_S = 2.0


class MinerService:
    def __init__(self, settings: PoolSettings, cfg: MinerSettings, miner: str,
                 client: redis.Redis) -> None:
        self.settings = settings
        self.cfg = cfg
        self.miner = miner
        self.names = Names(settings.namespace)
        self.store = SectorStore(client, self.names, miner)
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
        self.rng = random.Random()
        self.link = Link(settings.amqp_url, name=f"miner-publisher/{miner}",
                         on_connect=self._on_connect, heartbeat=settings.heartbeat)

    # -- I/O thread ------------------------------------------------------------------------
    def _on_connect(self, session: Session) -> None:
        declare(session.connection, pool_topology(self.settings)
                + miner_topology(self.settings, self.miner))

        def consumer(key: str, queue_name: str, prefetch: int) -> Callable[[Any], None]:
            def setup(ch: Any) -> None:
                ch.basic_qos(prefetch_count=prefetch)
                ch.basic_consume(queue_name, lambda _c, m, p, b: self.inbox.put(
                    (key, session.delivery(key, m, p), b)))
            return setup

        session.channel("results", consumer("results", self.names.results_queue(self.miner),
                                            64))
        # Any running miner records what lands in q.poison (and fails crashed sectors).
        session.channel("poison", consumer("poison", self.names.poison_queue, 16))

    # -- service thread --------------------------------------------------------------------
    def run(self, ready_timeout: float = 30.0) -> None:
        self.link.start(wait_s=ready_timeout)
        log.info("miner %s running (namespace %s)", self.miner, self.settings.namespace)
        next_tick = next_escalation = 0.0
        try:
            while not self.stopping.is_set():
                try:
                    kind, delivery, body = self.inbox.get(timeout=TICK_S)
                    if kind == "poison":
                        self.handle_poison(delivery, body)
                    else:
                        self.handle(delivery, body)
                except queue.Empty:
                    pass
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self.advance_due()
                    self.sweep_outbox()
                    admit(self.store, self.fairness, self.publisher, self.link,
                          self._urgent)
                if time.monotonic() >= next_escalation:
                    next_escalation = time.monotonic() + ESCALATE_EVERY_S
                    self.escalate()
                    pledge(self.store, self.cfg, self.pledge_size)
        finally:
            self.link.stop()

    def stop(self) -> None:
        self.stopping.set()

    def handle(self, delivery: Delivery, body: bytes) -> None:
        source = self.names.results_queue(self.miner)
        try:
            result = Result.from_bytes(body)
            if result.miner != self.miner:
                raise MessageError("misrouted", f"result for {result.miner} in {source}")
        except MessageError as exc:
            log.warning("result parked in poison queue: %s", exc)
            reason, detail = exc.reason, exc.detail
            self.link.call(lambda s: park(s, self.names, delivery, body, reason=reason,
                                          detail=detail, source=source,
                                          by=f"miner-publisher/{self.miner}")).result()
            return
        self.apply(result)
        settle(self.link.ack(delivery), f"result {result.job_id}")

    def handle_poison(self, delivery: Delivery, body: bytes) -> None:
        entry = self.dead_letters.record(delivery.headers, body, time.time())
        log.warning("dead letter %s: %s (%s) from %s", entry["id"], entry["reason"],
                    entry["detail"], entry["source"])
        if entry["reason"] == CRASH_REASON and entry["miner"] is not None:
            store = SectorStore(self.client, self.names, entry["miner"])
            if fail_crashed(store, entry, time.time()):
                log.error("sector %s/%s failed: %s crashed every worker that ran it",
                          entry["miner"], entry["sector"], entry["phase"])
        settle(self.link.ack(delivery), entry["id"])

    def apply(self, result: Result) -> bool:
        """Apply a result if it is the first for the attempt the sector waits for."""
        while True:
            rec = self.store.get(result.sector)
            if rec is None or not is_current(rec.sector, result):
                self.store.count("stale_results")
                log.info("dropped stale/duplicate result %s attempt %d from %s",
                         result.job_id, result.attempt, result.worker)
                return False
            now = time.time()
            t = on_result(rec.sector, result, self.cfg, now, self.rng)
            params = rec.params
            if result.outcome is Outcome.OK and result.outputs:
                params = {**params, result.phase.value: result.outputs}
            if t.sector.phase is Phase.PC1 and "ticket" not in params:
                params = {**params, "ticket": self.chain.ticket()}
            if self._commit(rec, t, now, history=history_entry(result), params=params):
                log.info("%s attempt %d: %s -> %s %s", result.job_id, result.attempt,
                         result.outcome, t.sector.state, t.sector.phase)
                if result.outcome is Outcome.OK:
                    self.durations.observe(result.phase, rec.size,
                                           result.finished_at - result.started_at)
                if t.sector.state in (State.DONE, State.FAILED):  # refill the pool now
                    admit(self.store, self.fairness, self.publisher, self.link, self._urgent)
                return True

    def _slack(self, rec: Record) -> Slack:
        return slack(rec.sector, rec.size, rec.deadline, time.time(), self._observed, self.cfg)

    def _urgent(self, rec: Record) -> bool:
        return urgent_check(self.cfg, self._observed)(rec)

    def escalate(self) -> None:
        """Publish an urgent copy of the current job of every sector short of slack; flag
        the ones that cannot make their deadline."""
        self._observed = self.durations.table()
        for number in self.store.inflight() + self.store.due(float("inf")):
            rec = self.store.get(number)
            if rec is None or rec.sector.state not in (State.QUEUED, State.CHAIN):
                continue
            s = self._slack(rec)
            self.store.mark(number, slack=f"{s.seconds:.1f}")
            if s.late and not rec.at_risk:
                self.store.mark(number, at_risk="1")
                self.store.count("deadline_at_risk")
                log.warning("sector %s/%d cannot make its deadline: %.0fs late at the "
                            "expected pace (%.0fs of work left)", self.miner, number,
                            -s.seconds, s.remaining)
            if (rec.sector.state is State.QUEUED and s.seconds < self.cfg.escalate_slack
                    and rec.escalated != rec.sector.attempt):
                now = time.time()
                env = Envelope(build_job(rec, rec.sector, now), 0.0, True, now)
                self.store.put_outbox(env)
                self.publisher.publish(self.link, env)
                self.store.mark(number, escalated=str(rec.sector.attempt))
                self.store.count("escalated")
                log.info("escalated %s (slack %.0fs)", env.job.job_id, s.seconds)

    def advance_due(self) -> None:
        for number in self.store.due(time.time()):
            rec = self.store.get(number)
            if rec is not None and rec.sector.chain_step:
                self._commit(rec, on_chain_due(rec.sector), time.time())

    def sweep_outbox(self) -> None:
        for env in self.store.outbox_stale(self.cfg.outbox_grace, time.time()):
            log.warning("republishing %s attempt %d from the outbox", env.job.job_id,
                        env.job.attempt)
            self.publisher.publish(self.link, env)

    def _commit(self, rec: Record, t: Transition, now: float, *,
                history: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> bool:
        env = None
        if t.dispatch_after is not None:
            job_rec = rec if params is None else Record(**{**rec.__dict__, "params": params})
            env = envelope(self.store, self.fairness, build_job(job_rec, t.sector, now),
                           t.dispatch_after, False, now)
        if not self.store.transition(rec, t.sector, now, history=history, envelope=env,
                                     params=params):
            return False
        if env is not None and not env.held:
            self.publisher.publish(self.link, env)
        return True
