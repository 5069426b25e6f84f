from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_topology import ErrorClass, Job, MessageError, Outcome, Phase, Result, job_id
from broker_topology.messages import MAX_BODY_BYTES, SectorClass


def make_job(**over: object) -> Job:
    fields: dict[str, object] = dict(
        job_id="t01000/7/pc1", miner="t01000", sector=7, phase=Phase.PC1, attempt=1,
        sector_class=SectorClass.DEAL, size=2048, deadline=1e9, home="w1", issued_at=1.0)
    fields.update(over)
    return Job(**fields)  # type: ignore[arg-type]


def test_job_round_trips_through_json() -> None:
    job = make_job(params={"ap": {"commd": "ab"}})
    assert Job.from_bytes(job.to_bytes()) == job
    assert json.loads(job.to_bytes())["schema_version"] == 1


def test_job_is_frozen_and_refuses_unknown_fields() -> None:
    job = make_job()
    with pytest.raises(Exception, match="frozen"):
        job.attempt = 2  # type: ignore[misc]
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
