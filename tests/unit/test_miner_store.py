"""The miner's Redis scripts on the real Redis: fencing inside the transition, outbox
claims on the Redis clock, escalation as a compare-and-set, numbers never reused."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import redis

from broker_topology.messages import Phase, SectorClass, job_id
from broker_topology.naming import MinerKey, Names
from miner_publisher.durable import RedisWiped
from miner_publisher.pipeline import State, enter
from miner_publisher.publisher import build_job
from miner_publisher.store import Cas, Envelope, Record, SectorStore

from .test_miner_fixtures import rds

__all__ = ["rds"]
M = "t01000"


def queued(store: SectorStore, n: int = 1) -> list[Record]:
    """`n` sectors queued at ap attempt 1, their jobs in the outbox (written by `store`)."""
    now = time.time()
    out = []
    for rec in store.create(n, SectorClass.DEAL, 2048, now + 3600, {}, now):
        after = enter(rec.sector, Phase.AP, state=State.QUEUED)
        env = Envelope(build_job(rec, after, now), 0.0, False, now)
        assert store.transition(rec, after, now, envelope=env)
        got = store.get(rec.sector.number)
        assert got is not None
        out.append(got)
    return out


def ap_done(rec: Record) -> Record:
    return replace(rec, sector=replace(rec.sector, phase=Phase.PC1, attempt=1))


def test_a_result_applies_only_under_the_current_lease_epoch(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    store = SectorStore(client, names, M)
    [rec] = queued(store)
    epoch_key = names.epoch_key(job_id(M, 1, Phase.AP), 1)
    after = enter(rec.sector, Phase.PC1)
    # No lease was ever granted: nothing can be current.
    assert store.cas(rec, after, time.time(), epoch=1) is Cas.STALE_EPOCH
    client.set(epoch_key, 2)  # a worker took the attempt over (epoch 2)
    assert store.cas(rec, after, time.time(), epoch=1) is Cas.STALE_EPOCH
    got = store.get(1)
    assert got is not None and got.sector.phase is Phase.AP  # the frozen worker's is dropped
    assert store.cas(rec, after, time.time(), epoch=2) is Cas.APPLIED
    got = store.get(1)
    assert got is not None and got.sector.phase is Phase.PC1


def test_the_sweep_never_takes_an_entry_another_instance_is_publishing(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    a = SectorStore(client, names, M, instance="a", grace_s=0.2, claim_s=0.6)
    b = SectorStore(client, names, M, instance="b", grace_s=0.2, claim_s=0.6)
    [rec] = queued(a)
    [(_, env)] = a._entries()
    # The writer's grace is judged on the Redis clock, not the entry's (local) written_at.
    assert env.written_at < time.time() + 1
    assert b.outbox_stale() == []
    assert a.claim(env) == 1  # a starts publishing (slowly: a reconnect)
    time.sleep(0.3)
    assert b.outbox_stale() == [], "b republished an entry a is publishing"
    assert a.claim(env) == 1  # a renews while it waits for the broker
    time.sleep(0.3)
    assert b.outbox_stale() == []
    time.sleep(0.7)  # a died: its claim runs out, and then b takes the entry
    assert [e.key for e in b.outbox_stale()] == [env.key]
    assert a.claim(env) == -1  # and a, back from the dead, no longer publishes it
    b.outbox_done(env)
    assert a.outbox_size() == 0 and rec.sector.number in [int(n) for n in client.smembers(
        names.miner_key(MinerKey.PUBLISHED, M))]


def test_an_entry_whose_clock_is_far_behind_is_not_swept_early(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    a = SectorStore(client, names, M, instance="a", grace_s=5)
    b = SectorStore(client, names, M, instance="b", grace_s=5)
    queued(a)
    # A writer whose clock is an hour behind: its written_at looks ancient to b.
    [(key, env)] = a._entries()
    old = Envelope(env.job, 0.0, False, time.time() - 3600)
    client.hset(names.miner_key(MinerKey.OUTBOX, M), key, old.encode())
    assert b.outbox_stale() == []


def test_two_instances_escalating_one_sector_send_one_urgent_copy(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    a = SectorStore(client, names, M, instance="a")
    b = SectorStore(client, names, M, instance="b")
    [rec] = queued(a)
    now = time.time()
    urgent = Envelope(build_job(rec, rec.sector, now), 0.0, True, now)
    assert [a.escalate(rec, urgent), b.escalate(rec, urgent)] == [True, False]
    got = a.get(1)
    assert got is not None and got.escalated == 1
    assert b.claim(urgent) == -1  # a publishes it


def test_numbers_are_allocated_above_the_high_water_mark_and_only_on_the_known_dataset(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds

    class Guard:
        generation = "g1"
        high_water = 40
        last = 0

        def allocated(self, last: int) -> None:
            self.last = last

    guard = Guard()
    client.set(names.generation_key, "g1")
    store = SectorStore(client, names, M, guard=guard)
    now = time.time()
    assert [r.sector.number for r in store.create(2, SectorClass.CC, 2048, now, {}, now)] \
        == [41, 42]
    assert guard.last == 42
    client.delete(names.generation_key)  # Redis wiped under us
    with pytest.raises(RedisWiped, match="recover"):
        store.create(1, SectorClass.CC, 2048, now, {}, now)
    assert store.numbers() == [41, 42]
