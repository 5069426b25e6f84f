"""Every decoder, fed anything: it returns a valid model or raises MessageError with a
known reason tag. Nothing else may escape, since a decoder runs on a process's I/O thread
and one message must never take that thread (or the process) down."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_topology.control import (
    MAX_REPLY_BYTES,
    ControlOp,
    ControlReply,
    ControlRequest,
    GpuInfo,
    SlotStatus,
    SlotView,
    WorkerStatus,
)
from broker_topology.errors import MessageError
from broker_topology.headers import death_by_reason, deaths, header_int, header_str
from broker_topology.messages import (
    MAX_BODY_BYTES,
    Job,
    Outcome,
    Phase,
    Progress,
    Result,
    SectorClass,
    _Wire,
    check_json,
)
from broker_topology.poison import Reason
from broker_topology.units import parse_bytes, parse_duration

REASONS = {r.value for r in Reason}
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

JOB = Job(job_id="t01000/7/pc1", miner="t01000", sector=7, phase=Phase.PC1, attempt=2,
          sector_class=SectorClass.DEAL, size=2048, deadline=2e9, home="w1",
          issued_at=1.7e9, params={"ap": {"commd": "ab", "pieces": [1, 2]}})
SLOT = SlotView(index=0, phases=(Phase.PC1,), configured_phases=(Phase.PC1, Phase.PC2),
                temp_dir="/tmp/s0", cores=(0, 1), gpu=GpuInfo(index=0, name="h200", memory=1),
                memory=1 << 30, state=SlotStatus.BUSY, job=JOB.job_id, sector="t01000/7",
                phase=Phase.PC1, attempt=2, started_at=1.7e9, held_back={"c2": "disk"})
VALID: dict[type[_Wire], _Wire] = {
    Job: JOB,
    Result: Result.for_job(JOB, "w1", 1.7e9, 1.7e9 + 60, home="w1", outcome=Outcome.OK,
                           outputs={"pc1": {"labels": "ff"}}, epoch=4),
    Progress: Progress(job_id=JOB.job_id, attempt=2, worker="w1", fraction=0.5, at=1.7e9),
    ControlRequest: ControlRequest(op=ControlOp.RESUME, index=1, phases=(Phase.C2,)),
    ControlReply: ControlReply(worker="w1", ok=True, message="ok", slots=(SLOT,)),
    WorkerStatus: WorkerStatus(name="w1", instance="ab12", host="h", address="10.0.0.1",
                               pid=42, started_at=1.7e9, at=1.7e9 + 5, heartbeat_interval=5,
                               phases=(Phase.PC1,), sector_sizes=(2048,), slots=(SLOT,)),
}
DECODERS = list(VALID)


def limit_of(cls: type[_Wire]) -> int:
    return MAX_REPLY_BYTES if cls in (ControlReply, WorkerStatus) else MAX_BODY_BYTES


def decode(cls: type[_Wire], body: bytes | str) -> _Wire | None:
    """The contract: a valid model (which re-encodes to itself) or a tagged MessageError."""
    try:
        msg = cls.from_bytes(body, limit=limit_of(cls))
    except MessageError as exc:
        assert exc.reason in REASONS, exc.reason
        assert "\n" not in exc.detail
        return None
    assert isinstance(msg, cls)
    check_json(json.loads(msg.to_bytes()))
    assert cls.from_bytes(msg.to_bytes(), limit=limit_of(cls)) == msg
    return msg


# -- strategies -------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.text(max_size=20)
           | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, -1, 2048, 2**63, 2**64, 1e308, -1e308, "1", "nan", True]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def deep(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + "1" + close * depth).encode()


def to_json(value: Any) -> bytes:
    # allow_nan (the default) writes NaN/Infinity literals: a peer might too
    return json.dumps(value).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, cls: type[_Wire]) -> bytes:
    """A valid message of `cls` with one field replaced, removed or added, or its bytes
    cut or flipped."""
    data: dict[str, Any] = json.loads(VALID[cls].to_bytes())
    how = draw(st.sampled_from(["replace", "drop", "add", "nest", "bytes"]))
    key = draw(st.sampled_from(sorted(data)))
    if how == "replace":
        data[key] = draw(json_values)
    elif how == "drop":
        del data[key]
    elif how == "add":
        data[draw(st.text(max_size=10))] = draw(json_values)
    elif how == "nest":
        data[key] = json.loads(deep(draw(st.integers(1, 60))))
    else:
        body = bytearray(to_json(data))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(body) - 1))
            body[at] = draw(st.integers(0, 255))
        return bytes(body[:draw(st.integers(0, len(body)))])
    return to_json(data)


# -- properties -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@FUZZ
@given(body=st.binary(max_size=512))
def test_any_bytes(cls: type[_Wire], body: bytes) -> None:
    decode(cls, body)


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@FUZZ
@given(value=json_values)
def test_any_json(cls: type[_Wire], value: Any) -> None:
    decode(cls, to_json(value))
    decode(cls, json.dumps(value))  # as text, the way Redis hands registry entries over


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_mutated_valid_messages(cls: type[_Wire], data: st.DataObject) -> None:
    decode(cls, data.draw(mutated(cls)))


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_valid_messages_round_trip(cls: type[_Wire]) -> None:
    assert decode(cls, VALID[cls].to_bytes()) == VALID[cls]


# -- the cases that wedged the pool -------------------------------------------------------------
HOSTILE: dict[str, tuple[bytes, str]] = {
    "60000 [": (b"[" * 60_000, "not_json"),
    "60000 {": (b'{"a":' * 12_000, "not_json"),
    "deep but balanced": (deep(20_000), "not_json"),
    "deep under the parser's limit": (deep(500), "not_json"),
    "33 levels": (b'{"a":' + deep(32) + b"}", "not_json"),
    "5000-digit int": (b'{"sector": ' + b"9" * 5000 + b"}", "not_json"),
    "5000-digit negative": (b'{"x": -' + b"1" * 5000 + b"}", "not_json"),
    "int 21 digits": (b'{"x": 100000000000000000000}', "not_json"),
    "1e400": (b'{"x": 1e400}', "not_json"),
    "NaN": (b'{"x": NaN}', "not_json"),
    "-Infinity": (b'{"x": -Infinity}', "not_json"),
    "invalid UTF-8": (b'{"x": "\xff\xfe"}', "not_json"),
    "UTF-16 with BOM": ('{"x": 1}'.encode("utf-16"), "not_json"),
    "escaped lone surrogate": (b'{"x": "\\udc00"}', "not_json"),
    "surrogate key": (b'{"\\ud800": 1}', "not_json"),
    "duplicate keys": (b'{"x": 1, "x": 2}', "not_json"),
    "top-level array": (b"[]", "schema"),
    "top-level string": (b'"job"', "schema"),
    "top-level null": (b"null", "schema"),
    "empty": (b"", "not_json"),
    "schema_version true": (b'{"schema_version": true}', "schema_version"),
    "schema_version huge": (b'{"schema_version": 99999999999}', "schema_version"),
    "huge key": (b'{"' + b"k" * 60_000 + b'": 1}', "schema"),
    "oversized": (b" " * (MAX_REPLY_BYTES + 1), "oversized"),
}


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_bodies(cls: type[_Wire], case: str) -> None:
    body, reason = HOSTILE[case]
    with pytest.raises(MessageError) as err:
        cls.from_bytes(body, limit=limit_of(cls))
    assert err.value.reason == reason
    assert len(str(err.value)) < 400  # a 60 KB key is not echoed into logs


def test_deep_nesting_on_a_thread_is_a_message_error() -> None:
    # the I/O thread is not the main thread: same contract there
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Job.from_bytes(b"[" * 60_000)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], MessageError)


@pytest.mark.parametrize(("field", "value"), [
    ("started_at", "NaN"), ("finished_at", "1e308"), ("started_at", "-1e308"),
    ("finished_at", "Infinity"), ("started_at", "0"), ("started_at", '"1700000000"'),
    ("attempt", '"1"'), ("attempt", "true"), ("attempt", "1.0"), ("epoch", "true"),
    ("epoch", '"4"'), ("sector", "7.0"), ("sector", "1e1"),
])
def test_result_timestamps_and_ints(field: str, value: str) -> None:
    data = json.loads(VALID[Result].to_bytes())
    data[field] = "__X__"
    body = json.dumps(data).encode().replace(b'"__X__"', value.encode())
    with pytest.raises(MessageError) as err:
        Result.from_bytes(body)
    assert err.value.reason in {"schema", "not_json"}


def test_every_known_sector_size_is_accepted_and_no_other() -> None:
    data = json.loads(VALID[Job].to_bytes())
    for size in (2048, 8 << 20, 512 << 20, 32 << 30, 64 << 30):
        assert Job.from_bytes(to_json(data | {"size": size})).size == size
    for size in (0, 1, 2047, 4096, 16 << 30, 128 << 30, -2048):
        with pytest.raises(MessageError):
            Job.from_bytes(to_json(data | {"size": size}))


# -- headers ------------------------------------------------------------------------------------
header_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=16)


@FUZZ
@given(headers=header_values | st.dictionaries(
    st.sampled_from(["x-death", "x-sealpool-reason", "x-delivery-count", "reason"]),
    header_values, max_size=4))
def test_header_reads_never_raise(headers: Any) -> None:
    text = header_str(headers, "x-sealpool-reason")
    assert text is None or (isinstance(text, str) and text.isprintable())
    number = header_int(headers, "x-delivery-count")
    assert number is None or (type(number) is int)
    for d in deaths(headers):
        assert isinstance(d.reason, str) and isinstance(d.count, int) and d.count >= 0
    death_by_reason(headers, "delivery_limit")


def test_x_death_entries_are_read_by_reason() -> None:
    headers = {"x-death": [
        "garbage", {"reason": 5}, {"reason": "expired", "queue": "q.delay.5s", "count": 3},
        {"reason": "delivery_limit", "queue": b"q.pc1.deal", "count": True,
         "routing-keys": ["pool.pc1.deal.t01000", 7]},
    ]}
    found = death_by_reason(headers, "delivery_limit")
    assert found is not None and found.queue == "q.pc1.deal" and found.count == 0
    assert found.routing_keys == ("pool.pc1.deal.t01000",)
    assert [d.reason for d in deaths(headers)] == ["expired", "delivery_limit"]
    assert deaths({"x-death": "not a list"}) == () and deaths(None) == ()
    assert header_int({"n": True}, "n") is None and header_int({"n": 3}, "n") == 3


# -- operator text (config values): ValueError naming the form, never OverflowError ----------
@FUZZ
@given(text=st.text(max_size=30) | st.from_regex(r"\s*[0-9]{1,400}(\.[0-9]+)?\s*[a-zA-Z]{0,3}",
                                                  fullmatch=True))
def test_size_and_duration_parsers_only_raise_value_error(text: str) -> None:
    for parse in (parse_bytes, parse_duration):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value >= 0 and math.isfinite(value)


def test_ambiguous_byte_units_are_refused() -> None:
    with pytest.raises(ValueError, match=r"ambiguous: write 96GiB .* or 96GB"):
        parse_bytes("96G")
    assert parse_bytes("96GiB") == 96 << 30 and parse_bytes("96GB") == 96 * 10**9
    with pytest.raises(ValueError, match="too large"):
        parse_bytes("9" * 400)
