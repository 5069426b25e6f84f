"""The miner under faults on the real RabbitMQ and Redis: requeue only what failed, one
urgent copy from two instances, parked jobs move their sector, and a malformed header on
q.poison never stops `run`."""

from __future__ import annotations

import json
import time
from typing import Any

import pika
import pytest

from broker_topology import Lane, Phase, connect_blocking
from broker_topology.poison import REASON, Reason
from miner_publisher.pipeline import State
from miner_publisher.publisher import build_job

from .conftest import Pool

pytestmark = pytest.mark.integration
M = "t01000"


def publish(pool: Pool, exchange: str, key: str, body: bytes,
            headers: dict[str, Any] | None = None) -> None:
    conn = connect_blocking(pool.settings.amqp_url, "test-publish")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, key, body,
                         pika.BasicProperties(delivery_mode=2, headers=headers),
                         mandatory=True)
    finally:
        conn.close()


def current_job(pool: Pool, number: int) -> bytes:
    """The job of the attempt sector `number` waits for, as the miner published it."""
    rec = pool.store(M).get(number)
    assert rec is not None and rec.sector.state is State.QUEUED
    return build_job(rec, rec.sector, time.time()).to_bytes()



def requeue(pool: Pool, job: str) -> tuple[int, str]:
    proc = pool.cli("miner-publisher", "dead-letters", "requeue", job, check=False)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    return proc.returncode, proc.stderr


def test_requeue_is_refused_on_a_done_or_running_sector(pool: Pool) -> None:
    [done] = pool.enqueue(M, 1, "cc")
    pool.miner(M)
    pool.worker("wa")
    pool.wait_for("the sector done", lambda: pool.rows(M)[0]["state"] == "done")
    pool.stop("wa")
    # A stale dead letter, or a typo, names the done sector
    rc, err = requeue(pool, f"{M}/{done}/ap")
    assert rc == 2 and f"sector {M}/{done} is done" in err and "--force" in err
    # and a sector waiting at ap (no worker left) is running as far as requeue knows
    [waiting] = pool.enqueue(M, 1, "cc")
    pool.wait_for("the sector queued", lambda: pool.rows(M)[1]["state"] == "queued")
    rc, err = requeue(pool, f"{M}/{waiting}/ap")
    assert rc == 2 and f"sector {M}/{waiting} is queued" in err and "not failed" in err
    assert [(r["state"], r["attempt"]) for r in pool.rows(M)] == [("done", 1), ("queued", 1)]


def test_two_instances_escalate_each_sector_once(pool: Pool) -> None:
    # Sectors already in the pool whose deadline is short: both instances escalate them
    # in the same round, at start.
    n = 40
    pool.enqueue(M, n, "deal", "--deadline", "30m")
    urgent = pool.names.pool_queue(Phase.AP, Lane.URGENT)
    admitted = pool.ready(urgent)  # admitted at once, on the urgent lane
    assert admitted == n
    pool.miner(M, key="a")
    pool.miner(M, key="b")
    pool.wait_for("every sector escalated",
                  lambda: pool.stats(M).get("escalated", 0) >= n, timeout=60)
    time.sleep(3)  # a second escalation round of both instances
    assert pool.stats(M)["escalated"] == n
    assert pool.ready(urgent) == admitted + n  # one urgent copy per sector


def test_parked_jobs_move_their_sector_and_bad_poison_headers_leave_run_serving(
        pool: Pool) -> None:
    pool.miner(M)
    pool.wait_for("miner up", lambda: "running" in (pool.tmp / f"miner-{M}.log").read_text())
    assert pool.enqueue(M, 2, "deal") == [1, 2]
    jobs = {n: current_job(pool, n) for n in (1, 2)}  # as a worker would have parked them
    # Malformed x-death headers first: the miner must keep serving through them
    for bad in ("not a list", [1, "x"], [{"reason": "delivery_limit", "count": "many",
                                         "queue": 7}]):
        publish(pool, pool.names.poison, "", b"garbage", {"x-death": bad})
    # a worker's crash loop on sector 1, the broker's delivery limit on sector 2
    publish(pool, pool.names.poison, "", jobs[1], {REASON: Reason.CRASH_LOOP.value})
    publish(pool, pool.names.poison, "", jobs[2],
            {"x-death": [{"reason": "delivery_limit", "queue": "q.ap.deal", "count": 6}]})

    def moved() -> bool:
        rows = {r["sector"]: r for r in pool.rows(M)}
        return bool(rows[1]["state"] == "failed" and rows[2]["attempt"] == 2)

    pool.wait_for("both sectors moved on", moved, timeout=30)
    rows = {r["sector"]: r for r in pool.rows(M)}
    assert "crash_loop" in rows[1]["error"]
    assert rows[2]["state"] == "queued" and "delivery_limit" in rows[2]["error"]
    assert pool.procs[f"miner-{M}"].poll() is None
    dead = json.loads(pool.cli("miner-publisher", "dead-letters", "list", "--json").stdout)
    assert {e["id"] for e in dead} >= {f"{M}/1/ap#1", f"{M}/2/ap#1"}
    assert len(dead) == 5
