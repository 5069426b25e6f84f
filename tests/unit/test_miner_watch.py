"""Escalation through the watch index: a transition makes a sector due, a round reads only
the due ones and scores each by when it next needs a look (its escalation time), and slack
is written only when it changes meaningfully."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from broker_topology.control import redis_now
from broker_topology.naming import MinerKey, Names
from miner_publisher.queries import sector_rows
from miner_publisher.store import Record
from miner_publisher.watch import RECHECK_S

from .test_miner_fixtures import rds
from .test_miner_service import M, Miner, miner

__all__ = ["miner", "rds"]


def score(client: redis.Redis, names: Names) -> float | None:
    return client.zscore(names.miner_key(MinerKey.WATCH, M), "1")


def set_deadline(m: Miner, client: redis.Redis, in_s: float) -> float:
    """Move sector 1's deadline to `in_s` from now (Redis clock) and make it due."""
    deadline = redis_now(client) + in_s
    client.hset(m.names.miner_key(MinerKey.SECTOR, M, 1), "deadline", repr(deadline))
    client.zadd(m.names.miner_key(MinerKey.WATCH, M), {"1": 0})
    return deadline


def test_a_transition_makes_the_sector_due_and_a_round_scores_it_for_later(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, names = rds
    m = miner()  # admitted: its ap job is out
    admitted = score(client, names)
    assert admitted is not None and admitted <= redis_now(client)
    m.service.escalate()
    later = score(client, names)
    assert later is not None and later > redis_now(client) + RECHECK_S - 5
    reads: list[int] = []
    get = m.store.get

    def counting(number: int) -> Record | None:
        reads.append(number)
        return get(number)

    monkeypatch.setattr(m.store, "get", counting)
    m.service.escalate()
    assert reads == []  # not due: not read at all


def test_the_sector_is_escalated_when_its_slack_crosses_the_threshold(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner(escalate_slack=100)
    deadline = set_deadline(m, client, 101.5)  # 2KiB: almost no work left
    m.service.escalate()
    rec = m.store.get(1)
    assert rec is not None and rec.escalated == 0
    due = score(client, names)
    assert due is not None and abs(due - (deadline - 100)) < 0.5  # its crossing time
    time.sleep(max(0.0, due - redis_now(client)) + 0.1)
    m.service.escalate()
    rec = m.store.get(1)
    assert rec is not None and rec.escalated == rec.sector.attempt
    assert m.store.stats()["escalated"] == 1


def test_slack_is_written_when_it_changes_meaningfully_and_carried_forward_in_status(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner()
    deadline = set_deadline(m, client, 5000)
    m.service.escalate()
    first = m.store.get(1)
    assert first is not None and first.slack is not None and first.slack_at is not None
    time.sleep(1.5)
    client.zadd(names.miner_key(MinerKey.WATCH, M), {"1": 0})
    m.service.escalate()
    second = m.store.get(1)
    assert second is not None and (second.slack, second.slack_at) == (first.slack,
                                                                      first.slack_at)
    [row] = sector_rows(m.store)
    assert abs(row["slack_s"] - (deadline - redis_now(client))) < 1
    set_deadline(m, client, 500)  # 4500 s less: meaningful
    m.service.escalate()
    third = m.store.get(1)
    assert third is not None and third.slack is not None and third.slack < 600
