"""The worker registry index and the one clock: beats stamped with Redis TIME, readers going
through the index (no keyspace scan), pruning of long-gone members, and shares and
staleness unchanged by a host clock that is off."""

from __future__ import annotations

import time
from typing import cast

import pytest
import redis

from broker_topology.control import (
    REGISTRY_TTL_S,
    SlotStatus,
    SlotView,
    WorkerStatus,
    read_index,
    read_registry,
    redis_now,
)
from broker_topology.messages import Phase
from broker_topology.naming import Names
from miner_publisher.fairness import Fairness
from miner_publisher.workers import members, registry
from pool_worker.keeper import Keeper
from pool_worker.leases import Leases

from .test_miner_fixtures import rds

__all__ = ["rds"]
REAL_TIME = time.time
SLOT = SlotView(index=0, phases=(Phase.PC1,), configured_phases=(Phase.PC1,),
                temp_dir="/tmp/x", state=SlotStatus.IDLE)


class _Alive:
    """The one thing a beat asks of the leases."""

    def alive(self, ttl_s: float) -> None:
        pass


def status(name: str, slots: int = 1) -> WorkerStatus:
    return WorkerStatus(name=name, instance="ab12", host="h", address="10.0.0.1", pid=1,
                        started_at=1.7e9, at=time.time(), heartbeat_interval=1.0,
                        phases=(Phase.PC1,), sector_sizes=(2048,), slots=(SLOT,) * slots)


def keeper(client: redis.Redis, names: Names, name: str) -> Keeper:
    return Keeper(client, names, name, cast(Leases, _Alive()), [], lambda: status(name),
                  lease_ttl=30.0, heartbeat_interval=1.0)


def host_clock_off(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + seconds)


def test_a_beat_is_stamped_with_the_redis_clock_in_the_entry_and_the_index(
        rds: tuple[redis.Redis, Names], monkeypatch: pytest.MonkeyPatch) -> None:
    client, names = rds
    host_clock_off(monkeypatch, -20)  # the worker's host is 20 s behind
    keeper(client, names, "w1").beat()
    now = redis_now(client)
    [m] = read_index(client, names)
    assert m.name == "w1" and m.status is not None
    assert abs(m.last_beat - now) < 1 and m.status.at == m.last_beat
    assert not m.status.stale(now)  # 20 s behind would be stale after 3 beats of 1 s


def test_readers_go_through_the_index_and_keep_a_cleanly_stopped_worker_by_its_beat(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    keeper(client, names, "w1").beat()
    keeper(client, names, "w2").beat()
    client.delete(names.worker_key("w2"))  # a clean stop removes the entry only
    client.set(names.worker_key("stray"), status("stray").to_bytes())  # not in the index
    assert [w.name for w in registry(client, names)] == ["w1"]
    assert [w.name for w in read_registry(client, names)] == ["w1"]
    got = {m.name: m.status for m in members(client, names)}
    assert set(got) == {"w1", "w2"} and got["w2"] is None


def test_a_beat_prunes_index_members_gone_longer_than_the_registry_ttl(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    old = redis_now(client) - REGISTRY_TTL_S - 60
    client.zadd(names.registry_index, {"gone": old, "slow": old})
    client.set(names.worker_key("slow"), status("slow").to_bytes())  # its entry lives on
    keeper(client, names, "w1").beat()
    assert [m.name for m in read_index(client, names)] == ["slow", "w1"]


def test_a_miner_behind_keeps_its_share_and_a_worker_behind_still_counts(
        rds: tuple[redis.Redis, Names], monkeypatch: pytest.MonkeyPatch) -> None:
    client, names = rds
    host_clock_off(monkeypatch, -20)
    keeper(client, names, "w1").beat()  # 2 slots, its host 20 s behind
    client.set(names.worker_key("w1"), status("w1", slots=2).model_copy(
        update={"at": redis_now(client)}).to_bytes())
    behind = Fairness(client, names, "t01000", 1.0, 2)
    assert behind.target(100) == 4  # alone: 2 live slots x depth 2
    host_clock_off(monkeypatch, +20)  # the other miner's host is 20 s ahead
    ahead = Fairness(client, names, "t01001", 1.0, 2)
    assert ahead.pool_slots() == 2  # the worker is not stale for it
    assert ahead.target(100) == 2  # the miner behind is not stale either: half each
