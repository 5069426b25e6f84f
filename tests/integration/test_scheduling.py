"""How jobs are chosen: classes, aging, deadlines, locality recovery, fair shares."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from broker_topology import PIPELINE, Lane, Phase

from .conftest import MakePool, Pool
from .test_failures import assert_each_phase_accepted_once

pytestmark = pytest.mark.integration


def starts(rows: list[dict[str, Any]], phase: str) -> dict[int, float]:
    """sector -> when its (accepted) `phase` started."""
    return {r["sector"]: h["started_at"] for r in rows for h in r["history"]
            if h["phase"] == phase and h["outcome"] == "ok"}


def test_deal_pc1_runs_before_waiting_cc_pc1(pool: Pool) -> None:
    # Given CC sectors, then deal sectors, enqueued while the only worker is not up yet
    # (all admitted: this checks the queues' order, not the miner's share)
    pool.miner("t01000", env={"SEALPOOL_MINER_POOL_DEPTH": "20"})
    cc = pool.enqueue("t01000", 3, "cc")
    deal = pool.enqueue("t01000", 3, "deal")
    # When one worker with one slot starts
    pool.worker("solo", slots=1, simulate=0.05)
    rows = pool.wait_finished(["t01000"], timeout=90)
    assert_each_phase_accepted_once(rows)
    # Then every deal pc1 started before any CC pc1
    pc1 = starts(rows, "pc1")
    assert max(pc1[n] for n in deal) < min(pc1[n] for n in cc)


def test_aged_cc_overtakes_newer_deals(make_pool: MakePool) -> None:
    pool: Pool = make_pool(aging_cc=2)
    deep = {"SEALPOOL_MINER_POOL_DEPTH": "20"}  # admit everything: the queues decide
    pool.miner("t01000", env=deep)
    cc = pool.enqueue("t01000", 3, "cc")
    time.sleep(3.5)  # older than the CC aging window: the broker moved them to urgent
    deal = pool.enqueue("t01000", 3, "deal")
    pool.worker("solo", slots=1, simulate=0.05)
    rows = pool.wait_finished(["t01000"], timeout=90)
    ap = starts(rows, "ap")
    assert max(ap[n] for n in cc) < min(ap[n] for n in deal)


def test_tight_deadline_is_escalated_and_overtakes(pool: Pool) -> None:
    pool.miner("t01000")
    pool.worker("solo", slots=1, simulate=0.25)
    earlier = pool.enqueue("t01000", 4, "cc") + pool.enqueue("t01000", 2, "deal")
    pool.wait_for("work started", lambda: any(
        r["history"] for r in pool.rows("t01000")), 30)
    tight = pool.enqueue("t01000", 1, "deal", "--deadline", "90s")[0]
    t_tight = time.time() + 0.3  # its ap is queued (urgent) by now; a claim may be in flight
    rows = pool.wait_finished(["t01000"], timeout=120)
    by = {r["sector"]: r for r in rows}
    assert by[tight]["escalated"] is True
    ap = starts(rows, "ap")
    waiting = [n for n in earlier if ap[n] > t_tight]
    assert waiting, "the test needs sectors that had not started when the tight one came"
    assert all(ap[tight] < ap[n] for n in waiting)
    # and it stays ahead of them in every phase, finishing first. (Work-conserving: while
    # its next job is on its way from the miner, the free slot may start one of theirs, so
    # their phases interleave with its own; they never overtake it.)
    for phase in PIPELINE:
        at = starts(rows, phase.value)
        assert all(at[tight] < at[n] for n in waiting), phase


def test_impossible_deadline_is_reported(pool: Pool) -> None:
    pool.miner("t01000", env={"SEALPOOL_MINER_CHAIN_SEED": "30"})
    pool.worker("solo", slots=1, simulate=0.05)
    n = pool.enqueue("t01000", 1, "deal", "--deadline", "5s")[0]
    pool.wait_for("the sector flagged at risk", lambda: pool.rows("t01000")[0][
        "deadline_at_risk"], 30)
    row = json.loads(pool.cli("miner-publisher", "status", "--miner", "t01000",
                              "--json").stdout)[0]
    assert row["sector"] == n and row["deadline_at_risk"] is True and row["slack_s"] < 0
    assert "cannot make its deadline" in (pool.tmp / "miner-t01000.log").read_text()


def test_home_killed_after_pc1_restart_policy_completes_elsewhere(make_pool: MakePool) -> None:
    pool: Pool = make_pool(locality_wait=2)
    pool.miner("t01000", env={"SEALPOOL_MINER_LOCALITY_RECOVERY": "restart"})
    # home: runs ap and pc1 quickly, and pc2 slowly so it can be killed with pc2 pending
    pool.worker("home", slots=1, simulate=0.05, phases="ap,pc1",
                env={"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.3"})
    n = pool.enqueue("t01000", 1, "deal")[0]
    pool.wait_for("pc1 done on home", lambda: any(
        h["phase"] == "pc1" and h["outcome"] == "ok"
        for h in pool.rows("t01000")[0]["history"]), 60)
    pool.stop("home", signal.SIGKILL)
    # the pc2 follow-up went to a home that has no pc2 queue: it falls to the pool
    pool.worker("other", slots=2, simulate=0.05)
    row = pool.wait_finished(["t01000"], timeout=90)[0]
    assert row["sector"] == n and row["state"] == "done"
    ok = [(h["phase"], h["worker"]) for h in row["history"] if h["outcome"] == "ok"]
    # ap and pc1 ran twice: once on the lost home, then again from ap on the new one
    assert ok[:2] == [("ap", "home"), ("pc1", "home")]
    assert [w for p, w in ok[2:]] == ["other"] * 6 and row["home"] == "other"


def test_home_comes_back_wait_policy_completes_there(make_pool: MakePool) -> None:
    pool: Pool = make_pool(locality_wait=2)
    pool.miner("t01000", env={"SEALPOOL_MINER_HOME_WAIT": "2"})
    pool.worker("home", slots=1, simulate=0.05)
    pool.enqueue("t01000", 1, "deal")
    pool.wait_for("pc1 done", lambda: any(
        h["phase"] == "pc1" for h in pool.rows("t01000")[0]["history"]), 60)
    pool.stop("home", signal.SIGKILL)
    pool.worker("other", slots=1, simulate=0.05)  # has no files: answers needs_data
    time.sleep(6)
    pool.worker("home", slots=1, simulate=0.05)  # the machine is back, disk intact
    row = pool.wait_finished(["t01000"], timeout=90)[0]
    assert row["state"] == "done"
    ok = [(h["phase"], h["worker"]) for h in row["history"] if h["outcome"] == "ok"]
    assert all(w == "home" for p, w in ok if p in ("pc1", "pc2", "c1", "fin"))


def test_storage_group_members_share_follow_ups(pool: Pool) -> None:
    env = {"SEALPOOL_WORKER_STORAGE_GROUP": "rack1"}
    pool.worker("m1", slots=1, simulate=0.2, env=env)
    pool.worker("m2", slots=1, simulate=0.2, env=env)
    pool.miner("t01000")
    pool.enqueue("t01000", 4, "deal")
    rows = pool.wait_finished(["t01000"], timeout=90)
    assert_each_phase_accepted_once(rows)
    assert {r["home"] for r in rows} == {"rack1"}
    workers = {h["worker"] for r in rows for h in r["history"] if h["phase"] != "ap"}
    assert workers == {"m1", "m2"}
def test_three_miners_share_by_weight(pool: Pool) -> None:
    loads = {"t01000": 80, "t01001": 30, "t01002": 20}
    weights = {"t01000": 2, "t01001": 1, "t01002": 1}
    for w in ("wa", "wb", "wc"):
        pool.worker(w, slots=2, simulate=0.3)
    for m in loads:
        pool.miner(m, env={"SEALPOOL_MINER_WEIGHT": str(weights[m])})
    time.sleep(1.5)  # workers registered: the shares know the pool's size
    for m, count in loads.items():
        pool.enqueue(m, count, "cc")
    rows = {m: pool.wait_finished([m], timeout=240) for m in ("t01002", "t01001")}
    rows["t01000"] = pool.rows("t01000")
    # Steady state only: from when every miner has had a job finish (admission has settled)
    # until the smallest miner admitted its last sector (after that it cannot keep its
    # share of sectors in the pool).
    start = max(min(h["finished_at"] for r in rs for h in r["history"]) for rs in rows.values())
    end = max(h["started_at"] for r in rows["t01002"] for h in r["history"]
              if h["phase"] == "ap")
    assert end - start > 10, (start, end)  # long enough to average over many jobs
    busy = {m: sum(max(0.0, min(h["finished_at"], end) - max(h["started_at"], start))
                   for r in rows[m] for h in r["history"]) for m in rows}
    total = sum(busy.values())
    shares = {m: busy[m] / total for m in busy}
    print("shares", shares, "window", end - start)
    # Weights 2:1:1 give half, a quarter, a quarter (without shares the first miner's 80
    # sectors, queued first, would hold nearly all of the pool).
    for m, share in shares.items():
        assert abs(share - weights[m] / 4) <= 0.05, shares


def test_explain_says_where_a_job_waits_and_why(pool: Pool) -> None:
    def explain(job: str) -> dict[str, Any]:
        out = pool.cli("miner-publisher", "explain", job, "--json")
        return dict(json.loads(out.stdout))

    pool.miner("t01000")
    n1 = pool.enqueue("t01000", 1, "deal")[0]
    # no workers at all
    e = explain(f"t01000/{n1}/ap")
    assert e["waiting_in"] == pool.names.miner_queue(Phase.AP, Lane.DEAL, "t01000")
    assert e["queue_ready"] == 1
    assert any("no worker is registered" in r for r in e["reasons"])
    assert any("not issued yet" in r for r in explain(f"t01000/{n1}/fin")["reasons"])
    # a worker that does not serve the phase
    pool.worker("pc1only", phases="pc1", env={"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.3"})
    pool.wait_for("pc1only registered", lambda: any(
        w["worker"] == "pc1only" for w in explain(f"t01000/{n1}/ap")["workers"]), 30)
    why = {w["worker"]: w["why_not"] for w in explain(f"t01000/{n1}/ap")["workers"]}
    assert why["pc1only"] == "does not serve ap"
    # a worker that runs it, slowly: then it is running there, and a second one waits
    pool.worker("w1", slots=1, simulate=3.0, phases="ap,c2",
                env={"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.3"})
    pool.wait_for("ap running on w1", lambda: any(
        "running on w1" in r for r in explain(f"t01000/{n1}/ap")["reasons"]), 30)
    n2 = pool.enqueue("t01000", 1, "cc")[0]
    pool.wait_for("w1 reported busy", lambda: any(
        w["worker"] == "w1" and (w["why_not"] or "").startswith("slots busy")
        for w in explain(f"t01000/{n2}/ap")["workers"]), 30)
    # the follow-up pc1 needs the sector's files: only its home can take it
    pool.wait_for("pc1 issued", lambda: pool.rows("t01000")[0]["phase"] == "pc1", 30)
    e = explain(f"t01000/{n1}/pc1")
    why = {w["worker"]: w["why_not"] for w in e["workers"]}
    assert why["w1"] == "does not serve pc1"
    assert why["pc1only"] == "data elsewhere (home w1)"
    # and a bad id is one line
    bad = pool.cli("miner-publisher", "explain", "t01000/x/ap", check=False)
    assert bad.returncode == 2 and "not a job id" in bad.stderr


def test_pool_level_keeps_pc1_fed_and_stops_when_downstream_is_full(pool: Pool) -> None:
    env = {"SEALPOOL_MINER_PLEDGE_TARGET": "3", "SEALPOOL_MINER_PLEDGE_SIZE": "2KiB",
           "SEALPOOL_MINER_PLEDGE_MAX_DOWNSTREAM": "2"}
    # Given workers (on shared storage) for ap and pc1 only: everything after pc1 piles up
    shared = {"SEALPOOL_WORKER_STORAGE_GROUP": "rack"}
    pool.worker("early", slots=2, simulate=0.2, phases="ap,pc1", env=shared)
    pool.miner("t01000", env=env)
    pool.wait_for("pledged sectors reach pc2", lambda: sum(
        r["phase"] == "pc2" for r in pool.rows("t01000")) >= 2, 60)
    time.sleep(5)
    # Then pledging stopped: the downstream backlog is at its bound
    created = len(pool.rows("t01000"))
    time.sleep(5)
    rows = pool.rows("t01000")
    assert len(rows) == created <= 3 + 2
    assert all(r["class"] == "cc" for r in rows)
    # When the later phases get a worker, the backlog drains and pledging resumes
    pool.worker("late", slots=2, simulate=0.05, phases="pc2,c1,c2,fin", env=shared)
    pool.wait_for("more sectors pledged and done", lambda: sum(
        r["state"] == "done" for r in pool.rows("t01000")) > created, 90)
    assert pool.stats("t01000")["pledged"] > created
