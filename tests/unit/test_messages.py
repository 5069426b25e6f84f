from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_topology import ErrorClass, Job, MessageError, Outcome, Phase, Result, job_id
from broker_topology.control import ControlReply, ControlRequest, SlotStatus, SlotView, decode
from broker_topology.messages import (
    MAX_ATTEMPT,
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_ERROR_CHARS,
    MAX_TIMESTAMP,
    SectorClass,
    cut_error,
)


def make_job(**over: Any) -> Job:
    fields: dict[str, Any] = dict(
        job_id="t01000/7/pc1", miner="t01000", sector=7, phase=Phase.PC1, attempt=1,
        sector_class=SectorClass.DEAL, size=2048, deadline=1e9, home="w1", issued_at=1.0)
    fields.update(over)
    return Job(**fields)


def test_job_round_trips_through_json() -> None:
    job = make_job(params={"ap": {"commd": "ab"}})
    assert Job.from_bytes(job.to_bytes()) == job
    assert json.loads(job.to_bytes())["schema_version"] == 1


def test_job_is_frozen_and_refuses_unknown_fields() -> None:
    job = make_job()
    with pytest.raises(Exception, match="frozen"):
        job.attempt = 2
    body = json.loads(job.to_bytes()) | {"surprise": 1}
    with pytest.raises(MessageError) as err:
        Job.from_bytes(json.dumps(body).encode())
    assert err.value.reason == "schema" and "surprise" in err.value.detail


def test_job_id_must_match_miner_sector_phase() -> None:
    with pytest.raises(ValueError, match="does not match"):
        make_job(job_id="t01000/8/pc1")
    assert job_id("t01000", 7, "pc1") == "t01000/7/pc1"


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe not json", "not_json"),
    (b"{truncated", "not_json"),
    (b"[1, 2]", "schema"),
    (b'{"schema_version": 99}', "schema_version"),
    (b'{"job_id": "t01000/1/ap"}', "schema"),
    (b"{" + b" " * MAX_BODY_BYTES + b"}", "oversized"),
])
def test_bad_bodies_raise_message_error_with_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as err:
        Job.from_bytes(body)
    assert err.value.reason == reason


def test_unknown_phase_and_bad_miner_are_schema_errors() -> None:
    good = json.loads(make_job().to_bytes())
    for patch in ({"phase": "pc9"}, {"miner": "x123"}, {"attempt": 0}):
        with pytest.raises(MessageError) as err:
            Job.from_bytes(json.dumps(good | patch).encode())
        assert err.value.reason == "schema"


@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_raise_message_error(body: bytes) -> None:
    try:
        Job.from_bytes(body)
    except MessageError as exc:
        assert exc.reason in {"not_json", "schema", "schema_version", "oversized"}


def test_result_error_class_required_exactly_on_error() -> None:
    job = make_job()
    ok = Result.for_job(job, "w1", 1.0, 2.0, outcome=Outcome.OK)
    assert ok.error_class is None
    with pytest.raises(ValueError, match="error_class"):
        Result.for_job(job, "w1", 1.0, 2.0, outcome=Outcome.ERROR)
    bad = Result.for_job(job, "w1", 1.0, 2.0, outcome=Outcome.ERROR,
                         error_class=ErrorClass.TEMPORARY, error="disk")
    assert Result.from_bytes(bad.to_bytes()) == bad


# -- strictness: what one forged or buggy message must not slip into shared state ---------
def good_job() -> dict[str, Any]:
    return dict(json.loads(make_job().to_bytes()))


def good_result() -> dict[str, Any]:
    ok = Result.for_job(make_job(), "w1", 100.0, 160.0, outcome=Outcome.OK, epoch=3)
    return dict(json.loads(ok.to_bytes()))


@pytest.mark.parametrize("patch", [
    {"attempt": "1"}, {"attempt": True}, {"attempt": 1.0}, {"attempt": 0},
    {"attempt": MAX_ATTEMPT + 1}, {"sector": -1}, {"sector": 2**64}, {"sector": "7"},
    {"size": 4096}, {"size": "2048"}, {"size": 2048.0}, {"size": True},
    {"deadline": 1e308}, {"deadline": -1.0}, {"deadline": 0}, {"deadline": "1e9"},
    {"deadline": True}, {"issued_at": MAX_TIMESTAMP}, {"issued_at": None},
    {"home": 7}, {"miner": "t01000\n"}, {"params": []}, {"params": {"n": 10**20}},
    {"schema_version": True}, {"schema_version": 1.0},
])
def test_job_fields_are_strict(patch: dict[str, Any]) -> None:
    body = good_job() | patch
    with pytest.raises(MessageError) as err:
        Job.from_bytes(json.dumps(body).encode())
    # 2**64 and 10**20 are refused by the parser itself (beyond 64 bits)
    assert err.value.reason in {"schema", "schema_version", "not_json"}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit_counts_from_the_message() -> None:
    # the message is depth 1 and params 2: params may hold MAX_DEPTH - 2 more levels
    ok = good_job() | {"params": {"a": nested(MAX_DEPTH - 2)}}
    assert Job.from_bytes(json.dumps(ok).encode()).params == ok["params"]
    deep = good_job() | {"params": {"a": nested(MAX_DEPTH - 1)}}
    with pytest.raises(MessageError, match="deeper than 32") as err:
        Job.from_bytes(json.dumps(deep).encode())
    assert err.value.reason == "not_json"
    with pytest.raises(ValueError, match="deeper"):  # built in Python: the same limit
        make_job(params={"a": nested(MAX_DEPTH - 1)})


@pytest.mark.parametrize("patch", [
    {"started_at": float("nan")}, {"finished_at": float("inf")}, {"started_at": 1e308},
    {"finished_at": -1e308}, {"epoch": -1}, {"epoch": True}, {"epoch": "3"},
    {"epoch": 2**63}, {"attempt": "1"}, {"error": "x" * (MAX_ERROR_CHARS + 1)},
    {"outputs": {"nan": float("nan")}}, {"job_id": "t01000/8/pc1"},
])
def test_result_fields_are_strict(patch: dict[str, Any]) -> None:
    body = json.dumps(good_result() | patch).encode()  # NaN/Infinity literals pass dumps
    with pytest.raises(MessageError) as err:
        Result.from_bytes(body)
    assert err.value.reason in {"schema", "not_json"}


def test_nan_and_overflowing_numbers_are_not_json() -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"):
        body = json.dumps(good_result()).encode().replace(b'"epoch": 3', b'"epoch": ' + literal)
        with pytest.raises(MessageError) as err:
            Result.from_bytes(body)
        assert err.value.reason == "not_json", literal


def test_duplicate_keys_and_lone_surrogates_are_refused() -> None:
    dup = b'{"epoch": 1, "epoch": 2}'
    with pytest.raises(MessageError, match="duplicate key 'epoch'"):
        Result.from_bytes(dup)
    body = json.dumps(good_job() | {"params": {"x": "\ud800"}}).encode()  # escaped: \ud800
    with pytest.raises(MessageError) as err:
        Job.from_bytes(body)
    assert err.value.reason == "not_json"


def test_producers_build_valid_messages() -> None:
    job = make_job()
    long_error = "Traceback: " + "x" * 20_000 + " the cause"
    res = Result.for_job(job, "w1", 100.0, 101.5, home="w1", outcome=Outcome.ERROR,
                         error_class=ErrorClass.TEMPORARY, error=long_error, epoch=9)
    assert res.error is not None and len(res.error) <= MAX_ERROR_CHARS
    assert res.error.startswith("Traceback: ") and res.error.endswith(" the cause")
    assert Result.from_bytes(res.to_bytes()) == res
    assert cut_error("short") == "short"


def test_python_producers_are_held_to_the_same_rules() -> None:
    with pytest.raises(ValueError, match="finite"):
        Result.for_job(make_job(), "w1", float("nan"), 2.0, outcome=Outcome.OK)
    with pytest.raises(ValueError, match="worker"):
        Result.for_job(make_job(), "bad name!", 1.0, 2.0, outcome=Outcome.OK)
    with pytest.raises(ValueError, match="JSON value"):
        make_job(params={"path": object()})
    with pytest.raises(ValueError, match="sector size"):
        make_job(size=1000)


def test_control_decode_is_from_bytes_with_the_reply_limit() -> None:
    reply = ControlReply(worker="w1", ok=True, message="m" * 100)
    big = ControlReply(worker="w1", ok=True, slots=tuple(
        SlotView(index=i, phases=(Phase.AP,), configured_phases=(Phase.AP,),
                 temp_dir="/t" * 200, state=SlotStatus.IDLE) for i in range(200)))
    assert decode(ControlReply, reply.to_bytes().decode()) == reply  # str, as Redis gives
    assert len(big.to_bytes()) > MAX_BODY_BYTES
    assert decode(ControlReply, big.to_bytes()) == big
    with pytest.raises(MessageError) as err:
        ControlReply.from_bytes(big.to_bytes())
    assert err.value.reason == "oversized"


def test_control_requests_are_strict() -> None:
    for patch in ({"index": "0"}, {"index": True}, {"index": 0.0}, {"now": 1},
                  {"now": "yes"}, {"phases": ["ap"] * 7}):
        body = {"op": "pause", "index": 0} | patch
        with pytest.raises(MessageError):
            ControlRequest.from_bytes(json.dumps(body).encode())
    assert ControlRequest.from_bytes(b'{"op": "pause", "index": 0, "now": true}').now


def test_message_error_detail_is_one_bounded_line() -> None:
    err = MessageError("schema", "a\nb" + "c" * 10_000)
    assert "\n" not in err.detail and len(err.detail) <= 300


def test_accepted_outputs_always_fit_the_next_jobs_params() -> None:
    # the miner carries outputs on as params[<phase>]: one level deeper than in the result
    deepest = {"a": nested(MAX_DEPTH - 3)}
    res = Result.for_job(make_job(), "w1", 1.0, 2.0, outcome=Outcome.OK, outputs=deepest)
    assert make_job(params={"pc1": res.outputs}).params["pc1"] == deepest
    with pytest.raises(MessageError, match="deeper"):
        Result.from_bytes(json.dumps(json.loads(res.to_bytes()) | {
            "outputs": {"a": nested(MAX_DEPTH - 2)}}).encode())


@pytest.mark.parametrize("outputs", [
    {"a": nested(MAX_DEPTH - 2)}, {"x": float("nan")}, {"n": 2**70}, {"p": object()},
])
def test_a_worker_reports_unusable_outputs_as_a_permanent_error(outputs: Any) -> None:
    res = Result.for_job(make_job(), "w1", 1.0, 2.0, outcome=Outcome.OK, outputs=outputs,
                         epoch=5)
    assert (res.outcome, res.error_class, res.outputs, res.epoch) == (
        Outcome.ERROR, ErrorClass.PERMANENT, {}, 5)
    assert res.error is not None and res.error.startswith("outputs refused: outputs")
    assert Result.from_bytes(res.to_bytes()) == res
