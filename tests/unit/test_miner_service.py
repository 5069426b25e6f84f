"""The miner service on the in-memory broker twin and the real Redis: fencing by lease
epoch, parked jobs moving their sector, poison that cannot stop it, oversized jobs,
clamped durations and the stall watchdog."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from broker_topology.memory import MemoryBroker
from broker_topology.messages import Outcome, Phase, Result, SectorClass, job_id
from broker_topology.naming import Names
from broker_topology.poison import REASON, Reason
from broker_topology.settings import PoolSettings
from broker_topology.transport import Session, Transport
from miner_publisher.config import MinerSettings
from miner_publisher.pipeline import State
from miner_publisher.publisher import build_job
from miner_publisher.queries import sector_rows
from miner_publisher.service import MinerService

from .test_miner_fixtures import rds

__all__ = ["rds"]
M = "t01000"
AP = job_id(M, 1, Phase.AP)


class Miner:
    """A MinerService whose inbox the test drains by hand: one message at a time."""

    def __init__(self, client: redis.Redis, names: Names, **cfg: Any) -> None:
        self.broker = MemoryBroker()
        self.names = names

        def transport(on_connect: Callable[[Session], None]) -> Transport:
            return self.broker.transport("miner", on_connect=on_connect)

        self.service = MinerService(PoolSettings(namespace=names.namespace),
                                    MinerSettings(**cfg), M, client, transport=transport)
        self.service.link.start(wait_s=5)
        self.store = self.service.store

    def deliver(self, kind: str = "results") -> None:
        got_kind, delivery, body = self.service.inbox.get(timeout=5)
        assert got_kind == kind
        (self.service.handle_poison if kind == "poison" else self.service.handle)(
            delivery, body)

    def result(self, epoch: int, phase: Phase = Phase.AP, attempt: int = 1,
               **fields: Any) -> None:
        r = {"schema_version": 1, "job_id": job_id(M, 1, phase), "miner": M, "sector": 1,
             "phase": phase.value, "attempt": attempt, "worker": "w1",
             "started_at": time.time() - 1, "finished_at": time.time(), "outcome": "ok",
             "epoch": epoch, **fields}
        self.broker.publish(self.names.results, M, json.dumps(r).encode())
        self.deliver()

    def poison(self, body: bytes, headers: dict[str, Any]) -> None:
        self.broker.publish(self.names.poison, "", body, headers=headers)
        self.deliver("poison")

    def current_job(self) -> bytes:
        """The job of the attempt the sector waits for, as published (whatever its lane)."""
        rec = self.store.get(1)
        assert rec is not None and rec.sector.state is State.QUEUED
        return build_job(rec, rec.sector, time.time()).to_bytes()

    def sector(self) -> tuple[State, Phase, int, str | None]:
        rec = self.store.get(1)
        assert rec is not None
        return rec.sector.state, rec.sector.phase, rec.sector.attempt, rec.sector.error


@pytest.fixture
def miner(rds: tuple[redis.Redis, Names]) -> Iterator[Callable[..., Miner]]:
    made: list[Miner] = []

    def make(params: dict[str, Any] | None = None, **cfg: Any) -> Miner:
        m = Miner(*rds, **cfg)
        now = time.time()
        m.store.create(1, SectorClass.DEAL, 2048, now + 7 * 86400, params or {}, now)
        m.service.tick()  # admits it: the ap job goes out
        made.append(m)
        return m

    yield make
    for m in made:
        m.service.link.stop()


def test_only_a_result_of_the_current_lease_epoch_is_accepted(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    m = miner()
    client, names = rds
    client.set(names.epoch_key(AP, 1), 2)  # worker A (epoch 1) froze; B holds epoch 2
    m.result(epoch=1)
    m.result(epoch=0)  # no lease at all
    assert m.sector()[:3] == (State.QUEUED, Phase.AP, 1)
    assert m.store.stats()["stale_results"] == 2
    m.result(epoch=2)
    assert m.sector()[:3] == (State.QUEUED, Phase.PC1, 1)


def test_a_crash_loop_fails_the_sector_and_the_brokers_delivery_limit_retries_it(
        miner: Callable[..., Miner]) -> None:
    m = miner()
    job = m.current_job()
    m.poison(job, {"x-death": [{"reason": "delivery_limit", "queue": "q.ap.deal",
                                "count": 6}]})
    state, phase, attempt, error = m.sector()
    assert (state, phase, attempt) == (State.QUEUED, Phase.AP, 2)
    assert error is not None and "delivery_limit" in error
    # The retry's job, a new attempt, waits out its backoff in a delay queue.
    assert m.store.outbox_size() == 0
    m.poison(job, {REASON: Reason.CRASH_LOOP})  # attempt 1 again: changes nothing now
    assert m.sector()[:3] == (State.QUEUED, Phase.AP, 2)
    again = json.loads(job) | {"attempt": 2}
    m.poison(json.dumps(again).encode(), {REASON: Reason.CRASH_LOOP})
    state, _, _, error = m.sector()
    assert state is State.FAILED and error is not None and "crash_loop" in error
    assert [e["id"] for e in m.service.dead_letters.list(M)] == [f"{AP}#1", f"{AP}#2"]


def test_malformed_x_death_and_garbage_in_the_poison_queue_leave_the_service_serving(
        miner: Callable[..., Miner]) -> None:
    m = miner()
    for headers in ({"x-death": "junk"}, {"x-death": [1, {"count": "x"}]},
                    {"x-death": [{"reason": "delivery_limit", "count": [], "queue": 3}]}):
        m.poison(b"[" * 3000, headers)
    assert m.broker.ready_count(m.names.poison_queue) == 0
    assert m.broker.unacked_count(m.names.poison_queue) == 0
    assert len(m.service.dead_letters.list()) == 3
    m.result(epoch=0)  # still serving results
    assert m.store.stats()["stale_results"] == 1


def test_a_result_that_fails_to_apply_is_parked_and_its_dead_letter_retries_the_sector(
        miner: Callable[..., Miner], monkeypatch: pytest.MonkeyPatch) -> None:
    m = miner()

    def broken(result: Result) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr(m.service, "apply", broken)
    m.result(epoch=1)
    m.deliver("poison")  # the service drains q.poison itself
    [dead] = m.service.dead_letters.list(M)
    assert (dead["reason"], dead["id"], dead["kind"]) == (Reason.HANDLER_ERROR, f"{AP}#1",
                                                          "result")
    assert m.sector()[:3] == (State.QUEUED, Phase.AP, 2)


def test_a_job_too_large_to_publish_fails_its_sector_with_the_reason(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner(params={"pieces": "x" * 40_000})
    client.set(names.epoch_key(AP, 1), 1)
    m.result(epoch=1, outputs={"commd": "y" * 30_000})
    state, phase, _, error = m.sector()
    assert (state, phase) == (State.FAILED, Phase.PC1)
    assert error is not None and "over the 65536-byte message limit" in error
    assert m.store.outbox_size() == 0


@pytest.mark.parametrize("finished_at", [1e308, float("inf"), float("nan"), -5.0])
def test_a_bogus_worker_timestamp_never_enters_the_shared_durations(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names], finished_at: float
        ) -> None:
    client, names = rds
    m = miner()
    client.set(names.epoch_key(AP, 1), 1)
    # Bypasses the strict decoder, as a decoder bug would.
    result = Result.model_construct(
        schema_version=1, job_id=AP, miner=M, sector=1, phase=Phase.AP, attempt=1,
        worker="w1", started_at=0.0, finished_at=finished_at, outcome=Outcome.OK,
        home=None, error_class=None, error=None, outputs={}, epoch=1)
    started = time.time()
    assert m.service.apply(result)
    for mean in m.service.durations.table().values():
        assert 0 <= mean <= time.time() - started + 1


def test_the_watchdog_flags_a_sector_without_progress_once(
        miner: Callable[..., Miner], caplog: pytest.LogCaptureFixture) -> None:
    m = miner(stall_floor=0.05)
    time.sleep(0.2)
    m.service.escalate()
    m.service.escalate()
    [row] = sector_rows(m.store)
    assert row["stalled"] and row["stalled_since"] <= time.time()
    assert m.store.stats()["stalled"] == 1
    assert sum("stalled" in r.message for r in caplog.records) == 1
