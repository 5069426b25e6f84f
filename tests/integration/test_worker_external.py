"""External processors on the real pool: any program runs a phase (JSON in, JSON out, its
own process group); failures come back classed, with stderr; a kill ends its whole group."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from broker_topology import PIPELINE

from .conftest import Pool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "deploy/processors/example.py"
FAULT = Path(__file__).parent / "fault_processor.py"


def external(phase: str, script: Path, **env: str) -> str:
    pairs = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return (f'[executors.{phase}]\nkind = "external"\n'
            f'command = ["{sys.executable}", "{script}"]\nkill_grace = "1s"\n'
            f"env = {{ {pairs} }}\n")


# a short drain: a test that fails mid-way still stops its worker and processors quickly
BASE = ('data_dir = "data"\nsector_sizes = ["2KiB"]\nsimulate = 0.05\n'
        'heartbeat_interval = "0.5s"\ndrain_timeout = "2s"\n')


def test_every_phase_by_the_example_processor(pool: Pool) -> None:
    # Given a worker that runs every phase with the example external processor
    pool.worker_from_config("we", BASE + "".join(external(p.value, EXAMPLE) for p in PIPELINE))
    pool.miner("t01000")
    # When sectors run
    numbers = pool.enqueue("t01000", 2, "deal")
    # Then they are done, each phase's outputs are the processor's
    for row in pool.wait_finished(["t01000"]):
        assert row["state"] == "done", row
        params = pool.record("t01000", row["sector"]).params
        assert {params[p.value]["processor"] for p in PIPELINE} == {"example"}
    for n in numbers:
        assert (pool.tmp / f"data/we/sealed/t01000/{n}/fin.json").exists()


def test_a_failing_processor_fails_the_sector_with_its_stderr(pool: Pool) -> None:
    # Given pc2 run by a processor that reports a permanent failure (exit 65)
    path = pool.worker_from_config("wp", BASE + external("pc2", FAULT, FAULT="permanent"))
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "cc")
    # When the sector reaches pc2, it fails there with the processor's words
    [row] = pool.wait_finished(["t01000"])
    assert (row["state"], row["phase"]) == ("failed", "pc2")
    [pc2] = [h for h in row["history"] if h["phase"] == "pc2"]
    assert pc2["error_class"] == "permanent"
    assert "exited with 65" in pc2["error"] and "proof mismatch" in pc2["error"]
    # and the slot that ran it shows it as its last error
    slots = json.loads(pool.cli("pool-worker", "list", "--config", str(path),
                                "--json").stdout)
    assert any("proof mismatch" in (s["last_error"] or "") for s in slots)


def test_a_processor_killed_by_a_signal_is_a_temporary_failure(pool: Pool) -> None:
    pool.worker_from_config("wk", BASE + external("c1", FAULT, FAULT="signal"))
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "cc")

    def c1_failed() -> bool:
        return any(h["phase"] == "c1" and h["outcome"] == "error"
                   for h in pool.rows("t01000")[0]["history"])

    pool.wait_for("c1 to fail", c1_failed)
    [row] = pool.rows("t01000")
    c1 = next(h for h in row["history"] if h["phase"] == "c1")
    assert c1["error_class"] == "temporary" and "killed by SIGKILL" in c1["error"]
    assert (row["state"], row["phase"]) == ("queued", "c1")  # retried, not failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[1].split()[0] != "Z"


def test_pause_now_kills_the_processor_group_and_hands_the_job_back(pool: Pool) -> None:
    # Given ap run by a processor that hangs, ignores SIGTERM and has a child of its own
    pidfile = pool.tmp / "pids"
    path = pool.worker_from_config(
        "wh", BASE + "slots = 1\n" + external("ap", FAULT, FAULT="hang", PIDFILE=str(pidfile)))
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    pool.wait_for("the processor to start", pidfile.exists)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(_alive(p) for p in pids)
    # When the operator pauses the slot --now
    started = time.monotonic()
    pool.cli("pool-worker", "pause", "--index", "0", "--now", "--config", str(path))
    # Then the processor and its child are gone within the kill grace, the slot is idle
    pool.wait_for("the group killed", lambda: not any(_alive(p) for p in pids), timeout=10)
    assert time.monotonic() - started < 8
    pool.wait_for("slot idle", lambda: json.loads(pool.cli(
        "pool-worker", "list", "--config", str(path), "--json").stdout)[0]["state"] == "idle",
        timeout=10)
    # and the job went back: another worker runs the sector to the end
    pool.worker("wf", simulate=0.05)
    [row] = pool.wait_finished(["t01000"])
    assert row["state"] == "done" and row["home"] == "wf"
