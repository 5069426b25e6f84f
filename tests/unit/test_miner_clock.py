"""One clock for the miner: chain due times and escalation follow Redis TIME, whatever the
host's own clock says."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from broker_topology.control import redis_now
from broker_topology.messages import Phase, job_id
from broker_topology.naming import MinerKey, Names

from .test_miner_fixtures import rds
from .test_miner_service import M, Miner, miner

__all__ = ["miner", "rds"]
REAL_TIME = time.time


def test_a_chain_wait_is_due_on_the_redis_clock_when_the_host_runs_ahead(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, names = rds
    m = miner(chain_precommit=5)
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + 3600)
    for phase in (Phase.AP, Phase.PC1, Phase.PC2):
        client.set(names.epoch_key(job_id(M, 1, phase), 1), 1)
        m.result(epoch=1, phase=phase)
    due = client.zscore(names.miner_key(MinerKey.DUE, M), "1")
    assert due is not None and abs(due - (redis_now(client) + 5)) < 2


def test_a_host_ahead_does_not_escalate_a_sector_with_slack_on_the_redis_clock(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, names = rds
    m = miner(escalate_slack=3600)
    client.hset(names.miner_key(MinerKey.SECTOR, M, 1), "deadline",
                repr(redis_now(client) + 2 * 3600))
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + 5400)  # 1.5 h ahead
    m.service.escalate()
    rec = m.store.get(1)
    assert rec is not None and rec.escalated == 0 and not rec.at_risk
    assert rec.slack is not None and rec.slack > 3600
