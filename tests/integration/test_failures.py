"""Nothing lost, nothing done twice: workers killed, hung, drained; executors failing."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from broker_topology import PIPELINE

from .conftest import MakePool, Pool

pytestmark = pytest.mark.integration

FAST = {"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.3"}


def assert_each_phase_accepted_once(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        assert row["state"] == "done", row
        ok = [h["phase"] for h in row["history"] if h["outcome"] == "ok"]
        assert ok == [p.value for p in PIPELINE], (row["sector"], ok)


@contextmanager
def supervised(pool: Pool, name: str, **kwargs: Any) -> Iterator[list[int]]:
    """Restart the worker whenever it dies, as systemd would; yields the exit codes seen."""
    exits: list[int] = []
    stop = threading.Event()
    pool.worker(name, **kwargs)

    def watch() -> None:
        while not stop.wait(0.2):
            proc = pool.procs.get(name)
            if proc is not None and proc.poll() is not None:
                exits.append(proc.returncode)
                pool.worker(name, **kwargs)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield exits
    finally:
        stop.set()
        t.join()


def test_kill9_mid_phase_repeatedly_every_sector_done_once(pool: Pool) -> None:
    # Given two workers whose phases take a while, and sectors in flight
    for w in ("wa", "wb"):
        pool.worker(w, simulate=1.0, slots=2, env=FAST)
    pool.miner("t01000")
    pool.enqueue("t01000", 4, "deal")
    # When, for several phases, the worker running that phase is killed -9 mid-phase and
    # comes back (same name, same disk: what a machine restart looks like)
    killed = []
    for phase in ("pc1", "pc2", "c2", "fin"):
        victim: dict[str, str] = {}

        def running(phase: str = phase, victim: dict[str, str] = victim) -> bool:
            for w in ("wa", "wb"):
                if any(j.endswith(f"/{phase}") for j in pool.slot_jobs(w)):
                    victim["w"] = w
                    return True
            return False

        pool.wait_for(f"a {phase} job running", running, 60)
        time.sleep(0.3)  # mid-phase
        pool.stop(victim["w"], signal.SIGKILL)
        killed.append((phase, victim["w"]))
        pool.worker(victim["w"], simulate=1.0, slots=2, env=FAST)
    # Then every sector reaches done and each phase was accepted exactly once
    rows = pool.wait_finished(["t01000"], timeout=180)
    assert_each_phase_accepted_once(rows)
    assert len(killed) == 4


def test_hung_worker_is_replaced_and_its_late_result_fenced(make_pool: MakePool) -> None:
    # Given short heartbeats and leases, a slow c2 worker and a worker for the rest
    pool: Pool = make_pool(heartbeat=3, delay_buckets=(1, 2))
    lease = {"SEALPOOL_WORKER_LEASE_TTL": "4", **FAST}
    pool.worker("hung", simulate=6.0, slots=1, phases="c2", env=lease)
    pool.worker("rest", simulate=0.05, slots=2, phases="ap,pc1,pc2,c1,fin", env=lease)
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    pool.wait_for("c2 running on the slow worker",
                  lambda: any(j.endswith("/c2") for j in pool.slot_jobs("hung")), 60)
    # When that worker freezes (SIGSTOP: a hung host or a cut network, socket still open)
    pool.procs["hung"].send_signal(signal.SIGSTOP)
    pool.worker("spare", simulate=0.5, slots=1, phases="c2", env=lease)
    try:
        # Then heartbeats expire, the job is redelivered, and the spare completes the sector
        rows = pool.wait_finished(["t01000"], timeout=90)
    finally:
        pool.procs["hung"].send_signal(signal.SIGCONT)
    assert_each_phase_accepted_once(rows)
    c2 = [h for h in rows[0]["history"] if h["phase"] == "c2"]
    assert [h["worker"] for h in c2] == ["spare"]
    # and the frozen worker, once thawed, drops its copy (lease lost) or its late result is
    # fenced at the miner; either way nothing is accepted twice
    def gave_up() -> bool:
        log = (pool.tmp / "hung.log").read_text()
        return any(s in log for s in ("lease taken over", "fenced off")) or \
            pool.stats("t01000").get("stale_results", 0) >= 1

    pool.wait_for("the thawed worker to give up its copy", gave_up, 30)
    assert pool.procs["hung"].poll() is None  # still running, still in the pool
    c2_after = [h for h in pool.rows("t01000")[0]["history"] if h["phase"] == "c2"]
    assert c2_after == c2


def test_temporary_failures_retry_then_fail_and_others_finish(make_pool: MakePool) -> None:
    pool: Pool = make_pool(delay_buckets=(1, 2))
    miner_env = {"SEALPOOL_MINER_MAX_ATTEMPTS": '{"pc2": 3}', "SEALPOOL_MINER_RETRY_BASE": "1"}
    numbers = pool.enqueue("t01000", 4, "deal")
    bad_temp, bad_perm = numbers[1], numbers[2]
    pool.worker("wa", simulate=0.05,
                extra=["--simulate-fail", f"pc2=temporary@{bad_temp};c2=permanent@{bad_perm}"])
    pool.miner("t01000", env=miner_env)
    rows = {r["sector"]: r for r in pool.wait_finished(["t01000"], timeout=90)}
    temp = rows[bad_temp]
    assert temp["state"] == "failed" and "after 3 attempts" in temp["error"]
    assert [h["attempt"] for h in temp["history"] if h["phase"] == "pc2"] == [1, 2, 3]
    # retries waited in the delay queues (backoff), not hot-looped
    tries = [h for h in temp["history"] if h["phase"] == "pc2"]
    assert tries[1]["started_at"] - tries[0]["finished_at"] >= 0.9
    perm = rows[bad_perm]
    assert perm["state"] == "failed" and "permanent" in perm["error"]
    assert [h["attempt"] for h in perm["history"] if h["phase"] == "c2"] == [1]
    assert_each_phase_accepted_once([r for n, r in rows.items() if n not in (bad_temp, bad_perm)])


def test_job_that_crashes_every_worker_is_parked_and_the_sector_failed(pool: Pool) -> None:
    numbers = pool.enqueue("t01000", 3, "cc")
    crasher = numbers[0]
    pool.miner("t01000")
    with supervised(pool, "wa", simulate=0.3, slots=1,
                    extra=["--simulate-fail", f"c2=crash@{crasher}"]) as exits:
        rows = {r["sector"]: r for r in pool.wait_finished(["t01000"], timeout=120)}
    assert rows[crasher]["state"] == "failed"
    assert "crash_loop" in rows[crasher]["error"]
    assert len(exits) == 3 and set(exits) == {70}  # max_starts, then parked
    assert_each_phase_accepted_once([r for n, r in rows.items() if n != crasher])
    dead = pool.cli("miner-publisher", "dead-letters", "list", "--json")
    import json

    entries = json.loads(dead.stdout)
    assert [(e["job_id"], e["reason"]) for e in entries] == [
        (f"t01000/{crasher}/c2", "crash_loop")]


def test_requeue_from_dead_letters_replays_the_sector(pool: Pool) -> None:
    import json

    numbers = pool.enqueue("t01000", 1, "deal")
    n = numbers[0]
    pool.miner("t01000")
    with supervised(pool, "wa", simulate=0.2, slots=1,
                    extra=["--simulate-fail", f"c1=crash@{n}"]):
        pool.wait_finished(["t01000"], timeout=90)
    assert pool.rows("t01000")[0]["state"] == "failed"
    # When the operator fixed the cause and replays from pc2
    pool.stop("wa")
    pool.worker("wa", simulate=0.05)
    out = pool.cli("miner-publisher", "dead-letters", "requeue", f"t01000/{n}/c1",
                   "--from-phase", "pc2", "--json")
    assert json.loads(out.stdout)["dead_letters_removed"] == 1
    row = pool.wait_finished(["t01000"], timeout=60)[0]
    assert row["state"] == "done"
    phases = [(h["phase"], h["attempt"]) for h in row["history"] if h["outcome"] == "ok"]
    # attempt numbers are never reused: c1's crashed attempt 1 cannot stand in for the rerun
    assert phases[-4:] == [("pc2", 2), ("c1", 2), ("c2", 1), ("fin", 1)]
    assert json.loads(pool.cli("miner-publisher", "dead-letters", "list", "--json").stdout) == []


def test_requeue_of_bad_job_id_is_one_line(pool: Pool) -> None:
    proc = pool.cli("miner-publisher", "dead-letters", "requeue", "nonsense", check=False)
    assert proc.returncode == 2 and "not a job id" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_publishers_racing_dispatch_each_phase_once(pool: Pool) -> None:
    pool.miner("t01000", key="m1")
    pool.miner("t01000", key="m2")
    for w in ("wa", "wb"):
        pool.worker(w, simulate=0.05, slots=3)
    pool.enqueue("t01000", 6, "deal")
    rows = pool.wait_finished(["t01000"], timeout=90)
    assert_each_phase_accepted_once(rows)
    stats = pool.stats("t01000")
    assert stats.get("jobs_published") == 6 * len(PIPELINE)
    assert stats.get("stale_results", 0) == 0
    # both instances did part of the work
    for key in ("m1", "m2"):
        assert "-> " in (pool.tmp / f"{key}.log").read_text()


def test_sigterm_drains_then_hands_back(pool: Pool) -> None:
    pool.worker("slow", simulate=4.0, slots=1, phases="c2", env=FAST,
                extra=["--drain-timeout", "1"])
    pool.worker("rest", simulate=0.05, phases="ap,pc1,pc2,c1,fin")
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    pool.wait_for("c2 running", lambda: bool(pool.slot_jobs("slow")), 60)
    # SIGTERM with a 1 s drain: the job is handed back and the worker exits cleanly
    t0 = time.monotonic()
    assert pool.stop("slow") == 0
    assert time.monotonic() - t0 < 10
    pool.worker("slow2", simulate=0.05, slots=1, phases="c2")
    row = pool.wait_finished(["t01000"], timeout=60)[0]
    assert_each_phase_accepted_once([row])
    assert [h["worker"] for h in row["history"] if h["phase"] == "c2"] == ["slow2"]


def test_sigterm_lets_a_running_job_finish(pool: Pool) -> None:
    pool.worker("w", simulate=1.5, slots=1, phases="c2", env=FAST)
    pool.worker("rest", simulate=0.05, phases="ap,pc1,pc2,c1,fin")
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    pool.wait_for("c2 running", lambda: bool(pool.slot_jobs("w")), 60)
    assert pool.stop("w") == 0
    row = pool.wait_finished(["t01000"], timeout=60)[0]
    assert [h["worker"] for h in row["history"] if h["phase"] == "c2"] == ["w"]


def test_duplicate_delivery_of_a_done_job_republishes_its_result(pool: Pool) -> None:
    from broker_topology import Lane, Phase, routing_key

    from .test_poison import publish_raw

    pool.worker("wa", simulate=0.05)
    pool.miner("t01000")
    n = pool.enqueue("t01000", 1, "deal")[0]
    row = pool.wait_finished(["t01000"])[0]
    ran = sum(1 for h in row["history"] if h["phase"] == "c2")
    # When a copy of the finished c2 job arrives again (a publisher retry, a redelivery)
    job = pool.store("t01000").get(n)
    assert job is not None
    from miner_publisher.pipeline import Sector, State
    from miner_publisher.publisher import build_job

    c2 = build_job(job, Sector("t01000", n, State.QUEUED, Phase.C2, 1), time.time())
    publish_raw(pool, pool.names.jobs, routing_key("pool", Phase.C2, Lane.DEAL, "t01000"),
                [c2.to_bytes()])
    # Then it is not run again: the recorded result is republished and fenced as stale
    pool.wait_for("the stale copy to be dropped",
                  lambda: pool.stats("t01000").get("stale_results", 0) == 1, 30)
    assert "already done; republishing" in (pool.tmp / "wa.log").read_text()
    after = pool.rows("t01000")[0]
    assert sum(1 for h in after["history"] if h["phase"] == "c2") == ran
