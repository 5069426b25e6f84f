"""Dead letters: untrusted headers never raise, parked jobs are named by attempt and move
their sector by reason, and `requeue` refuses anything but a failed sector's current dead
letter."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
import redis

from broker_topology.messages import ErrorClass, Phase, SectorClass
from broker_topology.naming import Names
from broker_topology.poison import BY, REASON, Reason
from miner_publisher.config import MinerSettings
from miner_publisher.deadletters import DeadLetters, check_requeue, reason_of
from miner_publisher.parked import on_parked
from miner_publisher.pipeline import Sector, State, enter
from miner_publisher.publisher import build_job
from miner_publisher.store import SectorStore

from .test_miner_fixtures import rds

__all__ = ["rds"]
M = "t01000"

MALFORMED: list[Any] = [
    None, "x", [], {"x-death": "not a list"}, {"x-death": [1, "a", None, []]},
    {"x-death": [{"reason": "delivery_limit", "count": "7", "queue": 5}]},
    {"x-death": [{"reason": b"delivery_limit", "count": 1.5, "queue": b"\xff"}]},
    {"x-death": [{"reason": "delivery_limit", "count": Decimal("1e400")}]},
    {"x-death": {"reason": "delivery_limit"}}, {REASON: 7, "x-sealpool-detail": [1]},
    {"x-first-death-reason": {"a": 1}}, {BY: ["x"]},
]


@pytest.mark.parametrize("headers", MALFORMED)
def test_malformed_headers_read_as_a_reason_and_never_raise(headers: Any) -> None:
    reason, detail, source = reason_of(headers)
    assert isinstance(reason, str) and reason and isinstance(detail, str)
    assert isinstance(source, str)


def test_the_brokers_delivery_limit_is_told_apart_from_a_workers_crash_loop() -> None:
    broker = {"x-death": [{"reason": "rejected", "queue": "q.a", "count": 1},
                          {"reason": "delivery_limit", "queue": "q.b", "count": 6}]}
    assert reason_of(broker)[0] == Reason.DELIVERY_LIMIT
    assert "q.b after 6 deliveries" in reason_of(broker)[1]
    assert reason_of({REASON: Reason.CRASH_LOOP, **broker})[0] == Reason.CRASH_LOOP


def sector(state: State = State.QUEUED, attempt: int = 2) -> Sector:
    return Sector(M, 1, state, Phase.PC2, attempt, home="w1", attempts={"pc2": attempt},
                  base_attempt=1)


def entry(reason: str, attempt: int = 2, phase: str = "pc2") -> dict[str, Any]:
    return {"reason": reason, "detail": "why", "phase": phase, "attempt": attempt,
            "parked_by": "pool-worker/w1", "at": 1.0}


CFG = MinerSettings(max_attempts={p: 3 for p in Phase})


@pytest.mark.parametrize(("reason", "state", "error_class", "words"), [
    (Reason.CRASH_LOOP, State.FAILED, ErrorClass.CRASH, "crash: crash_loop"),
    (Reason.OVERSIZED, State.FAILED, ErrorClass.PERMANENT, "parked as oversized"),
    (Reason.SCHEMA_VERSION, State.FAILED, ErrorClass.PERMANENT, "parked as schema_version"),
    (Reason.UNSERVED_SIZE, State.FAILED, ErrorClass.PERMANENT, "no worker takes 2KiB"),
    (Reason.DELIVERY_LIMIT, State.QUEUED, ErrorClass.TEMPORARY, "parked as delivery_limit"),
    (Reason.MISROUTED, State.QUEUED, ErrorClass.TEMPORARY, "parked as misrouted"),
    (Reason.NO_RESULTS_QUEUE, State.QUEUED, ErrorClass.TEMPORARY, "no_results_queue"),
])
def test_a_parked_job_of_the_current_attempt_moves_its_sector_by_reason(
        reason: str, state: State, error_class: ErrorClass, words: str) -> None:
    moved = on_parked(sector(), 2048, entry(reason), CFG)
    assert moved is not None
    t, klass = moved
    assert (t.sector.state, klass) == (state, error_class)
    assert t.sector.error is not None and words in t.sector.error
    if state is State.QUEUED:  # a retry: a new attempt, after a backoff
        assert t.sector.attempt == 3 and t.dispatch_after is not None


def test_the_brokers_delivery_limit_retries_only_up_to_the_phase_limit() -> None:
    moved = on_parked(replace(sector(attempt=3), attempts={"pc2": 3}), 2048,
                      entry(Reason.DELIVERY_LIMIT, attempt=3), CFG)
    assert moved is not None and moved[0].sector.state is State.FAILED
    assert "after 3 attempts" in str(moved[0].sector.error)


def test_a_dead_letter_of_another_attempt_or_phase_changes_nothing() -> None:
    assert on_parked(sector(), 2048, entry(Reason.CRASH_LOOP, attempt=1), CFG) is None
    assert on_parked(sector(), 2048, entry(Reason.CRASH_LOOP, phase="c2"), CFG) is None
    assert on_parked(sector(State.DONE), 2048, entry(Reason.CRASH_LOOP), CFG) is None


def make_sector(store: SectorStore, state: State) -> None:
    now = time.time()
    [rec] = store.create(1, SectorClass.CC, 2048, now + 3600, {}, now)
    after = enter(rec.sector, Phase.AP, state=State.QUEUED)
    assert store.transition(rec, after, now)
    if state is not State.QUEUED:
        got = store.get(1)
        assert got is not None
        assert store.transition(got, replace(after, state=state), now)


def park_job(dead: DeadLetters, store: SectorStore, attempt: int, reason: str) -> str:
    rec = store.get(1)
    assert rec is not None
    job = build_job(rec, replace(rec.sector, attempt=attempt), time.time())
    return str(dead.record({REASON: reason}, job.to_bytes(), time.time())["id"])


@pytest.mark.parametrize("state", [State.DONE, State.QUEUED])
def test_requeue_is_refused_on_a_done_or_running_sector(
        rds: tuple[redis.Redis, Names], state: State) -> None:
    client, names = rds
    store, dead = SectorStore(client, names, M), DeadLetters(client, names)
    make_sector(store, state)
    assert park_job(dead, store, 1, Reason.CRASH_LOOP) == f"{M}/1/ap#1"
    with pytest.raises(ValueError, match=f"sector {M}/1 is {state} at ap attempt 1, not failed"):
        check_requeue(store, dead, f"{M}/1/ap", force=False)
    check_requeue(store, dead, f"{M}/1/ap", force=True)  # the operator insists


def test_requeue_needs_the_dead_letter_of_the_current_attempt(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    store, dead = SectorStore(client, names, M), DeadLetters(client, names)
    make_sector(store, State.FAILED)
    with pytest.raises(ValueError, match="no dead letter of t01000/1/ap for that attempt"):
        check_requeue(store, dead, f"{M}/1/ap", force=False)
    park_job(dead, store, 1, Reason.CRASH_LOOP)
    check_requeue(store, dead, f"{M}/1/ap", force=False)
    assert dead.to_act_on(M) == [f"{M}/1/ap#1"]  # its miner's run moves the sector on


def test_garbage_in_the_poison_queue_is_kept_without_a_sector(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    dead = DeadLetters(client, names)
    got = dead.record({"x-death": "junk"}, b"[" * 5000, time.time())
    assert got["id"].startswith("msg-") and got["miner"] is None
    assert dead.to_act_on(M) == []
