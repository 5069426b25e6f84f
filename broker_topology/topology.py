"""The broker topology as plain data. Queue arguments are computed in `quorum_args` only.

Flow of a job (see README "How jobs flow"):

    miner --jobs (topic)--> q.<phase>.<lane>.<miner>  pooled phases: the miner's deal/cc lanes
                      --> q.<phase>.urgent         urgent escalations, any miner
    miner --local (topic)-> w.<worker>.<phase>        follow-ups to the sector's home (classic,
                 |                                    priority urgent > deal > cc);
                 |                                    no such queue: alternate exchange = jobs
    w.* TTL (locality_wait) -- DLX jobs --> q.<phase>.<lane>.<miner>  (home gone: to the pool)
    q.<phase>.{deal,cc}.<miner> TTL (aging) -- DLX escalate --> q.<phase>.urgent
    q.<phase>.urgent delivery limit -- DLX poison --> q.poison
    worker --delay (headers: delay=<N>s)--> q.delay.<N>s -- TTL, DLX local --> back where aimed
    worker --results (direct, key miner)--> results.<miner>
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import LANE_PRIORITY, LOCAL_PHASES, PIPELINE, Lane, Phase
from .naming import Names, delay_headers
from .settings import PoolSettings


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True


@dataclass(frozen=True)
class Binding:
    source: str
    destination: str
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()

    def __add__(self, other: Topology) -> Topology:
        return Topology(self.exchanges + other.exchanges, self.queues + other.queues,
                        self.bindings + other.bindings)


def quorum_args(*, delivery_limit: int, dead_letter_exchange: str | None = None,
                ttl_s: float | None = None, expires_s: float | None = None) -> dict[str, Any]:
    """Arguments of every sealpool queue. Quorum (replicated), an explicit delivery limit
    (3.10 has no default; 4.x defaults to 20), and at-least-once dead-lettering, which
    RabbitMQ only honours together with reject-publish overflow."""
    args: dict[str, Any] = {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    if dead_letter_exchange is not None:
        args |= {
            "x-dead-letter-exchange": dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    if ttl_s is not None:
        args["x-message-ttl"] = int(ttl_s * 1000)
    if expires_s is not None:
        args["x-expires"] = int(expires_s * 1000)
    return args


def local_args(*, dead_letter_exchange: str, ttl_s: float, expires_s: float) -> dict[str, Any]:
    """Arguments of a worker's (or storage group's) follow-up queue. Classic, with strict
    message priority (urgent > deal > cc): one queue per phase then keeps the class order
    that the pool gets from separate queues, at a third of the claim cost. Not replicated,
    like the sector files it points to; crash loops are caught by the workers' start count
    (classic queues have no delivery limit)."""
    return {"x-queue-type": "classic", "x-max-priority": max(LANE_PRIORITY.values()),
            "x-dead-letter-exchange": dead_letter_exchange,
            "x-message-ttl": int(ttl_s * 1000), "x-expires": int(expires_s * 1000)}


def pool_topology(settings: PoolSettings) -> Topology:
    """Everything shared by the whole pool (declared by `broker-topology declare`)."""
    n = Names(settings.namespace)
    exchanges = [
        Exchange(n.jobs, "topic"),
        # Unroutable follow-ups (no such worker queue) go on to the pool.
        Exchange(n.local, "topic", {"alternate-exchange": n.jobs}),
        Exchange(n.escalate, "topic"),
        Exchange(n.delay, "headers"),
        Exchange(n.poison, "fanout"),
        Exchange(n.results, "direct"),
        Exchange(n.control, "topic"),
        Exchange(n.doorbell, "topic", durable=False),
    ]
    queues: list[Queue] = []
    bindings: list[Binding] = []
    for phase in PIPELINE:
        urgent = n.pool_queue(phase, Lane.URGENT)
        queues.append(Queue(urgent, quorum_args(delivery_limit=settings.delivery_limit,
                                                dead_letter_exchange=n.poison)))
        bindings.append(Binding(n.jobs, urgent, f"*.{phase}.urgent.*"))
        bindings.append(Binding(n.escalate, urgent, f"*.{phase}.*.*"))
    for seconds in settings.delay_buckets:
        name = n.delay_queue(seconds)
        queues.append(Queue(name, quorum_args(delivery_limit=settings.delivery_limit,
                                              dead_letter_exchange=n.local, ttl_s=seconds)))
        bindings.append(Binding(n.delay, name, "", {"x-match": "all", **delay_headers(seconds)}))
    queues.append(Queue(n.poison_queue, quorum_args(delivery_limit=100)))
    bindings.append(Binding(n.poison, n.poison_queue))
    return Topology(tuple(exchanges), tuple(queues), tuple(bindings))


def worker_topology(settings: PoolSettings, worker: str, phases: frozenset[Phase]) -> Topology:
    """The worker's own follow-up queues, one per data-bound phase it serves: basic.get
    cannot filter by phase, and a slot may only claim phases it runs."""
    n = Names(settings.namespace)
    queues, bindings = [], []
    for phase in PIPELINE:
        if phase not in phases or phase not in LOCAL_PHASES:
            continue
        name = n.worker_queue(worker, phase)
        queues.append(Queue(name, local_args(dead_letter_exchange=n.jobs,
                                             ttl_s=settings.locality_wait,
                                             expires_s=settings.worker_queue_expires)))
        bindings.append(Binding(n.local, name, f"{worker}.{phase}.*.*"))
    return Topology(queues=tuple(queues), bindings=tuple(bindings))


def miner_topology(settings: PoolSettings, miner: str) -> Topology:
    """A miner's own lanes (deal and cc per phase: a free slot chooses whose job it takes,
    see pool_worker.policy) and its results queue. A lane's TTL is its aging: a job waiting
    longer is dead-lettered to the phase's urgent lane, so CC never starves."""
    n = Names(settings.namespace)
    aging = {Lane.DEAL: settings.aging_deal, Lane.CC: settings.aging_cc}
    queues, bindings = [], []
    for phase in PIPELINE:
        for lane in (Lane.DEAL, Lane.CC):
            name = n.miner_queue(phase, lane, miner)
            queues.append(Queue(name, quorum_args(delivery_limit=settings.delivery_limit,
                                                  dead_letter_exchange=n.escalate,
                                                  ttl_s=aging[lane])))
            bindings.append(Binding(n.jobs, name, f"*.{phase}.{lane}.{miner}"))
    results = n.results_queue(miner)
    queues.append(Queue(results, quorum_args(delivery_limit=20, dead_letter_exchange=n.poison)))
    bindings.append(Binding(n.results, results, miner))
    return Topology(queues=tuple(queues), bindings=tuple(bindings))
