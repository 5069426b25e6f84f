"""The discrete-event simulation: virtual time, one heap of events, no sleeps, no threads.

What decides is the project's own code, called as the services call it:
- claim order and fair shares: pool_worker.policy.slot_order over claimer.slot_lanes, and
  policy.charged at claim, corrected by the actual duration at the end (Shares.correct);
  the expected duration is Shares.expected over the shared durations table;
- the sector state machine: miner_publisher.pipeline (enter, on_result, on_chain_due;
  locality recovery, retries and their backoff);
- admission: fairness.targets over the miners' backlogs, pending order
  store.pending_score (deals first, then deadline), urgent sectors admitted regardless;
- deadlines: deadlines.slack with the miners' EWMA of observed durations; escalation
  publishes an urgent copy of the current attempt (whichever copy runs first wins).
What is modelled here is the broker: queue names from broker_topology.naming, routing as
miner_publisher.publisher.route/target_queue does, TTLs (aging to the urgent lane; a
follow-up not taken home within locality_wait goes to the pool), delay buckets.

Latency is zero (a job published is claimable at once), so a slot idles while work waits
only by policy: locality, admission, or the static split."""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from broker_topology.messages import (
    LANE_PRIORITY,
    LOCAL_PHASES,
    PIPELINE,
    ErrorClass,
    Lane,
    Outcome,
    Phase,
    Result,
    SectorClass,
    job_id,
)
from broker_topology.naming import Names
from miner_publisher.admission import SCAN_LIMIT
from miner_publisher.config import MinerSettings
from miner_publisher.deadlines import _ALPHA, slack
from miner_publisher.fairness import Share, targets
from miner_publisher.pipeline import Sector, State, enter, is_current, on_chain_due, on_result
from miner_publisher.store import pending_score
from pool_worker.claimer import is_miner_lane, slot_lanes
from pool_worker.policy import Lanes, charged, claim_cost, slot_order
from pool_worker.shares import Shares

from .scenario import Machines, Miner, Scenario
from .trace import Run, SectorFate, SlotInfo, Trace

#: Virtual time 0 on the wall clock (results carry timestamps the wire types accept).
T0 = 1_700_000_000.0
POLICIES = ("pooled", "static")


@dataclass(eq=False)
class Job:
    miner: str
    number: int
    phase: Phase
    attempt: int
    deal: bool
    home: str | None
    urgent: bool
    ready_at: float
    seq: int
    #: Bumped on every move between queues: entries left behind in a heap are stale.
    token: int = 0
    queue: str = ""

    @property
    def ref(self) -> tuple[str, int, Phase, int]:
        return (self.miner, self.number, self.phase, self.attempt)


class Queue:
    """A broker queue: FIFO, or by priority then FIFO (the classic follow-up queues)."""

    def __init__(self, ttl: float | None, on_expiry: str | None) -> None:
        self.heap: list[tuple[int, int, int, Job]] = []
        self.live = 0
        self.ttl = ttl
        #: "aging": to the phase's urgent lane; "locality": to the pool lane.
        self.on_expiry = on_expiry

    def push(self, job: Job, rank: int) -> None:
        heapq.heappush(self.heap, (rank, job.seq, job.token, job))
        self.live += 1

    def pop(self) -> Job:
        while True:
            _, _, token, job = heapq.heappop(self.heap)
            if token == job.token:
                self.live -= 1
                job.token += 1
                return job


class Ready(Mapping[str, int]):
    """Ready counts as a claim pass reads them (exact: the simulation has no probe lag)."""

    def __init__(self, queues: dict[str, Queue]) -> None:
        self.queues = queues

    def __getitem__(self, key: str) -> int:
        return self.queues[key].live

    def __iter__(self) -> Iterator[str]:
        return iter(self.queues)

    def __len__(self) -> int:
        return len(self.queues)


@dataclass(eq=False)
class Slot:
    info: SlotInfo
    names: Names
    lanes: list[Lanes]
    job: Job | None = None
    expected: float = 0.0


@dataclass(eq=False)
class SimSector:
    sector: Sector
    deal: bool
    deadline: float
    arrived_at: float
    escalated: int = 0
    done_at: float | None = None


@dataclass(eq=False)
class MinerState:
    spec: Miner
    names: Names
    sectors: dict[int, SimSector] = field(default_factory=dict)
    #: (pending_score, number), best first
    pending: list[tuple[float, int]] = field(default_factory=list)
    inflight: set[int] = field(default_factory=set)
    deal_inflight: set[int] = field(default_factory=set)


def split(count: int, shares: list[float]) -> list[int]:
    """`count` split by `shares`, largest remainder (at least one each when it can be)."""
    total = sum(shares)
    raw = [count * s / total for s in shares]
    out = [int(r) for r in raw]
    if count >= len(shares):
        out = [max(1, o) for o in out]
    order = sorted(range(len(shares)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    for i in itertools.cycle(order):
        if sum(out) >= count:
            break
        out[i] += 1
    while sum(out) > count:  # the minimum of one overshot: take from the largest
        out[out.index(max(out))] -= 1
    return out


class Simulation:
    def __init__(self, scenario: Scenario, policy: str = "pooled", seed: int | None = None
                 ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.s = scenario
        self.policy = policy
        self.rng = random.Random(scenario.seed if seed is None else seed)
        self.size = scenario.size
        p = scenario.policy
        self.cfg = MinerSettings.model_construct(
            chain_precommit=scenario.chain.precommit, chain_seed=scenario.chain.seed,
            chain_commit=scenario.chain.commit, locality_recovery=p.locality_recovery,
            home_wait=p.home_wait, escalate_slack=p.escalate_slack, retry_base=p.retry_base,
            pool_depth=p.pool_depth, max_attempts={ph: 3 for ph in Phase})
        # Static: each miner is a pool of its own (its own namespace, queues, machines).
        self.miners = {m.id: MinerState(m, Names("sim" if policy == "pooled" else
                                                  f"sim-{m.id[1:]}")) for m in scenario.miners}
        self.weights = {m.id: m.pool_weight for m in scenario.miners}
        self.queues: dict[str, Queue] = {}
        self.ready = Ready(self.queues)
        self.vtimes: dict[str, dict[str, float]] = {}
        # The workers' expected duration per job: Shares.expected over the table.
        self.shares = Shares.__new__(Shares)
        self.shares.durations = {}
        self.observed: dict[tuple[Phase, int], float] = {}
        self.slots: list[Slot] = []
        self.pool_slots: dict[str, int] = {}
        self._build_workers()
        self._declare()
        self.events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._claim_at: float | None = None
        self.running: set[tuple[str, int, Phase, int]] = set()
        self.done: set[tuple[str, int, Phase, int]] = set()
        self.first_ready: dict[tuple[str, int, Phase, int], float] = {}
        self.trace = Trace([s.info for s in self.slots], weights=dict(self.weights))
        self.left = 0

    # -- set-up ----------------------------------------------------------------------------
    def _build_workers(self) -> None:
        ids = list(self.miners)
        for group in self.s.machines:
            counts = (split(group.count, [m.share for m in self.s.miners])
                      if self.policy == "static" else [group.count])
            index = 0
            for part, n in enumerate(counts):
                serves = ids if self.policy == "pooled" else [ids[part]]
                names = self.miners[serves[0]].names
                for _ in range(n):
                    index += 1
                    self._machine(group, f"{group.name}-{index:02d}", names, serves)

    def _machine(self, group: Machines, name: str, names: Names, serves: list[str]) -> None:
        locality = name if group.storage == "machine" else group.storage
        i = 0
        for spec in group.slots:
            for _ in range(spec.count):
                info = SlotInfo(f"{name}/{i}", name, group.name, spec.phases, locality)
                self.slots.append(Slot(info, names, slot_lanes(names, locality, spec.phases,
                                                               serves)))
                self.pool_slots[names.namespace] = self.pool_slots.get(names.namespace, 0) + 1
                i += 1

    def _declare(self) -> None:
        """The queues the real services declare: urgent lanes, the miners' lanes, and one
        follow-up queue per locality and data-bound phase some slot there serves."""
        p = self.s.policy
        for m in self.miners.values():
            for phase in PIPELINE:
                self.queues.setdefault(m.names.pool_queue(phase, Lane.URGENT), Queue(None, None))
                self.queues[m.names.miner_queue(phase, Lane.DEAL, m.spec.id)] = Queue(
                    p.aging_deal, "aging")
                self.queues[m.names.miner_queue(phase, Lane.CC, m.spec.id)] = Queue(
                    p.aging_cc, "aging")
        for slot in self.slots:
            for phase in slot.info.phases & LOCAL_PHASES:
                self.queues.setdefault(slot.names.worker_queue(slot.info.locality, phase),
                                       Queue(p.locality_wait, "locality"))

    # -- the event loop --------------------------------------------------------------------
    def at(self, t: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self.events, (t, next(self._seq), action))

    def run(self) -> Trace:
        self._arrivals()
        if self.s.policy.escalate_every > 0:
            self.at(0.0, self._escalate)
        while self.events:
            t, _, action = heapq.heappop(self.events)
            if t > self.s.horizon:
                break
            action(t)
            if self._claim_at is not None and (not self.events or self.events[0][0] > t):
                self._claim_at = None  # every event of this instant is in: claim once
                self._claim_pass(t)
            if self.left == 0 and not any(s.job for s in self.slots):
                break
            self.trace.end = t
        self._finish_trace()
        return self.trace

    def _wake(self, t: float) -> None:
        self._claim_at = t

    # -- arrivals and admission (the miner) -------------------------------------------------
    def _arrivals(self) -> None:
        a = self.s.arrivals
        spec = list(self.miners.values())
        for m, n in zip(spec, split(a.backlog, [m.spec.share for m in spec]) if a.backlog
                        else [0] * len(spec), strict=True):
            for i in range(n):  # deals spread evenly through the batch
                deal = int((i + 1) * m.spec.deals) > int(i * m.spec.deals)
                self.at(0.0, self._arrive_fn(m, deal))
        if a.rate is not None:
            for m in spec:
                rate = a.rate * m.spec.share / sum(x.spec.share for x in spec) / 3600
                t = self.rng.expovariate(rate)
                while t < a.duration:
                    self.at(t, self._arrive_fn(m, self.rng.random() < m.spec.deals))
                    t += self.rng.expovariate(rate)

    def _arrive_fn(self, m: MinerState, deal: bool) -> Callable[[float], None]:
        self.left += 1

        def arrive(t: float) -> None:
            number = len(m.sectors) + 1
            deadline = t + (m.spec.deal_deadline if deal else m.spec.cc_deadline)
            m.sectors[number] = SimSector(Sector(m.spec.id, number, State.PENDING, Phase.AP, 0),
                                          deal, deadline, t)
            klass = SectorClass.DEAL if deal else SectorClass.CC
            bisect.insort(m.pending, (pending_score(klass, deadline, number), number))
            self._admit(m, t)

        return arrive

    def _pool(self, m: MinerState) -> list[MinerState]:
        return [x for x in self.miners.values() if x.names == m.names]

    def _target(self, m: MinerState, t: float) -> int:
        shares = [Share(x.spec.id, x.spec.pool_weight, len(x.pending) + len(x.inflight), t)
                  for x in self._pool(m)]
        capacity = max(1, self.pool_slots[m.names.namespace]) * self.s.policy.pool_depth
        return targets(shares, capacity, t).get(m.spec.id, capacity)

    def _urgent(self, sec: SimSector, t: float) -> bool:
        return slack(sec.sector, self.size, sec.deadline, t, self.observed,
                     self.cfg).seconds < self.cfg.escalate_slack

    def _admit(self, m: MinerState, t: float) -> None:
        """admission.admit, on this miner's records: deals and CC each up to the target
        (deals counted on their own), best first; urgent sectors regardless."""
        if not m.pending:
            return
        target = self._target(m, t)
        full = {True: len(m.deal_inflight) >= target, False: len(m.inflight) >= target}
        scanned_out: set[bool] = set()  # classes whose urgent prefix is used up
        for score, number in list(m.pending[:SCAN_LIMIT]):
            sec = m.sectors[number]
            if sec.deal in scanned_out:
                continue
            urgent = self._urgent(sec, t)
            if full[sec.deal] and not urgent:
                if full[True] and full[False]:
                    # pending is by deadline within a class: no later one is urgent
                    scanned_out.add(sec.deal)
                    if len(scanned_out) == 2:
                        break
                continue
            counted = m.deal_inflight if sec.deal else m.inflight
            if not urgent and len(counted) >= target:
                full[sec.deal] = True
                continue
            m.pending.remove((score, number))
            sec.sector = enter(sec.sector, Phase.AP, state=State.QUEUED)
            self._inflight(m, sec)
            self._publish(m, sec, t, urgent=urgent, ready_at=sec.arrived_at)
            full[True] = len(m.deal_inflight) >= target
            full[False] = len(m.inflight) >= target

    def _inflight(self, m: MinerState, sec: SimSector) -> None:
        n = sec.sector.number
        if sec.sector.state is State.QUEUED:
            m.inflight.add(n)
            if sec.deal:
                m.deal_inflight.add(n)
        else:
            m.inflight.discard(n)
            m.deal_inflight.discard(n)

    # -- publishing and routing (the broker) -------------------------------------------------
    def _publish(self, m: MinerState, sec: SimSector, t: float, *, urgent: bool = False,
                 ready_at: float | None = None) -> None:
        s = sec.sector
        home = s.home if s.phase in LOCAL_PHASES else None
        # An escalated copy's work has been waiting since the first copy was published.
        ready = self.first_ready.setdefault((m.spec.id, s.number, s.phase, s.attempt),
                                            t if ready_at is None else ready_at)
        job = Job(m.spec.id, s.number, s.phase, s.attempt, sec.deal, home, urgent, ready,
                  next(self._seq))
        self._route(m.names, job, t)

    def _route(self, names: Names, job: Job, t: float) -> None:
        """publisher.target_queue: home-bound follow-ups to the home's queue (none: on to
        the pool), urgent copies to the phase's urgent lane, the rest to the miner's lane."""
        lane = Lane.URGENT if job.urgent else (Lane.DEAL if job.deal else Lane.CC)
        name = names.worker_queue(job.home, job.phase) if job.home else ""
        if name not in self.queues:
            name = self._pool_queue(names, job, lane)
        self._enqueue(name, job, t, rank=max(LANE_PRIORITY.values()) - LANE_PRIORITY[lane])

    @staticmethod
    def _pool_queue(names: Names, job: Job, lane: Lane) -> str:
        if lane is Lane.URGENT:
            return names.pool_queue(job.phase, lane)
        return names.miner_queue(job.phase, lane, job.miner)

    def _enqueue(self, name: str, job: Job, t: float, rank: int) -> None:
        q = self.queues[name]
        job.queue = name
        q.push(job, rank)
        if q.ttl is not None:
            token = job.token
            self.at(t + q.ttl, lambda now: self._expire(name, job, token, now))
        self._wake(t)

    def _expire(self, name: str, job: Job, token: int, t: float) -> None:
        """Dead-lettering by TTL: aged out of a miner's lane into the urgent lane; not taken
        by its home in time, into the pool (where a slot elsewhere answers needs_data)."""
        if job.token != token or job.queue != name:
            return  # claimed or moved meanwhile
        q = self.queues[name]
        q.live -= 1
        job.token += 1
        names = self.miners[job.miner].names
        if q.on_expiry == "aging":
            self._enqueue(names.pool_queue(job.phase, Lane.URGENT), job, t, 0)
        else:
            lane = Lane.URGENT if job.urgent else (Lane.DEAL if job.deal else Lane.CC)
            self._enqueue(self._pool_queue(names, job, lane), job, t, 0)

    # -- slots (the workers) -----------------------------------------------------------------
    def _claim_pass(self, t: float) -> None:
        idle = [s for s in self.slots if s.job is None]
        self.rng.shuffle(idle)  # the workers claim concurrently; none is always first
        for slot in idle:
            self._claim(slot, t)

    def _claim(self, slot: Slot, t: float) -> None:
        vtimes = self.vtimes.setdefault(slot.names.namespace, {})
        while order := slot_order(slot.lanes, vtimes, self.ready,
                                  deals_first=self.s.policy.deals_first, rng=self.rng):
            job = self.queues[order[0]].pop()
            job.queue = ""
            if job.ref in self.running or job.ref in self.done:
                continue  # the other copy of an escalated attempt: dropped on its marker
            self._start(slot, job, vtimes, t, chosen=is_miner_lane(slot.names, order[0]))
            return

    def _start(self, slot: Slot, job: Job, vtimes: dict[str, float], t: float, *,
               chosen: bool) -> None:
        slot.job = job
        slot.expected = self.shares.expected(job.phase, self.size)
        cost = claim_cost(job.phase, self.size, self.shares.expected)
        if cost > 0:
            charged(vtimes, job.miner, cost, self.weights[job.miner], chosen=chosen)
        self.running.add(job.ref)
        if job.phase in LOCAL_PHASES and job.home != slot.info.locality:
            outcome, seconds = ErrorClass.NEEDS_DATA.value, 0.0  # no files here
        else:
            seconds = self.s.durations[job.phase].sample(self.rng)
            fails = self.rng.random() < self.s.failures.get(job.phase, 0.0)
            outcome = ErrorClass.TEMPORARY.value if fails else Outcome.OK.value
        self.at(t + seconds, lambda now: self._finish(slot, job, outcome, t, now))

    def _finish(self, slot: Slot, job: Job, outcome: str, started: float, t: float) -> None:
        slot.job = None
        self.running.discard(job.ref)
        self.done.add(job.ref)
        vtimes = self.vtimes[slot.names.namespace]
        # Shares.correct: the expected slot time charged is replaced by the actual one.
        vtimes[job.miner] += (t - started - slot.expected) / self.weights[job.miner]
        self.trace.runs.append(Run(job.miner, job.number, job.deal, job.phase, job.attempt,
                                   slot.info.key, job.ready_at, started, t, outcome,
                                   job.home))
        self._result(slot, job, outcome, started, t)
        self._wake(t)

    # -- results (the miner) ------------------------------------------------------------------
    def _result(self, slot: Slot, job: Job, outcome: str, started: float, t: float) -> None:
        m = self.miners[job.miner]
        sec = m.sectors[job.number]
        ok = outcome == Outcome.OK.value
        result = Result.model_construct(
            job_id=job_id(job.miner, job.number, job.phase), miner=job.miner,
            sector=job.number, phase=job.phase, attempt=job.attempt, worker=slot.info.worker,
            started_at=T0 + started, finished_at=T0 + t,
            outcome=Outcome.OK if ok else Outcome.ERROR, home=slot.info.locality,
            error_class=None if ok else ErrorClass(outcome),
            error=None if ok else "simulated", outputs={}, epoch=1)
        if not is_current(sec.sector, result):
            return  # a late copy: fenced out
        if ok:
            self._observe(job.phase, t - started)
        step = on_result(sec.sector, result, self.cfg, t, self.rng)
        self._apply(m, sec, step.sector, step.dispatch_after, t)

    def _apply(self, m: MinerState, sec: SimSector, after: Sector, dispatch: float | None,
               t: float) -> None:
        was_inflight = sec.sector.number in m.inflight
        sec.sector = after
        self._inflight(m, sec)
        if after.state is State.CHAIN and after.due_at is not None:
            self.at(after.due_at, lambda now: self._chain_due(m, sec, now))
        if after.state in (State.DONE, State.FAILED):
            sec.done_at = t
            self.left -= 1
        if dispatch is not None:
            if dispatch <= 0:
                self._publish(m, sec, t)
            else:  # through the delay queue nearest the backoff (publisher.route)
                bucket = min(self.s.policy.delay_buckets, key=lambda b: abs(b - dispatch))
                attempt = after.attempt
                self.at(t + bucket, lambda now: self._delayed(m, sec, attempt, now))
        if was_inflight and sec.sector.number not in m.inflight:
            for x in self._pool(m):  # a place in the pool freed up: every miner's tick
                self._admit(x, t)

    def _delayed(self, m: MinerState, sec: SimSector, attempt: int, t: float) -> None:
        if sec.sector.state is State.QUEUED and sec.sector.attempt == attempt:
            self._publish(m, sec, t)

    def _chain_due(self, m: MinerState, sec: SimSector, t: float) -> None:
        if sec.sector.state is State.CHAIN:
            step = on_chain_due(sec.sector)
            self._apply(m, sec, step.sector, step.dispatch_after, t)

    def _observe(self, phase: Phase, seconds: float) -> None:
        """Durations.observe: the EWMA every miner folds accepted results into."""
        key = (phase, self.size)
        mean = self.observed.get(key)
        self.observed[key] = seconds if mean is None else (1 - _ALPHA) * mean + _ALPHA * seconds
        self.shares.durations[f"{phase.value}:{self.size}"] = self.observed[key]

    def _escalate(self, t: float) -> None:
        """The miners' periodic escalation: an urgent copy of the current job of every
        sector short of slack, once per attempt; pending urgent ones are admitted."""
        if self.left == 0:
            return
        horizon = min((sec.deadline for m in self.miners.values()
                       for sec in m.sectors.values() if sec.done_at is None), default=None)
        full = slack(Sector("t01", 0, State.PENDING, Phase.AP, 0), self.size, 0.0, 0.0,
                     self.observed, self.cfg).remaining
        if horizon is not None and horizon - t - full < self.cfg.escalate_slack:
            for m in self.miners.values():
                for n in sorted(m.inflight):
                    sec = m.sectors[n]
                    if self._urgent(sec, t) and sec.escalated != sec.sector.attempt:
                        sec.escalated = sec.sector.attempt
                        self._publish(m, sec, t, urgent=True)
                self._admit(m, t)
        self.at(t + self.s.policy.escalate_every, self._escalate)

    def _finish_trace(self) -> None:
        self.trace.sectors = [
            SectorFate(m.spec.id, n, sec.deal, sec.arrived_at, sec.deadline, sec.done_at,
                       sec.sector.state is State.FAILED)
            for m in self.miners.values() for n, sec in sorted(m.sectors.items())]
        self.trace.durations = {p: d for (p, _), d in self.observed.items()}
        means: dict[Phase, list[float]] = {}
        for r in self.trace.runs:
            if r.outcome == Outcome.OK.value:
                means.setdefault(r.phase, []).append(r.finished_at - r.started_at)
        # The plain mean over the run (the EWMA follows the last few; spread makes it noisy).
        self.trace.durations = {p: sum(v) / len(v) for p, v in means.items()}


def simulate(scenario: Scenario, policy: str = "pooled", seed: int | None = None) -> Trace:
    return Simulation(scenario, policy, seed).run()
