"""Operators steer slots: `pool-worker list|pause|resume` on the machine, and
`miner-publisher worker info|pause|resume` from anywhere through the control exchange."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from .conftest import BIN, Pool

pytestmark = pytest.mark.integration


def config(name: str, simulate: float, slots: int = 2) -> str:
    return (f'name = "{name}"\ndata_dir = "data"\nsimulate = {simulate}\nslots = {slots}\n'
            'heartbeat_interval = "0.5s"\n')


def local(pool: Pool, path: Path, *args: str) -> Any:
    out = pool.cli("pool-worker", *args, "--config", str(path), "--json")
    return json.loads(out.stdout)


def remote(pool: Pool, *args: str) -> Any:
    return json.loads(pool.cli("miner-publisher", "worker", *args, "--json").stdout)


def test_local_list_pause_after_the_job_and_resume(pool: Pool) -> None:
    # Given a worker with two slots whose phases take a while, and work for both
    path = pool.worker_from_config("wl", config("wl", simulate=1.5))
    pool.miner("t01000")
    pool.enqueue("t01000", 3, "deal")
    pool.wait_for("slot 0 busy", lambda: local(pool, path, "list")[0]["state"] == "busy")
    slots = local(pool, path, "list")
    assert [s["index"] for s in slots] == [0, 1]
    assert slots[0]["job"].startswith("t01000/") and slots[0]["sector"].startswith("t01000/")
    assert slots[0]["temp_dir"] == str(pool.tmp / "data/wl/temp")
    # When slot 0 is paused, it finishes its job first, then claims nothing more
    reply = local(pool, path, "pause", "--index", "0")
    assert reply["message"].endswith("runs to its end first")
    assert reply["slots"][0]["paused"] and reply["slots"][0]["state"] == "busy"
    pool.wait_for("slot 0 idle", lambda: local(pool, path, "list")[0]["state"] == "idle")
    slots = local(pool, path, "list")
    assert slots[0]["paused"] and slots[0]["paused_since"] > 0 and slots[0]["job"] is None
    seen_busy = [local(pool, path, "list")[0]["state"] for _ in range(4)]
    assert "busy" not in seen_busy
    # Then resuming it for one phase shows the narrowed phases, and plain resume restores
    reply = local(pool, path, "resume", "--index", "0", "--phase", "pc2")
    assert reply["message"] == "slot 0 resumed for pc2"
    assert reply["slots"][0]["phases"] == ["pc2"] and not reply["slots"][0]["paused"]
    assert len(reply["slots"][0]["configured_phases"]) == 6
    reply = local(pool, path, "resume", "--index", "0")
    assert len(reply["slots"][0]["phases"]) == 6
    assert all(r["state"] == "done" for r in pool.wait_finished(["t01000"]))
    # and the human table shows every slot
    table = pool.cli("pool-worker", "list", "--config", str(path)).stdout
    assert "worker wl: 2 slot(s)" in table and "temp dir" in table


def test_pause_now_hands_the_running_job_back(pool: Pool) -> None:
    # Given a worker running a long ap on its only slot
    path = pool.worker_from_config("wn", config("wn", simulate=60, slots=1))
    pool.miner("t01000")
    [n] = pool.enqueue("t01000", 1, "cc")
    pool.wait_for("ap running", lambda: local(pool, path, "list")[0]["phase"] == "ap")
    # When it is paused --now
    reply = local(pool, path, "pause", "--index", "0", "--now")
    assert reply["message"] == f"slot 0 paused; handing back t01000/{n}/ap"
    # Then the job goes back to the queue at once, the slot stays paused and idle
    pool.wait_for("slot idle", lambda: local(pool, path, "list")[0]["state"] == "idle",
                  timeout=10)
    assert local(pool, path, "list")[0]["paused"]
    # and another worker takes it and the sector finishes there; nothing was reported
    pool.worker("wf", simulate=0.05)
    [row] = pool.wait_finished(["t01000"])
    assert row["state"] == "done" and row["home"] == "wf"
    assert {h["worker"] for h in row["history"]} == {"wf"}


def test_unknown_index_and_no_worker_are_clear_errors(pool: Pool) -> None:
    path = pool.worker_from_config("wu", config("wu", simulate=0.05))
    for args in (("pause", "--index", "5"), ("resume", "--index", "2")):
        proc = pool.cli("pool-worker", *args, "--config", str(path), check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip() == "error: worker wu has no slot " + \
            f"{args[-1]} (slots 0-1)"
    proc = pool.cli("pool-worker", "resume", "--index", "0", "--phase", "pc9", "--config",
                    str(path), check=False)
    assert proc.returncode == 2 and "pc9" in proc.stderr
    proc = pool.cli("pool-worker", "list", "--name", "ghost", "--data-dir",
                    str(pool.tmp / "data"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no pool-worker is running here (no control socket ")


def test_remote_info_pause_resume_through_the_control_exchange(pool: Pool) -> None:
    # Given a running worker
    path = pool.worker_from_config("wr", config("wr", simulate=0.05))
    # When a manager asks for its slots, it gets what the machine itself shows
    info = remote(pool, "info", "wr")
    assert [s["index"] for s in info] == [0, 1]
    assert info == local(pool, path, "list")
    # and pause / resume act on the worker
    reply = remote(pool, "pause", "wr", "1")
    assert reply["worker"] == "wr" and reply["message"] == "slot 1 paused"
    assert local(pool, path, "list")[1]["paused"]
    reply = remote(pool, "resume", "wr", "1", "--phase", "c2,ap")
    assert reply["slots"][1]["phases"] == ["ap", "c2"]
    assert not local(pool, path, "list")[1]["paused"]
    # Then bad requests are answered with one line
    proc = pool.cli("miner-publisher", "worker", "pause", "wr", "7", check=False)
    assert (proc.returncode, proc.stderr.strip()) == (
        2, "error: worker wr has no slot 7 (slots 0-1)")
    proc = pool.cli("miner-publisher", "worker", "info", "nobody", check=False)
    assert proc.returncode == 1 and "worker nobody is not connected to the pool" in proc.stderr


def test_a_worker_that_does_not_answer_times_out(pool: Pool) -> None:
    # Given a worker that is frozen (SIGSTOP: connected, but answering nothing)
    pool.worker_from_config("wz", config("wz", simulate=0.05))
    os.killpg(pool.procs["wz"].pid, signal.SIGSTOP)
    try:
        # When a manager asks it, it gets a clear error after the timeout
        proc = pool.cli("miner-publisher", "worker", "info", "wz", "--timeout", "1.5",
                        check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == "error: worker wz did not answer within 1.5s"
    finally:
        os.killpg(pool.procs["wz"].pid, signal.SIGCONT)
    # and once it runs again it answers
    assert len(remote(pool, "info", "wz")) == 2


def test_list_works_while_the_broker_is_unreachable(pool: Pool) -> None:
    # Given a worker that cannot reach RabbitMQ (it retries for 30 s before giving up)
    path = pool.tmp / "wdown.toml"
    path.write_text(config("wdown", simulate=0.05))
    pool.start("wdown", [str(BIN / "pool-worker"), "run", "--config", str(path)],
               env={"SEALPOOL_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"})
    # When the operator lists and pauses its slots, the local socket answers
    pool.wait_for("control socket", (pool.tmp / "data/wdown/control.sock").exists)
    assert [s["state"] for s in local(pool, path, "list")] == ["idle", "idle"]
    assert local(pool, path, "pause", "--index", "1")["message"] == "slot 1 paused"
