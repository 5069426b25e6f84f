"""Retention: sectors finished longer ago than SEALPOOL_MINER_RETENTION lose their record,
history and index entries, a bounded batch per round, counted; nothing else is touched."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest
import redis

from broker_topology.control import redis_now
from broker_topology.memory import MemoryBroker
from broker_topology.messages import SectorClass
from broker_topology.naming import MinerKey, Names
from broker_topology.settings import PoolSettings
from broker_topology.transport import Session, Transport
from miner_publisher import service as service_module
from miner_publisher.config import MinerSettings
from miner_publisher.pipeline import State
from miner_publisher.service import MinerService
from miner_publisher.store import FINISHED_INDEXED, SectorStore

from .test_miner_fixtures import rds

__all__ = ["rds"]
M = "t01000"
DAY = 86400.0


def service(client: redis.Redis, names: Names) -> MinerService:
    # Never started: retention needs no broker.
    broker = MemoryBroker()

    def transport(on_connect: Callable[[Session], None]) -> Transport:
        return broker.transport("miner", on_connect=on_connect)

    return MinerService(PoolSettings(namespace=names.namespace),
                        MinerSettings(retention=30 * DAY), M, client, transport=transport)


def finished(store: SectorStore, count: int, state: State = State.DONE) -> list[int]:
    now = time.time()
    out = []
    for rec in store.create(count, SectorClass.CC, 2048, now + DAY, {}, now):
        store.transition(rec, replace(rec.sector, state=state), now,
                         history={"phase": "fin", "outcome": "ok"})
        out.append(rec.sector.number)
    return out


def age(client: redis.Redis, names: Names, numbers: list[int], days: float) -> None:
    when = redis_now(client) - days * DAY
    client.zadd(names.miner_key(MinerKey.FINISHED, M), {str(n): when for n in numbers})


def test_sectors_finished_before_the_retention_are_forgotten_and_counted(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    svc = service(client, names)
    store = svc.store
    old = finished(store, 1) + finished(store, 1, State.FAILED)
    recent = finished(store, 1)
    age(client, names, old, 31)
    age(client, names, recent, 29)
    assert svc.retain() == 2
    assert store.numbers() == recent
    assert all(store.get(n) is None and store.history(n) == [] for n in old)
    assert store.history(recent[0]) != [] and store.stats()["trimmed"] == 2
    assert svc.retain() == 0


def test_a_round_trims_a_bounded_batch(rds: tuple[redis.Redis, Names],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    client, names = rds
    svc = service(client, names)
    old = finished(svc.store, 3)
    age(client, names, old, 40)
    monkeypatch.setattr(service_module, "RETAIN_BATCH", 2)
    assert [svc.retain(), svc.retain(), svc.retain()] == [2, 1, 0]


def test_a_sector_requeued_since_it_failed_is_kept(rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    svc = service(client, names)
    [n] = finished(svc.store, 1, State.FAILED)
    age(client, names, [n], 40)
    client.hset(names.miner_key(MinerKey.SECTOR, M, n), "state", "queued")  # a racing requeue
    assert svc.retain() == 0 and svc.store.get(n) is not None


def test_sectors_finished_before_the_index_existed_are_indexed_once_then_trimmed(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    svc = service(client, names)
    [n] = finished(svc.store, 1)
    client.delete(names.miner_key(MinerKey.FINISHED, M))  # written by an older version
    client.hset(names.miner_key(MinerKey.SECTOR, M, n), "updated_at",
                repr(redis_now(client) - 60 * DAY))
    assert svc.retain() == 1 and svc.store.get(n) is None
    assert client.hget(names.miner_key(MinerKey.STATS, M), FINISHED_INDEXED) == "1"
