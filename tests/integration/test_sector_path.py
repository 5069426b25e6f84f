"""The foundation: miners publish, a pool of workers runs, sectors reach done."""

from __future__ import annotations

import json

import pytest

from broker_topology import LOCAL_PHASES, PIPELINE, Phase

from .conftest import Pool

pytestmark = pytest.mark.integration


def test_two_miners_two_workers_every_sector_done_on_its_home(pool: Pool) -> None:
    # Given two workers and two miners on one pool
    pool.worker("wa")
    pool.worker("wb")
    pool.miner("t01000")
    pool.miner("t01001")
    # When each miner enqueues sectors
    pool.enqueue("t01000", 3, "deal")
    pool.enqueue("t01001", 2, "cc")
    pool.enqueue("t01001", 2, "deal")
    # Then every sector reaches done, every phase ran once, data-bound phases on the home
    rows = pool.wait_finished(["t01000", "t01001"])
    assert len(rows) == 7
    for row in rows:
        assert row["state"] == "done", row
        ok = [h for h in row["history"] if h["outcome"] == "ok"]
        assert [h["phase"] for h in ok] == [p.value for p in PIPELINE]
        home = next(h["worker"] for h in ok if h["phase"] == "ap")
        assert row["home"] == home
        for h in ok:
            if Phase(h["phase"]) in LOCAL_PHASES:
                assert h["worker"] == home, (row["sector"], h)
    # and both workers took part (the pool is shared)
    assert {r["home"] for r in rows} == {"wa", "wb"}


def test_status_json_contract(pool: Pool) -> None:
    pool.worker("wa", slots=1)
    pool.miner("t01000")
    numbers = pool.enqueue("t01000", 2, "cc", "--size", "2KiB", "--deadline", "6h")
    pool.wait_finished(["t01000"])
    out = pool.cli("miner-publisher", "status", "--miner", "t01000", "--json")
    rows = json.loads(out.stdout)
    assert [r["sector"] for r in rows] == numbers
    for r in rows:
        assert {"sector", "class", "state", "phase", "attempt", "history"} <= set(r)
        assert (r["class"], r["state"], r["phase"]) == ("cc", "done", "fin")
        for h in r["history"]:
            assert {"phase", "attempt", "worker", "started_at", "finished_at",
                    "outcome"} <= set(h)
            assert h["finished_at"] >= h["started_at"]


def test_results_wait_for_a_miner_that_starts_late(pool: Pool) -> None:
    # Given a worker, and sectors enqueued while no `miner-publisher run` is up
    pool.worker("wa")
    pool.enqueue("t01000", 2, "deal")
    pool.wait_for("ap results queued", lambda: all(
        r["phase"] == "ap" for r in pool.rows("t01000")) and _results_ready(pool) >= 2)
    # When the miner starts, it picks them up and finishes the sectors
    pool.miner("t01000")
    rows = pool.wait_finished(["t01000"])
    assert [r["state"] for r in rows] == ["done", "done"]


def _results_ready(pool: Pool) -> int:
    from broker_topology import connect_blocking

    conn = connect_blocking(pool.settings.amqp_url, "test")
    try:
        ch = conn.channel()
        return int(ch.queue_declare(pool.names.results_queue("t01000"), passive=True)
                   .method.message_count)
    finally:
        conn.close()


def test_sigterm_stops_worker_and_miner_cleanly(pool: Pool) -> None:
    pool.worker("wa")
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    pool.wait_finished(["t01000"])
    assert pool.stop("wa") == 0
    assert pool.stop("miner-t01000") == 0
    # a stopped worker leaves the registry
    assert pool.redis().get(pool.names.redis_key("worker", "wa")) is None
