"""The messages on the wire: JSON only, frozen, versioned, unknown fields refused.

A job is one attempt at one phase of one sector. Its id is deterministic,
`<miner>/<sector>/<phase>`; `attempt` fences results: the miner accepts only the first
result of the attempt it is waiting for.
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from .units import SECTOR_SIZE_BYTES

SCHEMA_VERSION: Final = 1
#: Anything larger is not a job: it is refused before JSON decoding.
MAX_BODY_BYTES = 64 * 1024
#: Nesting depth of a decoded message (the top-level object is 1). Ours need 5; the limit
#: keeps hostile input from costing recursion anywhere downstream (validation, re-encoding,
#: Redis' cjson).
MAX_DEPTH: Final = 32
#: Timestamps are unix seconds after 1970 and before 2200-01-01: a stamp outside is a bug
#: or a forgery, and would poison every duration computed from it.
MAX_TIMESTAMP: Final = 7_258_118_400.0
#: Attempts count retries and needs_data rounds: a million is centuries of rounds.
MAX_ATTEMPT: Final = 1_000_000
U64_MAX: Final = 2**64 - 1
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1
#: Error texts in results and replies (the worker cuts longer ones; the log keeps all).
MAX_ERROR_CHARS: Final = 4096
#: Other free text: notes, names, paths.
MAX_TEXT_CHARS: Final = 1024

MINER_ID_RE = re.compile(r"^[tf]0[0-9]{1,19}$")
WORKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Digits of the longest integer literal accepted (U64_MAX has 20).
_MAX_INT_DIGITS = 20


# -- strict JSON ------------------------------------------------------------------------------
class _Refused(ValueError):
    """Input that is JSON to Python's parser but not to ours (raised from its hooks). A
    ValueError, so pydantic reports it as a validation error where validators raise it."""


def _parse_int(text: str) -> int:
    # int() of thousands of digits is quadratic, and past 4300 raises ValueError; nothing
    # we carry needs more than 64 bits.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Refused(f"integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise _Refused(f"number {text[:24]} overflows a double")
    return value


def _parse_constant(text: str) -> Any:
    raise _Refused(f"{text} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins (Python: last, some: first): refuse, so
    # every reader of a message sees the same one.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float,
                            parse_constant=_parse_constant, object_pairs_hook=_object)


def check_json(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError unless `value` is plain JSON as we send it: dicts with str keys,
    lists, str without lone surrogates, bool, None, finite floats, ints within 64 bits,
    nested at most `max_depth` deep (a scalar is depth 0). Iterative: never recurses."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            if depth > max_depth:
                raise _Refused(f"nested deeper than {max_depth}")
            if isinstance(node, dict):
                for key, item in node.items():
                    if not isinstance(key, str) or _SURROGATE.search(key):
                        raise _Refused("object key is not a valid string")
                    stack.append((item, depth))
            else:
                stack.extend((item, depth) for item in node)
        elif isinstance(node, str):
            if _SURROGATE.search(node):
                raise _Refused("string holds a lone surrogate (not encodable as UTF-8)")
        elif isinstance(node, bool) or node is None:
            pass
        elif isinstance(node, int):
            if not I64_MIN <= node <= U64_MAX:
                raise _Refused("integer beyond 64 bits")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise _Refused("number is NaN or infinite")
        else:
            raise _Refused(f"{type(node).__name__} is not a JSON value")


def load_json_object(body: bytes | bytearray | memoryview | str, *,
                     limit: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Decode a JSON object strictly, or raise MessageError (oversized, not_json, schema);
    never anything else. Strict: UTF-8 only, no NaN/Infinity or overflowing numbers,
    integers within 64 bits, no duplicate keys, no lone surrogates, at most `max_depth`
    deep."""
    from .errors import MessageError

    try:
        if isinstance(body, str):
            if len(body) > limit:  # before encoding: a str is at most as long as its UTF-8
                raise MessageError("oversized", f"{len(body)} characters > {limit} bytes")
            try:
                raw = body.encode("utf-8")
            except UnicodeEncodeError:
                raise MessageError("not_json", "text holds a lone surrogate") from None
        else:
            raw = bytes(body)
        if len(raw) > limit:
            raise MessageError("oversized", f"{len(raw)} bytes > {limit}")
        try:
            # json.loads would also guess UTF-16/32 from the first bytes: UTF-8 only.
            data = _DECODER.decode(raw.decode("utf-8"))
            check_json(data, max_depth)
        except RecursionError:  # the C scanner recurses per level; ~1000 levels raise
            raise MessageError("not_json", f"nested deeper than {max_depth}") from None
        except (ValueError, UnicodeDecodeError) as exc:  # incl. JSONDecodeError, _Refused
            raise MessageError("not_json", str(exc)) from None
        if not isinstance(data, dict):
            raise MessageError("schema", f"expected a JSON object, got {type(data).__name__}")
        return data
    except MessageError:
        raise
    except Exception as exc:  # MemoryError, a bytes-like that is not: still only this message
        raise MessageError("not_json", f"{type(exc).__name__}: {exc}") from None


def _json_within(depth: int) -> AfterValidator:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        check_json(value, depth)
        return value

    return AfterValidator(check)


def _known_size(value: int) -> int:
    if value not in SECTOR_SIZE_BYTES:
        raise ValueError(f"{value} is not a sector size "
                         f"({', '.join(map(str, sorted(SECTOR_SIZE_BYTES)))})")
    return value


# -- field types both sides use (strict: no "1", true or 1.0 for an int) ------------------
MinerId = Annotated[str, Strict(), Field(pattern=MINER_ID_RE.pattern)]
WorkerName = Annotated[str, Strict(), Field(pattern=WORKER_NAME_RE.pattern)]
#: Unix seconds, finite, between 1970 and 2200. Ints are taken (JSON has one number type).
Timestamp = Annotated[float, Strict(), Field(gt=0, lt=MAX_TIMESTAMP, allow_inf_nan=False)]
SectorNumber = Annotated[int, Strict(), Field(ge=0, le=U64_MAX)]
Attempt = Annotated[int, Strict(), Field(ge=1, le=MAX_ATTEMPT)]
#: A fencing token: Redis INCR counts in signed 64 bits.
Epoch = Annotated[int, Strict(), Field(ge=0, le=I64_MAX)]
SectorSize = Annotated[int, Strict(), AfterValidator(_known_size)]
#: A count or index (slots, cores, GPUs, bytes, pids): non-negative, 63 bits.
Count = Annotated[int, Strict(), Field(ge=0, le=I64_MAX)]
Text = Annotated[str, Strict(), Field(max_length=MAX_TEXT_CHARS)]
ErrorText = Annotated[str, Strict(), Field(max_length=MAX_ERROR_CHARS)]
#: A JSON object of plain JSON values one level below a message's top (params), so
#: within the message's depth limit.
JsonDict = Annotated[dict[str, Any], _json_within(MAX_DEPTH - 1)]
#: A result's outputs: one level less, since the miner carries them on in the next jobs'
#: params under the phase's name; a result it accepted must never make a job it cannot build.
Outputs = Annotated[dict[str, Any], _json_within(MAX_DEPTH - 2)]
#: Paths (temp dirs): as long as Linux allows.
PathText = Annotated[str, Strict(), Field(max_length=4096)]


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


def cut_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` within `limit` characters: its head (what failed) and tail (the last words
    of a processor's stderr), joined by an ellipsis."""
    if len(text) <= limit:
        return text
    head = limit // 2
    return text[:head] + " … " + text[-(limit - head - 3):]


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p)[:40] for p in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: Checked strictly (an int 1, not true or 1.0) before validation.
    schema_version: Annotated[int, Strict(), Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)] = (
        SCHEMA_VERSION)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes | bytearray | memoryview | str, *,
                   limit: int = MAX_BODY_BYTES) -> Self:
        """Decode or raise MessageError with a reason tag (oversized, not_json, schema,
        schema_version); never anything else, whatever `body` holds."""
        from .errors import MessageError

        data = load_json_object(body, limit=limit)
        try:
            version = data.get("schema_version", SCHEMA_VERSION)
            if type(version) is not int or version != SCHEMA_VERSION:
                raise MessageError("schema_version", f"unsupported {version!r}")
            return cls.model_validate(data)
        except MessageError:
            raise
        except ValidationError as exc:
            raise MessageError("schema", _first_error(exc)) from None
        except Exception as exc:  # a validator's own bug must still be this message's only
            raise MessageError("schema", f"{type(exc).__name__}: {exc}") from None


def job_id(miner: str, sector: int, phase: Phase | str) -> str:
    return f"{miner}/{sector}/{Phase(phase).value}"


_SECTOR_DIGITS = re.compile(r"[0-9]{1,20}")


def parse_job_id(text: str) -> tuple[str, int, Phase]:
    """(miner, sector, phase) of `<miner>/<sector>/<phase>`; ValueError naming the form."""
    parts = text.split("/")
    if len(parts) != 3 or not MINER_ID_RE.fullmatch(parts[0]) \
            or not _SECTOR_DIGITS.fullmatch(parts[1]) or int(parts[1]) > U64_MAX \
            or parts[2] not in {p.value for p in Phase}:
        raise ValueError(f"{text[:80]!r} is not a job id; expected <miner>/<sector>/<phase>, "
                         "e.g. t01000/3/pc2")
    return parts[0], int(parts[1]), Phase(parts[2])


class Job(_Wire):
    job_id: Annotated[str, Strict(), Field(max_length=64)]
    miner: MinerId
    sector: SectorNumber
    phase: Phase
    attempt: Attempt
    sector_class: SectorClass
    size: SectorSize
    #: Unix seconds by which the sector must be sealed.
    deadline: Timestamp
    #: The worker holding the sector's files (set by ap's result); None while pooled.
    home: WorkerName | None = None
    issued_at: Timestamp
    #: Phase inputs the executor needs (ticket, seed, piece info, previous outputs).
    params: JsonDict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _id_matches(self) -> Self:
        if self.job_id != job_id(self.miner, self.sector, self.phase):
            raise ValueError(f"job_id {self.job_id!r} does not match miner/sector/phase")
        return self


class Result(_Wire):
    job_id: Annotated[str, Strict(), Field(max_length=64)]
    miner: MinerId
    sector: SectorNumber
    phase: Phase
    attempt: Attempt
    worker: WorkerName
    #: Worker clock: the miner measures durations on its own clock and only clamps by these.
    started_at: Timestamp
    finished_at: Timestamp
    outcome: Outcome
    #: Where the sector's files now are: the worker's storage group, or the worker.
    home: WorkerName | None = None
    error_class: ErrorClass | None = None
    error: ErrorText | None = None
    outputs: Outputs = Field(default_factory=dict)
    #: The fencing token of the lease this result was produced under (0: no lease, e.g.
    #: a result made for a job that was never run). The miner accepts a result only when
    #: its epoch is the current one for the attempt.
    epoch: Epoch = 0

    @model_validator(mode="after")
    def _error_consistent(self) -> Self:
        if (self.outcome is Outcome.ERROR) != (self.error_class is not None):
            raise ValueError("error_class is required exactly when outcome is 'error'")
        if self.job_id != job_id(self.miner, self.sector, self.phase):
            raise ValueError(f"job_id {self.job_id!r} does not match miner/sector/phase")
        return self

    @classmethod
    def for_job(cls, job: Job, worker: str, started_at: float, finished_at: float,
                **fields: Any) -> Result:
        """The result of `job`. A worker must always be able to report: an over-long
        `error` is cut (see cut_error), and outputs that are not plain JSON within the
        limits (NaN, 2**70, too deep: what a processor may print) make a permanent error
        result instead of an exception the job would be handed back for, again and again."""
        if isinstance(fields.get("error"), str):
            fields["error"] = cut_error(fields["error"])
        ids: dict[str, Any] = {
            "job_id": job.job_id, "miner": job.miner, "sector": job.sector, "phase": job.phase,
            "attempt": job.attempt, "worker": worker, "started_at": started_at,
            "finished_at": finished_at}
        try:
            return cls(**ids, **fields)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            if not first["loc"] or first["loc"][0] != "outputs":
                raise
            fields |= {"outcome": Outcome.ERROR, "error_class": ErrorClass.PERMANENT,
                       "error": f"outputs refused: {_first_error(exc)}", "outputs": {}}
            return cls(**ids, **fields)


class Progress(_Wire):
    job_id: Annotated[str, Strict(), Field(max_length=64)]
    attempt: Attempt
    worker: WorkerName
    fraction: Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    note: Text = ""
    at: Timestamp

