"""Bounded locality on the real broker: with the default `wait` policy, a sector whose home
is stopped for good after pc1 starts over at ap on another worker and finishes, in seconds,
and its history says why."""

from __future__ import annotations

import time

from .conftest import MakePool, Pool


def test_a_home_stopped_for_good_after_pc1_is_given_up_and_the_sector_finishes_elsewhere(
        make_pool: MakePool) -> None:
    pool: Pool = make_pool(locality_wait=2)
    pool.miner("t01000", env={"SEALPOOL_MINER_HOME_GONE_AFTER": "2",
                              "SEALPOOL_MINER_HOME_WAIT": "1"})
    # The home seals ap and pc1 only, so nothing of the sector runs past pc1 there.
    pool.worker("home", slots=1, simulate=0.05, phases="ap,pc1",
                env={"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.3"})
    n = pool.enqueue("t01000", 1, "cc")[0]
    pool.wait_for("pc1 done on home", lambda: any(
        h["phase"] == "pc1" and h["outcome"] == "ok"
        for h in pool.rows("t01000")[0]["history"]), 60)
    pool.stop("home")  # a clean stop: its registry entry goes, its last beat stays
    stopped = time.monotonic()
    pool.worker("other", slots=2, simulate=0.05)  # has none of the sector's files
    row = pool.wait_finished(["t01000"], timeout=60)[0]
    took = time.monotonic() - stopped
    assert row["sector"] == n and row["state"] == "done", row
    assert took < 30, f"{took:.0f}s from the home's stop to done"
    notes = [h["note"] for h in row["history"] if h.get("note")]
    assert len(notes) == 1 and "restarted at ap" in notes[0] and "home home gone" in notes[0]
    ok = [(h["phase"], h["worker"]) for h in row["history"] if h["outcome"] == "ok"]
    assert ok[:2] == [("ap", "home"), ("pc1", "home")]
    assert [w for _, w in ok[2:]] == ["other"] * 6 and row["home"] == "other"
    assert pool.stats("t01000").get("stale_results", 0) == 0
