"""Malformed messages go to q.poison with a reason; workers and miners keep running."""

from __future__ import annotations

import json
import time
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_topology import Lane, Phase, connect_blocking, routing_key
from broker_topology.messages import MAX_BODY_BYTES
from broker_topology.poison import REASON, SOURCE
from miner_publisher.deadletters import DeadLetters

from .conftest import Pool

pytestmark = pytest.mark.integration


def publish_raw(pool: Pool, exchange: str, key: str, bodies: list[bytes]) -> None:
    conn = connect_blocking(pool.settings.amqp_url, "test-raw")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish(exchange, key, body, pika.BasicProperties(delivery_mode=2),
                             mandatory=True)
    finally:
        conn.close()


def drain_poison(pool: Pool, expect: int, timeout: float = 30) -> list[dict[str, Any]]:
    """What reached q.poison: a running miner records each entry as a dead letter (reason,
    source) and acks it, so read them back from there."""
    dead = DeadLetters(pool.redis(), pool.names)
    limit = time.monotonic() + timeout
    while len(entries := dead.list()) < expect and time.monotonic() < limit:
        time.sleep(0.2)
    return [{"headers": {REASON: e["reason"], SOURCE: e["source"]}, "body": e["body"]}
            for e in entries]


def valid_job_body(pool: Pool) -> bytes:
    job = {"schema_version": 1, "job_id": "t01000/1/ap", "miner": "t01000", "sector": 1,
           "phase": "ap", "attempt": 1, "sector_class": "deal", "size": 2048,
           "deadline": time.time() + 3600, "home": None, "issued_at": time.time(),
           "params": {}}
    return json.dumps(job).encode()


BAD = {
    b"not json at all": "not_json",
    b"[1,2,3]": "schema",
    b'{"schema_version": 7}': "schema_version",
    b'{"job_id": "t01000/1/ap"}': "schema",
    b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}": "oversized",
}


def test_malformed_jobs_are_parked_with_reason_and_work_goes_on(pool: Pool) -> None:
    # Given a worker and a miner
    pool.worker("wa", slots=1)
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    pool.wait_finished(["t01000"])
    # When malformed messages are published straight into job queues, between valid work
    key = routing_key("pool", Phase.AP, Lane.DEAL, "t01000")
    publish_raw(pool, pool.names.jobs, key, list(BAD))
    wrong_phase = json.loads(valid_job_body(pool)) | {"phase": "pc9"}
    publish_raw(pool, pool.names.jobs, routing_key("pool", Phase.C2, Lane.CC, "t01000"),
                [json.dumps(wrong_phase).encode()])
    pool.enqueue("t01000", 2, "cc")
    # Then each lands in q.poison with a reason and its source queue
    parked = drain_poison(pool, len(BAD) + 1)
    reasons = sorted(p["headers"][REASON] for p in parked)
    assert reasons == sorted([*BAD.values(), "schema"])
    assert {p["headers"][SOURCE] for p in parked} == {
        pool.names.miner_queue(Phase.AP, Lane.DEAL, "t01000"),
        pool.names.miner_queue(Phase.C2, Lane.CC, "t01000")}
    # and the worker kept running and finished the valid sectors
    rows = pool.wait_finished(["t01000"])
    assert [r["state"] for r in rows] == ["done"] * 3
    assert pool.procs["wa"].poll() is None


def test_malformed_result_is_parked_by_the_miner(pool: Pool) -> None:
    pool.miner("t01000")
    pool.wait_for("miner up", lambda: "running" in (pool.tmp / "miner-t01000.log").read_text())
    publish_raw(pool, pool.names.results, "t01000", [b"garbage", b'{"outcome": "ok"}'])
    parked = drain_poison(pool, 2)
    assert sorted(p["headers"][REASON] for p in parked) == ["not_json", "schema"]
    assert pool.procs["miner-t01000"].poll() is None


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["job_id", "miner", "sector", "phase", "attempt", "size",
                                     "schema_version", "deadline", "params"]),
                    st.one_of(st.integers(), st.text(max_size=20), st.none()),
                    max_size=6).map(lambda d: json.dumps(d).encode())),
    min_size=1, max_size=5))
def test_any_garbage_is_parked_and_valid_jobs_interleaved_complete(
        running_pool: Pool, garbage: list[bytes]) -> None:
    pool = running_pool
    before = pool.store("t01000").numbers()
    seen = len(DeadLetters(pool.redis(), pool.names).list())
    key = routing_key("pool", Phase.AP, Lane.DEAL, "t01000")
    publish_raw(pool, pool.names.jobs, key, garbage[: len(garbage) // 2])
    pool.enqueue("t01000", 1, "deal")
    publish_raw(pool, pool.names.jobs, key, garbage[len(garbage) // 2:])
    parked = drain_poison(pool, seen + len(garbage))[seen:]
    assert len(parked) == len(garbage)
    assert all(p["headers"].get(REASON) for p in parked)
    rows = pool.wait_finished(["t01000"])
    assert [r["state"] for r in rows if r["sector"] not in before] == ["done"]
    assert pool.procs["wa"].poll() is None


@pytest.fixture(scope="module")
def running_pool(services: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One pool shared by the hypothesis examples (starting processes per example is slow)."""
    import uuid

    from broker_topology import PoolSettings

    amqp, red = services
    ns = f"t{uuid.uuid4().hex[:10]}"
    pool = Pool(PoolSettings(amqp_url=amqp, redis_url=red, namespace=ns),
                tmp_path_factory.mktemp(ns))
    pool.worker("wa", slots=2)
    pool.miner("t01000")
    yield pool
    pool.teardown()
