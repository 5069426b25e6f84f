"""Before claiming, a slot checks the disk and memory the phase needs for the largest
sector size the worker takes; jobs of sizes it does not take go back unclaimed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from broker_topology import Lane, Phase, connect_blocking

from .conftest import MakePool, Pool

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "deploy/processors/example.py"


def ready(pool: Pool, queue: str) -> int:
    conn = connect_blocking(pool.settings.amqp_url, "test")
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def slots(pool: Pool, path: Path) -> list[dict[str, Any]]:
    out = pool.cli("pool-worker", "list", "--config", str(path), "--json")
    return list(json.loads(out.stdout))


def test_a_slot_without_the_disk_space_does_not_claim_and_says_why(pool: Pool) -> None:
    # Given a worker whose only slot must keep more free disk than any disk has
    path = pool.worker_from_config("wd", f"""
data_dir = "data"
sector_sizes = ["2KiB"]
heartbeat_interval = "0.5s"

[[slots]]
phases = ["ap"]
keep_free = "1000TiB"

[executors.ap]
kind = "external"
command = ["{sys.executable}", "{EXAMPLE}"]
""", phases="ap")
    pool.miner("t01000")
    # When an ap job waits in the pool
    pool.enqueue("t01000", 1, "deal")
    # Then the slot is blocked, and its state says why
    pool.wait_for("slot blocked", lambda: slots(pool, path)[0]["state"] == "blocked")
    why = slots(pool, path)[0]["held_back"]["ap"]
    assert "free disk in" in why and "for 2KiB sectors" in why
    assert "after keep_free 1000TiB" in why
    # and over several claim passes it claims nothing: the job stays queued
    time.sleep(3)
    assert ready(pool, pool.names.miner_queue(Phase.AP, Lane.DEAL, "t01000")) == 1
    assert pool.rows("t01000")[0]["history"] == []
    listed = json.loads(pool.cli("miner-publisher", "workers", "--json").stdout)
    assert [(w["name"], w["blocked"], w["idle"]) for w in listed] == [("wd", 1, 0)]
    # When a worker with room joins, it takes the job and the sector is done there
    pool.worker("wf", simulate=0.05)
    [row] = pool.wait_finished(["t01000"])
    assert row["state"] == "done" and row["home"] == "wf"


def test_a_job_of_a_size_the_worker_does_not_take_goes_back_unclaimed(make_pool: MakePool) -> None:
    pool: Pool = make_pool(delay_buckets=(1, 5))
    # Given a worker that takes 2KiB sectors only, and an 8MiB sector
    pool.worker_from_config("w2k", 'data_dir = "data"\nsimulate = 0.05\n'
                            'sector_sizes = ["2KiB"]\n')
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal", "--size", "8MiB")
    # When it has seen the job, it sends it back through the delay queue (no reject, so
    # the queue's delivery limit is not spent) and runs nothing
    pool.wait_for("job sent back", lambda: "sent back" in (pool.tmp / "w2k.log").read_text())
    time.sleep(2)
    assert pool.rows("t01000")[0]["history"] == []
    # Then a worker that takes 8MiB sectors runs the whole sector; nothing was poisoned
    pool.worker_from_config("w8m", 'data_dir = "data"\nsimulate = 0.05\n'
                            'sector_sizes = ["8MiB"]\n')
    [row] = pool.wait_finished(["t01000"])
    assert row["state"] == "done" and {h["worker"] for h in row["history"]} == {"w8m"}
    assert ready(pool, pool.names.poison_queue) == 0
