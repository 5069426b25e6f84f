"""The registry: every worker's slots in Redis, listed by `miner-publisher workers`."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from .conftest import Pool

pytestmark = pytest.mark.integration

FAST = {"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.5"}


def workers(pool: Pool) -> dict[str, Any]:
    out = pool.cli("miner-publisher", "workers", "--json").stdout
    return {w["name"]: w for w in json.loads(out)}


def test_workers_lists_slots_idle_busy_paused_errors_and_stale_pings(pool: Pool) -> None:
    # Given two workers: wa runs the data-bound phases, wb runs ap and fails it
    pool.worker_from_config("wa", 'data_dir = "data"\nsimulate = 5\nslots = 3\n'
                            'phases = "pc1,pc2,c1,c2,fin"\n'
                            'storage_group = "rack-a"\n', env=FAST)
    pool.worker("wb", phases="ap", slots=1, extra=["--simulate-fail", "ap=permanent"],
                env=FAST)
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "cc")
    pool.cli("pool-worker", "pause", "--index", "2", "--config", str(pool.tmp / "wa.toml"))
    # When the failing ap has run
    pool.wait_for("wb's error", lambda: workers(pool).get("wb", {}).get("errors") == 1)
    # Then each worker is listed with its counts
    listed = workers(pool)
    wa, wb = listed["wa"], listed["wb"]
    assert (wa["slots"], wa["paused"], wa["errors"], wa["storage_group"]) == (3, 1, 0, "rack-a")
    assert wa["idle"] + wa["busy"] == 2 and wa["address"] and wa["pid"] > 0
    assert (wb["slots"], wb["idle"], wb["busy"], wb["errors"]) == (1, 1, 0, 1)
    assert wb["phases"] == ["ap"] and not wa["stale"] and not wb["stale"]
    assert wa["age"] < 3
    # When wb stops answering (frozen), its last ping ages and it is marked stale
    os.killpg(pool.procs["wb"].pid, signal.SIGSTOP)
    try:
        pool.wait_for("wb stale", lambda: workers(pool)["wb"]["stale"], timeout=15)
        table = pool.cli("miner-publisher", "workers").stdout
        assert "!" in table.split("wb")[1].splitlines()[0]
        assert not workers(pool)["wa"]["stale"]
    finally:
        os.killpg(pool.procs["wb"].pid, signal.SIGCONT)
    # and a worker that stops cleanly leaves the registry
    assert pool.stop("wa") == 0
    assert set(workers(pool)) == {"wb"}
