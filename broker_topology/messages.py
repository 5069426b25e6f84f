"""The messages on the wire: JSON only, frozen, versioned, unknown fields refused.

A job is one attempt at one phase of one sector. Its id is deterministic,
`<miner>/<sector>/<phase>`; `attempt` fences results: the miner accepts only the first
result of the attempt it is waiting for.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION: Final = 1
#: Anything larger is not a job: it is refused before JSON decoding.
MAX_BODY_BYTES = 64 * 1024

MINER_ID_RE = re.compile(r"^[tf]0[0-9]{1,19}$")
WORKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

MinerId = Annotated[str, Field(pattern=MINER_ID_RE.pattern)]
WorkerName = Annotated[str, Field(pattern=WORKER_NAME_RE.pattern)]
JsonDict = dict[str, Any]


class Phase(StrEnum):
    AP = "ap"
    PC1 = "pc1"
    PC2 = "pc2"
    C1 = "c1"
    C2 = "c2"
    FIN = "fin"


#: Pipeline order; workers claim in the reverse (a started sector finishes first).
PIPELINE: tuple[Phase, ...] = (Phase.AP, Phase.PC1, Phase.PC2, Phase.C1, Phase.C2, Phase.FIN)
CLAIM_ORDER: tuple[Phase, ...] = tuple(reversed(PIPELINE))
#: Phases that read or write the sector's temp files and so must run where they are.
LOCAL_PHASES: frozenset[Phase] = frozenset({Phase.PC1, Phase.PC2, Phase.C1, Phase.FIN})


class SectorClass(StrEnum):
    DEAL = "deal"
    CC = "cc"


class Lane(StrEnum):
    """Which pool queue of a phase a job waits in, best first."""

    URGENT = "urgent"
    DEAL = "deal"
    CC = "cc"


#: AMQP message priority per lane (used by the priority-ordered worker queues).
LANE_PRIORITY: dict[Lane, int] = {Lane.URGENT: 2, Lane.DEAL: 1, Lane.CC: 0}


class ErrorClass(StrEnum):
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    NEEDS_DATA = "needs_data"
    CRASH = "crash"


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Self:
        """Decode or raise MessageError with a reason tag; never anything else."""
        from .errors import MessageError

        if len(body) > MAX_BODY_BYTES:
            raise MessageError("oversized", f"{len(body)} bytes > {MAX_BODY_BYTES}")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError("not_json", str(exc)) from None
        if not isinstance(data, dict):
            raise MessageError("schema", f"expected a JSON object, got {type(data).__name__}")
        if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise MessageError("schema_version", f"unsupported {data.get('schema_version')!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "message"
            raise MessageError("schema", f"{where}: {first['msg']}") from None


def job_id(miner: str, sector: int, phase: Phase | str) -> str:
    return f"{miner}/{sector}/{Phase(phase).value}"


def parse_job_id(text: str) -> tuple[str, int, Phase]:
    """(miner, sector, phase) of `<miner>/<sector>/<phase>`; ValueError naming the form."""
    parts = text.split("/")
    if len(parts) != 3 or not MINER_ID_RE.match(parts[0]) or not parts[1].isdigit() \
            or parts[2] not in {p.value for p in Phase}:
        raise ValueError(f"{text!r} is not a job id; expected <miner>/<sector>/<phase>, "
                         "e.g. t01000/3/pc2")
    return parts[0], int(parts[1]), Phase(parts[2])


class Job(_Wire):
    job_id: str
    miner: MinerId
    sector: Annotated[int, Field(ge=0)]
    phase: Phase
    attempt: Annotated[int, Field(ge=1)]
    sector_class: SectorClass
    size: Annotated[int, Field(gt=0)]
    #: Unix seconds by which the sector must be sealed.
    deadline: float
    #: The worker holding the sector's files (set by ap's result); None while pooled.
    home: WorkerName | None = None
    issued_at: float
    #: Phase inputs the executor needs (ticket, seed, piece info, previous outputs).
    params: JsonDict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _id_matches(self) -> Self:
        if self.job_id != job_id(self.miner, self.sector, self.phase):
            raise ValueError(f"job_id {self.job_id!r} does not match miner/sector/phase")
        return self


class Result(_Wire):
    job_id: str
    miner: MinerId
    sector: Annotated[int, Field(ge=0)]
    phase: Phase
    attempt: Annotated[int, Field(ge=1)]
    worker: WorkerName
    started_at: float
    finished_at: float
    outcome: Outcome
    #: Where the sector's files now are: the worker's storage group, or the worker.
    home: WorkerName | None = None
    error_class: ErrorClass | None = None
    error: str | None = None
    outputs: JsonDict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _error_consistent(self) -> Self:
        if (self.outcome is Outcome.ERROR) != (self.error_class is not None):
            raise ValueError("error_class is required exactly when outcome is 'error'")
        return self

    @classmethod
    def for_job(cls, job: Job, worker: str, started_at: float, finished_at: float,
                **fields: Any) -> Result:
        return cls(job_id=job.job_id, miner=job.miner, sector=job.sector, phase=job.phase,
                   attempt=job.attempt, worker=worker, started_at=started_at,
                   finished_at=finished_at, **fields)


class Progress(_Wire):
    job_id: str
    attempt: Annotated[int, Field(ge=1)]
    worker: WorkerName
    fraction: Annotated[float, Field(ge=0.0, le=1.0)]
    note: str = ""
    at: float
