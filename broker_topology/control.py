"""Operating workers: the control messages and the registry entry, both sides' contract.

Control is request/reply. A manager publishes a `ControlRequest` to the `control` topic
exchange with the worker's name as routing key and `reply_to` set (RabbitMQ direct
reply-to); the worker consumes an exclusive queue bound with its name and answers with a
`ControlReply` carrying the same correlation id. The worker's local unix socket speaks the
same two messages, one JSON line each way, so `pool-worker list` and `miner-publisher worker
info` print the same thing.

Registry: every worker writes a `WorkerStatus` to Redis `<ns>:worker:<name>` every
heartbeat interval; it is stale after `STALE_BEATS` missed beats and kept for
`REGISTRY_TTL_S` so a dead worker is listed as stale instead of vanishing."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import MessageError
from .messages import Phase, WorkerName, _Wire
from .naming import Names

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


def control_key(worker: str) -> str:
    """Routing key of requests for `worker` (names have no dots: one topic word)."""
    return worker


def registry_key(names: Names, worker: str) -> str:
    return names.redis_key("worker", worker)


def registry_pattern(names: Names) -> str:
    return names.redis_key("worker", "*")


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ControlOp(StrEnum):
    INFO = "info"
    PAUSE = "pause"
    RESUME = "resume"


class ControlRequest(_Wire):
    op: ControlOp
    #: The slot (as `list` numbers them); required by pause and resume.
    index: Annotated[int, Field(ge=0)] | None = None
    #: pause: hand the running job back now instead of after it finishes.
    now: bool = False
    #: resume: claim only these phases (of the slot's configured ones); None: all of them.
    phases: tuple[Phase, ...] | None = None

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
    index: int
    name: str
    #: Total device memory in bytes.
    memory: int


class SlotStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    #: Idle, but every phase it serves is held back (disk, memory): it claims nothing.
    BLOCKED = "blocked"
    STOPPED = "stopped"


class SlotView(_Part):
    index: int
    #: Phases it claims now (narrowed by `resume --phase`).
    phases: tuple[Phase, ...]
    #: Phases the config gives it.
    configured_phases: tuple[Phase, ...]
    #: Where new sectors' temp files go.
    temp_dir: str
    cores: tuple[int, ...] = ()
    gpu: GpuInfo | None = None
    #: Memory budget in bytes (None: only what the machine has free).
    memory: int | None = None
    state: SlotStatus
    paused: bool = False
    paused_since: float | None = None
    job: str | None = None
    sector: str | None = None
    phase: Phase | None = None
    attempt: int | None = None
    started_at: float | None = None
    #: Phase -> why this slot does not claim it now (not enough disk or memory).
    held_back: dict[str, str] = Field(default_factory=dict)
    last_error: str | None = None


class ControlReply(_Wire):
    worker: str
    ok: bool
    #: Why the request was refused (unknown index, phase not served...); None when ok.
    error: str | None = None
    #: What was done, in words ("slot 0 paused; handing back t01000/3/pc1").
    message: str = ""
    slots: tuple[SlotView, ...] = ()


class WorkerStatus(_Wire):
    """A worker's registry entry (Redis), written every heartbeat interval."""

    name: WorkerName
    instance: str
    host: str
    #: The address this machine reaches the broker from.
    address: str
    pid: int
    started_at: float
    #: When this entry was written (unix seconds): the last ping.
    at: float
    heartbeat_interval: float
    phases: tuple[Phase, ...]
    storage_group: str | None = None
    sector_sizes: tuple[int, ...] = ()
    slots: tuple[SlotView, ...] = ()

    def stale(self, now: float) -> bool:
        return now - self.at > STALE_BEATS * self.heartbeat_interval


def decode(cls: type[_Wire], body: bytes | str, limit: int = MAX_REPLY_BYTES) -> Any:
    """Like `from_bytes`, with a limit that fits replies and registry entries."""
    if len(body) > limit:
        raise MessageError("oversized", f"{len(body)} bytes > {limit}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError("not_json", str(exc)) from None
    if not isinstance(data, dict):
        raise MessageError("schema", f"expected a JSON object, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise MessageError("schema", f"{where}: {first['msg']}") from None
