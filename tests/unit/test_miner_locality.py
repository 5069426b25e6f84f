"""Bounded locality: a sector never waits for a gone home for ever. The pure decision
(rounds, time since the last beat, what a restart can rebuild), and the miner service
acting on it, from a needs_data result and from its periodic watch."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from broker_topology.control import redis_now
from broker_topology.messages import ErrorClass, Outcome, Phase, Result, job_id
from broker_topology.naming import MinerKey, Names
from miner_publisher.config import MinerSettings
from miner_publisher.pipeline import HomeCheck, Sector, State, on_result

from .test_miner_fixtures import rds
from .test_miner_service import M, Miner, miner

__all__ = ["miner", "rds"]
CFG = MinerSettings(home_gone_after=600, home_rounds=3, home_wait=5)
ALIVE = HomeCheck(last_seen=1000.0, alive=True)


def needs_data(s: Sector) -> Result:
    return Result(job_id=job_id(s.miner, s.number, s.phase), miner=s.miner, sector=s.number,
                  phase=s.phase, attempt=s.attempt, worker="w2", started_at=1.0,
                  finished_at=2.0, outcome=Outcome.ERROR, error_class=ErrorClass.NEEDS_DATA,
                  error="no files", epoch=1)


def at_pc2() -> Sector:
    return Sector("t01000", 1, State.QUEUED, Phase.PC2, 1, home="w1",
                  attempts={"ap": 1, "pc1": 1, "pc2": 1})


def test_a_live_home_that_never_takes_the_job_is_given_up_after_the_rounds() -> None:
    s = at_pc2()
    for n in (1, 2):
        t = on_result(s, needs_data(s), CFG, 1000.0 + n, home=ALIVE)
        assert t.sector.state is State.QUEUED and t.sector.phase is Phase.PC2
        assert t.sector.home_rounds == n and t.dispatch_after == 5
        s = t.sector
    t = on_result(s, needs_data(s), CFG, 1003.0, home=ALIVE)
    assert (t.sector.phase, t.sector.attempt, t.sector.home) == (Phase.AP, 2, None)
    assert t.dispatch_after == 0.0 and t.sector.home_rounds == 0
    assert t.note is not None and "did not take the job in 3 rounds" in t.note


def test_a_home_without_a_beat_for_the_configured_time_is_given_up_at_once() -> None:
    s = at_pc2()
    t = on_result(s, needs_data(s), CFG, 2000.0, home=HomeCheck(1300.0, alive=False))
    assert t.sector.phase is Phase.AP and t.sector.state is State.QUEUED
    assert "no heartbeat for 700s" in (t.note or "") and "restarted at ap" in (t.sector.error
                                                                               or "")


def test_a_home_the_registry_does_not_know_counts_from_the_first_round() -> None:
    s = at_pc2()
    unknown = HomeCheck(None, alive=False)
    t = on_result(s, needs_data(s), CFG, 1000.0, home=unknown)
    assert t.sector.phase is Phase.PC2 and t.sector.home_lost_at == 1000.0
    t = on_result(t.sector, needs_data(t.sector), CFG, 1600.0, home=unknown)
    assert t.sector.phase is Phase.AP and "not in the registry for 600s" in (t.note or "")


def test_a_deal_without_unsealed_data_fails_saying_why_and_ap_never_loops() -> None:
    s = at_pc2()
    gone = HomeCheck(1000.0, alive=False, no_restart="a deal without unsealed data")
    t = on_result(s, needs_data(s), CFG, 5000.0, home=gone)
    assert t.sector.state is State.FAILED and t.dispatch_after is None
    assert "home w1 gone" in (t.sector.error or "")
    assert "a deal without unsealed data" in (t.sector.error or "")
    ap = Sector("t01000", 1, State.QUEUED, Phase.AP, 1, attempts={"ap": 1})
    for _ in range(CFG.home_rounds):
        t = on_result(ap, needs_data(ap), CFG, 1.0, home=None)
        ap = t.sector
    assert ap.state is State.FAILED and "ap itself found no data" in (ap.error or "")


def test_the_restart_policy_still_restarts_at_the_first_round() -> None:
    cfg = MinerSettings(locality_recovery="restart", home_rounds=6)
    s = at_pc2()
    t = on_result(s, needs_data(s), cfg, 1000.0, home=ALIVE)
    assert t.sector.phase is Phase.AP and "home w1 lost" in (t.sector.error or "")


# -- the service -------------------------------------------------------------------------
def to_pc2(m: Miner, client: redis.Redis, names: Names) -> None:
    """Run the test miner's sector 1 through ap and pc1 on worker w1 (its home)."""
    for phase in (Phase.AP, Phase.PC1):
        client.set(names.epoch_key(job_id(M, 1, phase), 1), 1)
        m.result(epoch=1, phase=phase, worker="w1")
    assert m.sector()[:2] == (State.QUEUED, Phase.PC2)


def home_last_beat(client: redis.Redis, names: Names, ago: float) -> None:
    client.zadd(names.registry_index, {"w1": redis_now(client) - ago})


def test_a_needs_data_result_restarts_a_deal_with_unsealed_data_when_its_home_is_gone(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner(params={"unsealed_path": "/data/unsealed-1"}, home_gone_after=60)
    to_pc2(m, client, names)
    home_last_beat(client, names, 120)  # stopped cleanly: no entry, its last beat
    client.set(names.epoch_key(job_id(M, 1, Phase.PC2), 1), 1)
    m.result(epoch=1, phase=Phase.PC2, worker="w2", outcome="error",
             error_class="needs_data", error="no files")
    state, phase, attempt, error = m.sector()
    assert (state, phase, attempt) == (State.QUEUED, Phase.AP, 2)
    assert "home w1 gone: no heartbeat for 12" in (error or "")
    last = m.store.history(1)[-1]
    assert last["error_class"] == "needs_data" and "restarted at ap" in last["note"]


def test_the_watch_gives_a_gone_home_up_without_waiting_for_a_round(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner(home_gone_after=60)  # a deal without unsealed data: it fails, saying why
    to_pc2(m, client, names)
    home_last_beat(client, names, 30)
    m.service.escalate()
    assert m.sector()[0] is State.QUEUED  # gone for 30 s of 60: not yet
    home_last_beat(client, names, 90)
    client.zadd(names.miner_key(MinerKey.WATCH, M), {"1": 0})  # due now
    m.service.escalate()
    state, _, _, error = m.sector()
    assert state is State.FAILED and "without unsealed data" in (error or "")
    assert m.store.history(1)[-1]["outcome"] == "home_gone"
    assert m.store.stats()["homes_given_up"] == 1


def test_the_watch_leaves_a_sector_whose_home_beats(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner(home_gone_after=60, params={"unsealed_path": "/u"})
    to_pc2(m, client, names)
    home_last_beat(client, names, 3600)
    home_last_beat(client, names, 0)  # entry-less, but it beat just now: not gone
    m.service.escalate()
    assert m.sector()[:2] == (State.QUEUED, Phase.PC2)



def test_the_watch_never_gives_up_a_home_the_registry_does_not_know_before_a_round(
        miner: Callable[..., Miner], rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    m = miner(home_gone_after=0.5, params={"unsealed_path": "/u"})
    to_pc2(m, client, names)  # w1 never beat: a group whose members all stopped cleanly
    time.sleep(0.7)
    m.service.escalate()
    assert m.sector()[:2] == (State.QUEUED, Phase.PC2)
