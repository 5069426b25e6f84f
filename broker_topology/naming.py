"""Every broker name, in one place. All of them start with the pool's namespace.

Routing keys are `<origin>.<phase>.<lane>.<miner>`: origin is `pool` for pooled jobs or
the target worker's name for follow-ups that must run where the sector's files are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .messages import Lane, Phase

POOL_ORIGIN = "pool"


@dataclass(frozen=True)
class Names:
    namespace: str

    def exchange(self, kind: str) -> str:
        """kind: jobs, local, escalate, delay, poison, results, control, doorbell."""
        return f"{self.namespace}.{kind}"

    @property
    def jobs(self) -> str:
        return self.exchange("jobs")

    @property
    def local(self) -> str:
        return self.exchange("local")

    @property
    def escalate(self) -> str:
        return self.exchange("escalate")

    @property
    def delay(self) -> str:
        return self.exchange("delay")

    @property
    def poison(self) -> str:
        return self.exchange("poison")

    @property
    def results(self) -> str:
        return self.exchange("results")

    @property
    def control(self) -> str:
        return self.exchange("control")

    @property
    def doorbell(self) -> str:
        return self.exchange("doorbell")

    def pool_queue(self, phase: Phase, lane: Lane) -> str:
        """The pool's shared lane of a phase (urgent: any miner's job whose deadline is at
        risk or that aged past SEALPOOL_AGING_*)."""
        return f"{self.namespace}.q.{phase.value}.{lane.value}"

    def miner_queue(self, phase: Phase, lane: Lane, miner: str) -> str:
        """A miner's own lane of a phase (deal or cc): one per miner, so a free slot can
        choose whose job it takes (pool_worker.policy)."""
        return f"{self.namespace}.q.{phase.value}.{lane.value}.{miner}"

    def worker_queue(self, worker: str, phase: Phase) -> str:
        return f"{self.namespace}.w.{worker}.{phase.value}"

    def delay_queue(self, seconds: int) -> str:
        return f"{self.namespace}.q.delay.{seconds}s"

    @property
    def poison_queue(self) -> str:
        return f"{self.namespace}.q.poison"

    def results_queue(self, miner: str) -> str:
        return f"{self.namespace}.results.{miner}"

    def redis_key(self, *parts: object) -> str:
        return ":".join([self.namespace, *(str(p) for p in parts)])

    # -- Redis keys both sides read: one spelling each ------------------------------------
    def attempt_key(self, kind: str, job_id: str, attempt: int) -> str:
        """`<ns>:<kind>:<job_id>#<attempt>`: lease, done, epoch, starts, running."""
        return self.redis_key(kind, attempt_ref(job_id, attempt))

    def lease_key(self, job_id: str, attempt: int) -> str:
        """The lease: `<holder>|<epoch>` while a worker runs the attempt (PX, renewed)."""
        return self.attempt_key("lease", job_id, attempt)

    def done_key(self, job_id: str, attempt: int) -> str:
        """The done marker: the recorded Result JSON, written only by the epoch's holder."""
        return self.attempt_key("done", job_id, attempt)

    def epoch_key(self, job_id: str, attempt: int) -> str:
        """The fencing token: incremented by every lease grant; a result is accepted only
        when it carries the current value."""
        return self.attempt_key("epoch", job_id, attempt)

    def starts_key(self, job_id: str, attempt: int) -> str:
        """How many times the attempt was started without finishing (crash count)."""
        return self.attempt_key("starts", job_id, attempt)

    def instance_key(self, instance: str) -> str:
        """Exists while a worker process instance is alive (TTL of a few heartbeats): a
        lease held by an instance without one may be taken over."""
        return self.redis_key("instance", instance)

    def blob_key(self, digest: str) -> str:
        """Phase outputs too large to travel inline, by SHA-256 of their JSON."""
        return self.redis_key("blob", digest)

    @property
    def generation_key(self) -> str:
        """A random id written once per Redis dataset: gone means Redis was wiped."""
        return self.redis_key("generation")

    @property
    def registry_index(self) -> str:
        """Sorted set of worker names by last heartbeat (Redis TIME)."""
        return self.redis_key("workers")

    def worker_key(self, worker: str) -> str:
        """A worker's registry entry (WorkerStatus JSON)."""
        return self.redis_key("worker", worker)

    # -- the miner's keys (miner_publisher/store.py says what each holds) -----------------
    def miner_key(self, kind: MinerKey, miner: str, *rest: object) -> str:
        """`<ns>:<kind>:<miner>[:<rest>...]`, e.g. `<ns>:sector:t01000:7`."""
        return self.redis_key(kind.value, miner, *rest)

    @property
    def deadletters_key(self) -> str:
        """Hash: dead-letter id -> entry JSON (what q.poison received)."""
        return self.redis_key("deadletters")

    @property
    def shares_key(self) -> str:
        """Hash: miner -> {"weight", "backlog", "at"}: admission's water-filling input."""
        return self.redis_key("shares")

    def pledge_lock_key(self, miner: str) -> str:
        """One instance of a miner pledges at a time (SET NX EX)."""
        return self.redis_key("pledge-lock", miner)

    @property
    def registry_pattern(self) -> str:
        """Every worker's registry entry (for a SCAN, where the index is not enough)."""
        return self.redis_key("worker", "*")

    @property
    def miners_key(self) -> str:
        """Hash: miner -> weight, for every miner publishing into the pool."""
        return self.redis_key("miners")

    @property
    def vtime_key(self) -> str:
        """Hash: miner -> virtual time (slot seconds / weight) of fair queuing."""
        return self.redis_key("vtime")

    @property
    def durations_key(self) -> str:
        """Hash: `<phase>:<size>` -> observed mean duration, shared by all miners."""
        return self.redis_key("durations")


class MinerKey(StrEnum):
    """Kinds of per-miner Redis keys (see `Names.miner_key`)."""

    SECTOR = "sector"  # hash per sector: the record
    HISTORY = "history"  # list per sector: one JSON entry per finished attempt
    SECTORS = "sectors"  # zset: number -> created_at
    SEQ = "seq"  # counter: last sector number allocated
    OUTBOX = "outbox"  # hash: `<job_id>#<attempt>` -> envelope JSON
    OUTBOX_CLAIMS = "outbox-claims"  # hash: outbox key -> `<instance>|<until ms, Redis TIME>`
    DUE = "due"  # zset: number -> time its chain step completes
    PENDING = "pending"  # zset: sectors not yet admitted
    INFLIGHT = "inflight"  # set: sectors with a job in the pool
    INFLIGHT_DEAL = "inflight-deal"  # set: deal sectors of INFLIGHT
    PUBLISHED = "published"  # set: sectors whose job the broker confirmed
    STATS = "stats"  # hash: counters
    PARKED = "parked"  # set: dead-letter ids of this miner's jobs not yet acted on
    PLEDGE_LOCK = "pledge-lock"  # one pledging instance at a time
    WATCH = "watch"  # zset: in-flight sector -> when the miner looks at it next (Redis TIME)
    FINISHED = "finished"  # zset: done/failed sector -> when it finished (Redis TIME)


def attempt_ref(job_id: str, attempt: int) -> str:
    """`<job_id>#<attempt>`: how one attempt is named in keys, outboxes and dead letters."""
    return f"{job_id}#{attempt}"


def lease_holder(value: str) -> str:
    """The worker name in a lease value `<worker>/<instance>/<slot>|<epoch>`."""
    return value.split("/", 1)[0]


# -- headers sealpool sets on messages ----------------------------------------------------
#: A parked message's reason (a poison.Reason), detail (one line), source queue, who
#: parked it and when (unix seconds).
REASON = "x-sealpool-reason"
DETAIL = "x-sealpool-detail"
SOURCE = "x-sealpool-source"
BY = "x-sealpool-by"
AT = "x-sealpool-at"
#: How many times workers sent a job round again because they could not run it.
RETURNS = "x-sealpool-returns"
#: Header the `delay` (headers) exchange routes on.
DELAY_HEADER = "delay"


def delay_headers(seconds: int) -> dict[str, str]:
    """Headers that send a message through the delay queue of `seconds` (a bucket)."""
    return {DELAY_HEADER: f"{seconds}s"}


def routing_key(origin: str, phase: Phase, lane: Lane | str, miner: str) -> str:
    return f"{origin}.{phase.value}.{Lane(lane).value}.{miner}"


def parse_routing_key(key: str) -> tuple[str, Phase, Lane, str]:
    origin, phase, lane, miner = key.split(".")
    return origin, Phase(phase), Lane(lane), miner
