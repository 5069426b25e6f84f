"""Hostile messages against live processes: a hypothesis-generated batch of bodies and
headers goes to every place a worker or miner reads from (pool job queues, the results
queue, q.poison, the control and doorbell exchanges). Afterwards every process still runs,
every malformed job or result is a dead letter with the decoder's reason, and the pool
still seals sectors: no message can wedge a worker or a miner."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import Phase as HPhase
from hypothesis import strategies as st

from broker_topology import Lane, Phase, connect_blocking, routing_key
from broker_topology.control import ControlOp, ControlRequest
from broker_topology.errors import MessageError
from broker_topology.messages import MAX_BODY_BYTES, Job, Result, _Wire
from broker_topology.poison import AT, BY, DETAIL, REASON, SOURCE
from tests.unit.test_decoders_fuzz import HOSTILE, VALID, deep, json_values, mutated, to_json

from .conftest import Pool

pytestmark = pytest.mark.integration

MINER = "t01000"
WORKERS = ("fa", "fb")
TARGETS = ("job", "result", "poison", "control", "doorbell")
#: Explicit cases published besides the generated batch (target, body).
MUST: list[tuple[str, bytes]] = [
    ("job", b"[" * 60_000), ("job", b'{"sector": ' + b"9" * 5000 + b"}"),
    ("result", b"[" * 60_000), ("result", b'{"attempt": ' + b"1" * 5000 + b"}"),
    ("poison", b"[" * 60_000), ("control", b"[" * 60_000), ("doorbell", b"[" * 60_000),
    ("job", b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"),
]


@dataclass(frozen=True)
class Outgoing:
    target: str
    body: bytes
    key: str = ""
    headers: dict[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None


# -- hostile headers: what pika can encode, shaped to trip careless readers -----------------
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# pika has no float field; decimals and timestamps are the odd types a reader meets instead
header_scalars = (st.none() | st.booleans() | i64 | st.text(max_size=30) | st.binary(max_size=30)
                  | st.decimals(min_value=-(10**6), max_value=10**6, places=3)
                  | st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)))
header_values = st.recursive(
    header_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4),
    max_leaves=12)
bad_deaths = st.one_of(
    header_values,
    st.lists(header_values, max_size=3),
    st.lists(st.fixed_dictionaries({}, optional={
        "reason": header_values | st.sampled_from(["delivery_limit", "expired", "rejected"]),
        "queue": header_values, "count": header_values, "routing-keys": header_values,
        "exchange": header_values, "time": header_values}), max_size=3))
headers = st.fixed_dictionaries({}, optional={
    "x-death": bad_deaths, REASON: header_values, DETAIL: header_values,
    SOURCE: header_values, BY: header_values, AT: header_values,
    "x-first-death-reason": header_values, "x-first-death-queue": header_values,
    "x-delivery-count": header_values, "delay": header_values,
}) | st.dictionaries(st.text(min_size=1, max_size=12), header_values, max_size=5)


def bodies(target: str) -> st.SearchStrategy[bytes]:
    base = st.one_of(
        st.binary(max_size=300),
        json_values.map(to_json),
        st.integers(1, 60_000).map(lambda n: b"[" * n),
        st.integers(33, 20_000).map(deep),
        st.integers(21, 5000).map(lambda d: b'{"sector": ' + b"9" * d + b"}"),
        st.sampled_from([b for b, _ in HOSTILE.values() if len(b) <= MAX_BODY_BYTES + 64]),
        # big but under the limit: a worker reads and parses all of it
        st.integers(30_000, MAX_BODY_BYTES - 200).map(
            lambda n: to_json(json.loads(VALID[Job].to_bytes()) | {"params": {"x": "a" * n}})),
    )
    if target == "job":
        return base | mutated(Job)
    if target == "result":
        return base | mutated(Result)
    return base | mutated(Job) | mutated(Result)


def spoiled(cls: type[_Wire], body: bytes) -> bytes:
    """`body` made undecodable if it happens to be a valid `cls` (trailing garbage)."""
    try:
        cls.from_bytes(body)
    except MessageError:
        return body
    return body + b"!"


@st.composite
def outgoing(draw: st.DrawFn) -> Outgoing:
    target = draw(st.sampled_from(TARGETS))
    body = draw(bodies(target))
    key = ""
    # No body may decode as a job or result anywhere: a dead letter that is one moves its
    # sector on (by design), and this test must leave the miner's sectors alone.
    body = spoiled(Result, spoiled(Job, body))
    if target == "job":
        key = routing_key("pool", draw(st.sampled_from(list(Phase))),
                          draw(st.sampled_from(list(Lane))), MINER)
    elif target == "control":
        key = draw(st.sampled_from(WORKERS))
        try:  # only `info` may stay valid: a forged pause would stop a slot for good
            if ControlRequest.from_bytes(body).op is not ControlOp.INFO:
                body += b"!"
        except MessageError:
            pass
    else:
        key = draw(st.sampled_from([p.value for p in Phase]))
    return Outgoing(target, body, key, draw(headers),
                    # a forged direct reply-to name (the bare pseudo-queue needs a consumer
                    # on our own channel): the worker's reply to it must not hurt the worker
                    draw(st.none() | st.text(max_size=40)
                         | st.just("amq.rabbitmq.reply-to.g2dkAA1yYWJiaXRAbG9jYWxob3N0AAA")),
                    draw(st.none() | st.text(max_size=40)))


# -- the test ---------------------------------------------------------------------------------
def expected_park(pool: Pool, msg: Outgoing) -> tuple[str, str] | None:
    """(source, reason) of the dead letter `msg` must become; None for no fixed one."""
    if msg.target == "job":
        _origin, phase, lane, miner = msg.key.split(".")
        source = (pool.names.pool_queue(Phase(phase), Lane.URGENT) if lane == Lane.URGENT
                  else pool.names.miner_queue(Phase(phase), Lane(lane), miner))
        cls: type[_Wire] = Job
    elif msg.target == "result":
        source, cls = pool.names.results_queue(MINER), Result
    else:
        return None
    try:
        cls.from_bytes(msg.body)
    except MessageError as exc:
        return source, exc.reason
    raise AssertionError(f"{msg.target} body is valid: {msg.body[:80]!r}")


def publish(ch: Any, pool: Pool, msg: Outgoing) -> None:
    n = pool.names
    exchange, key = {"job": (n.jobs, msg.key), "result": (n.results, MINER),
                     "poison": (n.poison, ""), "control": (n.control, msg.key),
                     "doorbell": (n.doorbell, msg.key)}[msg.target]
    props = pika.BasicProperties(headers=msg.headers, reply_to=msg.reply_to,
                                 correlation_id=msg.correlation_id, delivery_mode=2)
    # mandatory: every message must reach a queue (control and doorbell queues are the
    # workers' own, so a dead worker shows up here as Unroutable too)
    ch.basic_publish(exchange, key, msg.body, props, mandatory=True)


def serving(pool: Pool, worker: str) -> bool:
    """The worker answers `info` through the control exchange with every slot unpaused."""
    out = pool.cli("miner-publisher", "worker", "info", worker, "--json", "--timeout", "3",
                   check=False)
    if out.returncode != 0:
        return False
    slots = json.loads(out.stdout)
    return len(slots) == 2 and not any(s["paused"] for s in slots)


def dead_letters(pool: Pool) -> list[dict[str, Any]]:
    out = pool.cli("miner-publisher", "dead-letters", "list", "--json")
    return list(json.loads(out.stdout))


def test_hostile_messages_wedge_no_process(pool: Pool) -> None:
    # Given two workers and a miner, all up
    procs = [pool.worker(w, simulate=0.05, slots=2) for w in WORKERS]
    procs.append(pool.miner(MINER))
    for w in WORKERS:  # answering on its control queue: its doorbell queue is bound too
        pool.wait_for(f"worker {w} answering", partial(serving, pool, w), 30)
    conn = connect_blocking(pool.settings.amqp_url, "test-fuzz-live")

    def results_queue_ready() -> bool:
        try:
            conn.channel().queue_declare(pool.names.results_queue(MINER), passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False

    pool.wait_for("the miner's results queue", results_queue_ready, 30)
    ch = conn.channel()
    ch.confirm_delivery()
    sent: list[Outgoing] = [Outgoing(t, b, k) for t, b in MUST
                            for k in [{"job": "pool.ap.deal." + MINER, "control": WORKERS[0],
                                       "doorbell": "ap"}.get(t, "")]]
    sent.append(Outgoing("poison", b"{}", headers={"x-death": "not a list"}))
    sent.append(Outgoing("poison", b"{}", headers={"x-death": [{"reason": 5}, "x", 7]}))
    for msg in sent:
        publish(ch, pool, msg)

    # When a bounded, reproducible batch of hostile messages goes everywhere they read
    @settings(max_examples=60, derandomize=True, database=None, deadline=None,
              phases=[HPhase.generate], suppress_health_check=list(HealthCheck))
    @given(msg=outgoing())
    def publish_one(msg: Outgoing) -> None:
        publish(ch, pool, msg)
        sent.append(msg)

    publish_one()
    conn.close()
    targets = Counter(m.target for m in sent)
    assert all(targets[t] > 0 for t in TARGETS), targets

    # Then every malformed job and result is a dead letter with the decoder's reason
    # (workers park jobs, the miner parks results; the miner drains q.poison into the list)
    expect = Counter(p for m in sent if (p := expected_park(pool, m)) is not None)
    total = sum(expect.values()) + targets["poison"]
    pool.wait_for(f"{total} dead letters", lambda: len(dead_letters(pool)) >= total, 120)
    time.sleep(1.0)  # nothing more than that may arrive
    entries = dead_letters(pool)
    assert len(entries) == total
    ours = {src for src, _ in expect}
    assert Counter((e["source"], e["reason"]) for e in entries if e["source"] in ours) == expect
    moved = [e for e in entries if e["job_id"] is not None]
    assert not moved, f"hostile bodies taken for jobs: {moved}"

    # and every process is still running and serving: each worker answers on its control
    # queue, and new sectors are sealed
    for proc in procs:
        assert proc.poll() is None, f"pid {proc.pid} exited {proc.returncode}\n{pool.logs()}"
    for w in WORKERS:
        assert serving(pool, w), f"worker {w} does not answer\n{pool.logs()}"
    pool.enqueue(MINER, 3, "deal")
    rows = pool.wait_finished([MINER], timeout=120)
    assert [r["state"] for r in rows] == ["done"] * 3, rows
    assert all(proc.poll() is None for proc in procs)
