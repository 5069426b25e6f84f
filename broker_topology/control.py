"""Operating workers: the control messages and the registry entry, both sides' contract.

Control is request/reply. A manager publishes a `ControlRequest` to the `control` topic
exchange with the worker's name as routing key and `reply_to` set (RabbitMQ direct
reply-to); the worker consumes an exclusive queue bound with its name and answers with a
`ControlReply` carrying the same correlation id. The worker's local unix socket speaks the
same two messages, one JSON line each way, so `pool-worker list` and `miner-publisher worker
info` print the same thing.

Registry: every worker writes a `WorkerStatus` to Redis `<ns>:worker:<name>` every
heartbeat interval, and its name to the index `Names.registry_index` (a sorted set scored by
the beat), both stamped with the Redis clock (`redis_now`), never a host's own. An entry is
stale after `STALE_BEATS` missed beats and kept for `REGISTRY_TTL_S` so a dead worker is
listed as stale instead of vanishing; readers go through the index, never a keyspace scan,
and index members gone for longer than that are pruned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, model_validator

from .errors import MessageError
from .messages import (
    Attempt,
    Count,
    ErrorText,
    PathText,
    Phase,
    SectorSize,
    Text,
    Timestamp,
    WorkerName,
    _Wire,
)
from .naming import Names

if TYPE_CHECKING:
    from redis import Redis as RedisLike

#: RabbitMQ's direct reply-to pseudo queue: a manager needs no reply queue of its own.
REPLY_TO = "amq.rabbitmq.reply-to"
#: Replies carry every slot with its last error: more than a job, still bounded.
MAX_REPLY_BYTES = 4 * 1024 * 1024
#: A registry entry older than this many heartbeat intervals is marked stale.
STALE_BEATS = 3
#: How long the entry of a worker that died without a clean stop stays listed (as stale).
REGISTRY_TTL_S = 3600
#: Last errors are cut to this many characters in views (the full text is in the log).
ERROR_CHARS = 1000
#: More slots than any machine runs: bounds what a reply or registry entry may list.
MAX_SLOTS = 1024
#: A heartbeat interval above a day is a typo, and would keep a dead worker "fresh".
MAX_HEARTBEAT_S = 86400.0

W = TypeVar("W", bound=_Wire)
#: Each phase at most once.
Phases = Annotated[tuple[Phase, ...], Field(max_length=len(Phase))]


def control_key(worker: str) -> str:
    """Routing key of requests for `worker` (names have no dots: one topic word)."""
    return worker


def registry_key(names: Names, worker: str) -> str:
    return names.worker_key(worker)


def registry_pattern(names: Names) -> str:
    return names.registry_pattern


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ControlOp(StrEnum):
    INFO = "info"
    PAUSE = "pause"
    RESUME = "resume"


class ControlRequest(_Wire):
    op: ControlOp
    #: The slot (as `list` numbers them); required by pause and resume.
    index: Annotated[int, Strict(), Field(ge=0, lt=MAX_SLOTS)] | None = None
    #: pause: hand the running job back now instead of after it finishes.
    now: StrictBool = False
    #: resume: claim only these phases (of the slot's configured ones); None: all of them.
    phases: Phases | None = None

    @model_validator(mode="after")
    def _fits_op(self) -> Self:
        if self.op is not ControlOp.INFO and self.index is None:
            raise ValueError(f"{self.op} needs a slot index")
        if self.now and self.op is not ControlOp.PAUSE:
            raise ValueError("now applies to pause only")
        if self.phases is not None and self.op is not ControlOp.RESUME:
            raise ValueError("phases applies to resume only")
        if self.phases is not None and not self.phases:
            raise ValueError("phases must name at least one phase")
        return self


class GpuInfo(_Part):
    index: Count
    name: Text
    #: Total device memory in bytes.
    memory: Count


class SlotStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    #: Idle, but every phase it serves is held back (disk, memory): it claims nothing.
    BLOCKED = "blocked"
    STOPPED = "stopped"


class SlotView(_Part):
    index: Annotated[int, Strict(), Field(ge=0, lt=MAX_SLOTS)]
    #: Phases it claims now (narrowed by `resume --phase`).
    phases: Phases
    #: Phases the config gives it.
    configured_phases: Phases
    #: Where new sectors' temp files go.
    temp_dir: PathText
    cores: Annotated[tuple[Count, ...], Field(max_length=65536)] = ()
    gpu: GpuInfo | None = None
    #: Memory budget in bytes (None: only what the machine has free).
    memory: Count | None = None
    state: SlotStatus
    paused: StrictBool = False
    paused_since: Timestamp | None = None
    job: Text | None = None
    sector: Text | None = None
    phase: Phase | None = None
    attempt: Attempt | None = None
    started_at: Timestamp | None = None
    #: Phase -> why this slot claims none of it now, whatever the size (disk, memory).
    held_back: Annotated[dict[Text, Text], Field(max_length=len(Phase))] = Field(
        default_factory=dict)
    #: `<phase>:<size>` -> why this slot does not run that phase at that size now (the
    #: other sizes it takes may fit). Read with `why_held`.
    held_sizes: Annotated[dict[Text, Text], Field(max_length=64)] = Field(
        default_factory=dict)
    last_error: ErrorText | None = None


def size_key(phase: Phase, size: int) -> str:
    return f"{phase.value}:{size}"


def why_held(held_back: Mapping[str, str], held_sizes: Mapping[str, str], phase: Phase,
             size: int) -> str | None:
    """Why a slot does not run `phase` at `size` now, None if its resources allow it. The
    one answer the worker's claim decision, `pool-worker list` and `explain` all give."""
    return held_sizes.get(size_key(phase, size)) or held_back.get(phase.value)


class ControlReply(_Wire):
    worker: Text
    ok: StrictBool
    #: Why the request was refused (unknown index, phase not served...); None when ok.
    error: ErrorText | None = None
    #: What was done, in words ("slot 0 paused; handing back t01000/3/pc1").
    message: ErrorText = ""
    slots: Annotated[tuple[SlotView, ...], Field(max_length=MAX_SLOTS)] = ()


class WorkerStatus(_Wire):
    """A worker's registry entry (Redis), written every heartbeat interval."""

    name: WorkerName
    instance: Text
    host: Text
    #: The address this machine reaches the broker from.
    address: Text
    pid: Count
    started_at: Timestamp
    #: When this entry was written (unix seconds): the last ping.
    at: Timestamp
    heartbeat_interval: Annotated[float, Strict(), Field(gt=0, le=MAX_HEARTBEAT_S,
                                                         allow_inf_nan=False)]
    phases: Phases
    storage_group: Text | None = None
    sector_sizes: Annotated[tuple[SectorSize, ...], Field(max_length=8)] = ()
    slots: Annotated[tuple[SlotView, ...], Field(max_length=MAX_SLOTS)] = ()

    def stale(self, now: float) -> bool:
        return now - self.at > STALE_BEATS * self.heartbeat_interval


def decode(cls: type[W], body: bytes | str, limit: int = MAX_REPLY_BYTES) -> W:
    """`cls.from_bytes` with a limit that fits replies and registry entries."""
    return cls.from_bytes(body, limit=limit)


def read_registry(client: RedisLike, names: Names) -> list[WorkerStatus]:
    """Every worker's last registry entry, by name, through the registry index (no
    keyspace scan); members whose entry is gone or unreadable are skipped."""
    return [m.status for m in read_index(client, names) if m.status is not None]


# -- the registry index and the one clock ---------------------------------------------------
#: Index members looked at per prune (a beat's spare work stays small).
PRUNE_BATCH = 100


def redis_now(client: RedisLike) -> float:
    """The Redis server's clock (unix seconds): the one clock every host compares against,
    so a host whose own clock is off neither looks stale nor loses its share."""
    sec, usec = client.time()
    return float(sec) + float(usec) / 1e6


def write_beat(client: RedisLike, names: Names, worker: str, status: WorkerStatus,
               ttl_s: int) -> WorkerStatus:
    """Write a worker's registry entry stamped with the Redis clock (`at`), and its score
    (the same time) in the registry index; prune the index. Returns the entry written."""
    now = redis_now(client)
    entry = status.model_copy(update={"at": now})
    pipe = client.pipeline(transaction=True)
    pipe.set(names.worker_key(worker), entry.to_bytes(), ex=ttl_s)
    pipe.zadd(names.registry_index, {worker: now})
    pipe.execute()
    prune_registry(client, names, now)
    return entry


def prune_registry(client: RedisLike, names: Names, now: float) -> int:
    """Drop index members silent for longer than REGISTRY_TTL_S whose entry is gone too (a
    worker with a heartbeat longer than a sixth of it keeps its entry, and its place)."""
    old = [_text(n) for n in client.zrangebyscore(
        names.registry_index, "-inf", now - REGISTRY_TTL_S, start=0, num=PRUNE_BATCH)]
    if not old:
        return 0
    pipe = client.pipeline(transaction=False)
    for name in old:
        pipe.exists(names.worker_key(name))
    gone = [n for n, live in zip(old, pipe.execute(), strict=True) if not live]
    if gone:
        client.zrem(names.registry_index, *gone)
    return len(gone)


@dataclass(frozen=True)
class Registered:
    """One member of the registry index: its last beat (Redis clock) and its entry, None
    once the entry expired or was removed at a clean stop."""

    name: str
    last_beat: float
    status: WorkerStatus | None


def read_index(client: RedisLike, names: Names) -> list[Registered]:
    """Every worker in the registry index, by name, with its entry where one is readable.
    No keyspace scan: one ZRANGE and one MGET."""
    scored: list[Any] = list(client.zrange(names.registry_index, 0, -1, withscores=True))
    members = sorted((_text(n), float(s)) for n, s in scored)
    raws = client.mget([names.worker_key(n) for n, _ in members]) if members else []
    out = []
    for (name, at), raw in zip(members, raws, strict=True):
        status = None
        if raw is not None:
            try:
                status = decode(WorkerStatus, raw)
            except MessageError:
                status = None  # unreadable: listed by its last beat only
        out.append(Registered(name, at, status))
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
