"""Durable state: a Redis that persists nothing is refused, a wiped one is detected, and
sector numbers are never reused, even across a wipe."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from broker_topology.messages import SectorClass
from broker_topology.naming import Names
from miner_publisher.durable import Durable, RedisWiped, VolatileRedis, check_persistence
from miner_publisher.store import SectorStore

from .test_miner_fixtures import rds

__all__ = ["rds"]
M = "t01000"


class FakeConfig:
    """What CONFIG GET / INFO answer (or that CONFIG is refused)."""

    def __init__(self, appendonly: str = "no", save: str = "", refused: bool = False,
                 aof_enabled: int = 0) -> None:
        self.values = {"appendonly": appendonly, "save": save}
        self.refused = refused
        self.aof_enabled = aof_enabled

    def config_get(self, name: str) -> dict[str, str]:
        if self.refused:
            raise redis.ResponseError("unknown command 'CONFIG'")
        return {name: self.values[name]}

    def info(self, section: str) -> dict[str, Any]:
        return {"aof_enabled": self.aof_enabled}


def persists(fake: FakeConfig, allow: bool = False) -> str:
    return check_persistence(cast(redis.Redis, fake), allow)


def test_a_redis_that_persists_nothing_is_refused_unless_allowed() -> None:
    with pytest.raises(VolatileRedis, match=r"persists nothing.*--allow-volatile-redis"):
        persists(FakeConfig())
    assert "not checked" in persists(FakeConfig(), allow=True)
    assert persists(FakeConfig(appendonly="yes")) == "AOF"
    assert "RDB" in persists(FakeConfig(save="3600 1"))


def test_without_config_get_aof_is_read_from_info_and_otherwise_refused() -> None:
    assert persists(FakeConfig(refused=True, aof_enabled=1)) == "AOF"
    with pytest.raises(VolatileRedis, match="CONFIG GET refused"):
        persists(FakeConfig(refused=True))


def test_a_wiped_redis_is_detected_and_recover_numbers_above_the_old_sectors(
        rds: tuple[redis.Redis, Names], tmp_path: Path) -> None:
    client, names = rds
    durable = Durable.for_miner(client, names, M, tmp_path).open()
    store = SectorStore(client, names, M, guard=durable)
    now = time.time()
    store.create(3, SectorClass.CC, 2048, now, {}, now)
    assert durable.path.exists()
    durable.check()  # the same dataset: nothing to say
    # Redis restarts without persistence: everything is gone.
    for key in client.scan_iter(match=f"{names.namespace}:*"):
        client.delete(key)
    with pytest.raises(RedisWiped, match="no generation marker"):
        durable.check()
    with pytest.raises(RedisWiped, match=r"recover --miner t01000"):
        Durable.for_miner(client, names, M, tmp_path).open()  # a fresh run or enqueue
    with pytest.raises(RedisWiped):
        store.create(1, SectorClass.CC, 2048, now, {}, now)  # never numbers it 1 again
    generation, last = Durable.for_miner(client, names, M, tmp_path).recover()
    assert generation != durable.generation and last == 3
    fresh = Durable.for_miner(client, names, M, tmp_path).open()
    again = SectorStore(client, names, M, guard=fresh).create(1, SectorClass.CC, 2048, now,
                                                              {}, now)
    assert [r.sector.number for r in again] == [4]
    _, last = Durable.for_miner(client, names, M, tmp_path).recover(next_sector=100)
    assert last == 99


def test_a_marker_another_host_recreated_is_refused_too(
        rds: tuple[redis.Redis, Names], tmp_path: Path) -> None:
    client, names = rds
    Durable.for_miner(client, names, M, tmp_path).open()
    client.set(names.generation_key, "someone-else")
    with pytest.raises(RedisWiped, match="has generation someone-else"):
        Durable.for_miner(client, names, M, tmp_path).open()


def test_a_damaged_state_file_is_one_line_naming_the_file(
        rds: tuple[redis.Redis, Names], tmp_path: Path) -> None:
    client, names = rds
    durable = Durable.for_miner(client, names, M, tmp_path)
    durable.path.parent.mkdir(parents=True)
    durable.path.write_text('{"generation": 7}')
    with pytest.raises(RedisWiped, match=f"state file {durable.path}: not a sealpool"):
        durable.open()
