from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from broker_topology import ErrorClass, Outcome, Phase, Result
from miner_publisher.config import MinerSettings
from miner_publisher.pipeline import (
    Sector,
    State,
    Transition,
    backoff,
    enter,
    is_current,
    on_chain_due,
    on_result,
)

CFG = MinerSettings()


def result(sector: Sector, outcome: Outcome = Outcome.OK, error_class: ErrorClass | None = None,
           worker: str = "w1", phase: Phase | None = None, attempt: int | None = None) -> Result:
    phase = phase or sector.phase
    return Result(job_id=f"{sector.miner}/{sector.number}/{phase}", miner=sector.miner,
                  sector=sector.number, phase=phase, attempt=attempt or sector.attempt,
                  worker=worker, started_at=1.0, finished_at=2.0, outcome=outcome,
                  error_class=error_class, error="boom" if error_class else None)


def fresh() -> Sector:
    return Sector("t01000", 1, State.QUEUED, Phase.AP, 1)


def test_happy_path_visits_every_phase_and_keeps_home_from_ap() -> None:
    s, seen = fresh(), []
    while s.state is not State.DONE:
        seen.append(s.phase)
        t = on_result(s, result(s, worker="w-ap" if s.phase is Phase.AP else "other"), CFG, 0.0)
        assert t.dispatch_after == (None if t.sector.state is State.DONE else 0.0)
        s = t.sector
    assert seen == [Phase.AP, Phase.PC1, Phase.PC2, Phase.C1, Phase.C2, Phase.FIN]
    assert s.home == "w-ap"


def test_chain_steps_wait_when_the_chain_is_slow() -> None:
    cfg = MinerSettings(chain_precommit=5, chain_seed=10, chain_commit=3)
    s = Sector("t01000", 1, State.QUEUED, Phase.PC2, 1, home="w1")
    t = on_result(s, result(s), cfg, 100.0)
    assert (t.sector.state, t.sector.chain_step, t.sector.due_at) == (State.CHAIN, "precommit",
                                                                      115.0)
    assert t.dispatch_after is None
    nxt = on_chain_due(t.sector)
    assert (nxt.sector.state, nxt.sector.phase, nxt.sector.attempt) == (State.QUEUED, Phase.C1, 1)
    c2 = Sector("t01000", 1, State.QUEUED, Phase.C2, 2, home="w1")
    t = on_result(c2, result(c2), cfg, 100.0)
    assert (t.sector.chain_step, t.sector.due_at) == ("commit", 103.0)
    assert on_chain_due(t.sector).sector.phase is Phase.FIN


def test_temporary_errors_retry_with_backoff_until_the_limit() -> None:
    cfg = MinerSettings(max_attempts={p: 3 for p in Phase}, retry_base=10)
    s = Sector("t01000", 1, State.QUEUED, Phase.PC1, 1, home="w1")
    delays: list[float] = []
    while True:
        t: Transition = on_result(s, result(s, Outcome.ERROR, ErrorClass.TEMPORARY), cfg, 0.0,
                                  random.Random(1))
        if t.sector.state is State.FAILED:
            break
        assert t.sector.attempt == s.attempt + 1 and t.sector.phase is Phase.PC1
        assert t.dispatch_after is not None
        delays.append(t.dispatch_after)
        s = t.sector
    assert s.attempt == 3 and "after 3 attempts" in (t.sector.error or "")
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20


def test_permanent_and_crash_fail_at_once_with_reason() -> None:
    s = Sector("t01000", 1, State.QUEUED, Phase.C2, 1)
    for cls in (ErrorClass.PERMANENT, ErrorClass.CRASH):
        t = on_result(s, result(s, Outcome.ERROR, cls), CFG, 0.0)
        assert t.sector.state is State.FAILED and t.dispatch_after is None
        assert cls.value in (t.sector.error or "")


def test_needs_data_waits_for_home_without_using_attempts() -> None:
    cfg = MinerSettings(locality_recovery="wait", home_wait=30, max_attempts={p: 1 for p in Phase})
    s = Sector("t01000", 1, State.QUEUED, Phase.PC2, 1, home="w1", attempts={"pc2": 1})
    for _ in range(3):
        t = on_result(s, result(s, Outcome.ERROR, ErrorClass.NEEDS_DATA, worker="w2"), cfg, 0.0)
        assert t.sector.state is State.QUEUED and t.sector.home == "w1"
        assert t.dispatch_after == 30 and t.sector.tries == 1
        assert t.sector.attempt == s.attempt + 1
        s = t.sector


def test_needs_data_restart_policy_starts_over_at_ap_anywhere() -> None:
    cfg = MinerSettings(locality_recovery="restart")
    s = Sector("t01000", 1, State.QUEUED, Phase.PC2, 1, home="w1",
               attempts={"ap": 1, "pc1": 1, "pc2": 1})
    t = on_result(s, result(s, Outcome.ERROR, ErrorClass.NEEDS_DATA, worker="w2"), cfg, 0.0)
    assert (t.sector.phase, t.sector.attempt, t.sector.home) == (Phase.AP, 2, None)
    assert t.dispatch_after == 0.0 and "restarted at ap" in (t.sector.error or "")


def test_only_the_current_attempt_counts() -> None:
    s = Sector("t01000", 1, State.QUEUED, Phase.PC2, 2)
    assert is_current(s, result(s))
    assert not is_current(s, result(s, attempt=1))
    assert not is_current(s, result(s, phase=Phase.PC1))
    done = Sector("t01000", 1, State.DONE, Phase.FIN, 1)
    assert not is_current(done, result(done))


@given(st.integers(1, 40), st.floats(0.1, 100), st.floats(1, 10_000))
def test_backoff_is_bounded_and_grows(attempt: int, base: float, cap: float) -> None:
    cfg = MinerSettings(retry_base=base, retry_cap=cap)
    d = backoff(attempt, cfg, random.Random(attempt))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= d <= ceiling


def test_attempt_numbers_are_never_reused_and_limits_count_per_run() -> None:
    cfg = MinerSettings(max_attempts={p: 2 for p in Phase})
    s = Sector("t01000", 1, State.QUEUED, Phase.PC2, 1, home="w1", attempts={"pc2": 1})
    s = on_result(s, result(s, Outcome.ERROR, ErrorClass.TEMPORARY), cfg, 0.0).sector
    assert (s.attempt, s.attempts["pc2"]) == (2, 2)
    failed = on_result(s, result(s, Outcome.ERROR, ErrorClass.TEMPORARY), cfg, 0.0).sector
    assert failed.state is State.FAILED
    # a replay of the phase starts at a fresh attempt and gets the full limit again
    again = enter(failed, Phase.PC2, state=State.QUEUED, error=None)
    assert (again.attempt, again.base_attempt, again.tries) == (3, 3, 1)
    retry = on_result(again, result(again, Outcome.ERROR, ErrorClass.TEMPORARY), cfg, 0.0)
    assert retry.sector.state is State.QUEUED and retry.sector.attempt == 4
    # and the phases after it continue past the attempts they already used
    ok = on_result(retry.sector, result(retry.sector), cfg, 0.0).sector
    assert ok.phase is Phase.C1 and ok.attempt == 1
    rerun_c1 = enter(replace(ok, attempts={**ok.attempts, "c1": 1}), Phase.C1)
    assert rerun_c1.attempt == 2


def test_pool_level_pledges_only_without_deals_and_with_room_downstream() -> None:
    from miner_publisher.pledge import Level, to_pledge

    cfg = MinerSettings(pledge_target=4, pledge_max_downstream=3)
    assert to_pledge(Level(pending_deals=0, early=1, downstream=0), cfg) == 3
    assert to_pledge(Level(pending_deals=2, early=1, downstream=0), cfg) == 0
    assert to_pledge(Level(pending_deals=0, early=1, downstream=3), cfg) == 0
    assert to_pledge(Level(pending_deals=0, early=6, downstream=0), cfg) == 0
    assert to_pledge(Level(0, 0, 0), MinerSettings()) == 0  # off by default
