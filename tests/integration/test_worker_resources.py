"""Before claiming, a slot checks the disk and memory the phase needs for the largest
sector size the worker takes; jobs of sizes it does not take go back unclaimed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from broker_topology import Lane, Phase

from .conftest import MakePool, Pool

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "deploy/processors/example.py"



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
    assert pool.ready(pool.names.miner_queue(Phase.AP, Lane.DEAL, "t01000")) == 1
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
    assert pool.ready(pool.names.poison_queue) == 0


def test_no_size_settings_take_2kib_and_a_size_nobody_takes_is_reported(
        make_pool: MakePool) -> None:
    pool: Pool = make_pool(delay_buckets=(1,))
    # Given a worker started with no size settings, ap and pc1 on the real kernel: on this
    # machine it takes the sizes whose pc1 fits its memory (2KiB, ..., not 32GiB)
    pool.worker("plain", kernel=True, simulate=0.05,
                env={"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.5"})
    pool.miner("t01000")
    [small] = pool.enqueue("t01000", 1, "cc")
    [big] = pool.enqueue("t01000", 1, "cc", "--size", "32GiB")
    # Then, while the 32GiB job goes round, explain says what the worker does about it
    seen: list[str | None] = []

    def failed() -> bool:
        e = json.loads(pool.cli("miner-publisher", "explain", f"t01000/{big}/ap",
                                "--json").stdout)
        seen.extend(w["why_not"] for w in e["workers"] if w["worker"] == "plain")
        return any(r["sector"] == big and r["state"] == "failed" for r in pool.rows("t01000"))

    # and, as no live worker takes that size, it is parked and its sector fails, no loop
    pool.wait_for("the 32GiB sector failed", failed, 60)
    assert "does not take 32GiB sectors" in seen and None not in seen, seen
    # while the 2KiB sector is sealed on the same worker
    pool.wait_for("the 2KiB sector done", lambda: any(
        r["sector"] == small and r["state"] == "done" for r in pool.rows("t01000")), 90)
    [row] = [r for r in pool.rows("t01000") if r["sector"] == big]
    assert "32GiB" in row["error"] and row["history"][-1]["phase"] == "ap"
    listed = json.loads(pool.cli("miner-publisher", "dead-letters", "list", "--json").stdout)
    assert [e["reason"] for e in listed] == ["unserved_size"]
