"""The worker's guarantees under faults, on the real RabbitMQ and Redis, with real worker
processes and jobs published straight to the pool (no miner: each test reads the results
queue itself, so it sees every result a worker sends, not only the accepted one).

- a worker frozen past its lease (SIGSTOP, then SIGCONT) cannot have its result recorded;
- two processes started with one worker name never run one job twice;
- twelve hand-backs of one job do not spend its delivery limit;
- a drain waits for a processor's kill grace and leaves no processor behind."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from broker_topology import Job, Lane, Phase, Result, SectorClass, job_id, routing_key
from broker_topology.declare import declare
from broker_topology.link import connect_blocking
from broker_topology.naming import POOL_ORIGIN
from broker_topology.topology import miner_topology, pool_topology
from miner_publisher.redis_text import text

from .conftest import MakePool, Pool

pytestmark = pytest.mark.integration

MINER = "t01000"
FAULT = Path(__file__).parent / "fault_processor.py"
#: Quick registry beats, short leases: each scenario plays out in seconds.
QUICK = {"SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "0.5", "SEALPOOL_WORKER_LEASE_TTL": "3"}


def declared(pool: Pool) -> Pool:
    pool.miners.add(MINER)  # teardown deletes the results queue too
    pool.redis().hset(pool.names.miners_key, MINER, 1.0)  # as `miner-publisher run` does
    conn = connect_blocking(pool.settings.amqp_url, "test-guarantees")
    try:
        declare(conn, pool_topology(pool.settings) + miner_topology(pool.settings, MINER))
    finally:
        conn.close()
    return pool


def publish(pool: Pool, sector: int, phase: Phase = Phase.AP, attempt: int = 1) -> Job:
    job = Job(job_id=job_id(MINER, sector, phase), miner=MINER, sector=sector, phase=phase,
              attempt=attempt, sector_class=SectorClass.CC, size=2048,
              deadline=time.time() + 86400, issued_at=time.time())
    conn = connect_blocking(pool.settings.amqp_url, "test-guarantees")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(pool.names.jobs, routing_key(POOL_ORIGIN, phase, Lane.CC, MINER),
                         job.to_bytes(), mandatory=True)
    finally:
        conn.close()
    return job


def results(pool: Pool) -> list[Result]:
    """Take every result waiting in the miner's results queue."""
    conn = connect_blocking(pool.settings.amqp_url, "test-guarantees")
    out: list[Result] = []
    try:
        ch = conn.channel()
        while True:
            method, _props, body = ch.basic_get(pool.names.results_queue(MINER), auto_ack=True)
            if method is None:
                return out
            out.append(Result.from_bytes(body))
    finally:
        conn.close()



def running(pool: Pool, worker: str, job: Job) -> bool:
    return job.job_id in pool.slot_jobs(worker)


def gather(pool: Pool, want: int, timeout: float = 60) -> list[Result]:
    got: list[Result] = []

    def enough() -> bool:
        got.extend(results(pool))
        return len(got) >= want

    pool.wait_for(f"{want} result(s)", enough, timeout)
    return got


def test_worker_frozen_past_its_lease_cannot_record_or_deliver_its_result(
        make_pool: MakePool) -> None:
    # Given a worker running a 6 s job with a 3 s lease and 2 s AMQP heartbeats
    pool = declared(make_pool(heartbeat=2, delay_buckets=(1,)))
    pool.worker("frozen", simulate=6.0, slots=1, phases="ap", env=QUICK)
    job = publish(pool, 1)
    pool.wait_for("the job running", lambda: running(pool, "frozen", job), 30)
    # When it is frozen (SIGSTOP) longer than its lease, and a second worker is there
    frozen = pool.procs["frozen"]
    frozen.send_signal(signal.SIGSTOP)
    try:
        pool.worker("spare", simulate=6.0, slots=1, phases="ap", env=QUICK)
        pool.wait_for("the spare to take the job over", lambda: running(pool, "spare", job),
                      40)
    finally:
        frozen.send_signal(signal.SIGCONT)
    # Then exactly one result comes back: the spare's, under the second epoch
    [result] = gather(pool, 1, 40)
    assert (result.worker, result.epoch, result.outcome.value) == ("spare", 2, "ok")
    done = pool.redis().get(pool.names.done_key(job.job_id, job.attempt))
    assert done is not None and Result.from_bytes(text(done).encode()).worker == "spare"
    # and the thawed worker gave its copy up, sent nothing, and is still serving
    pool.wait_for("the thawed worker to give up", lambda: any(
        s in (pool.tmp / "frozen.log").read_text()
        for s in ("lease taken over", "fenced off")), 30)
    time.sleep(1.5)
    assert results(pool) == []
    assert frozen.poll() is None
    pool.stop("spare")
    second = publish(pool, 2)
    [r2] = gather(pool, 1, 40)
    assert (r2.job_id, r2.worker) == (second.job_id, "frozen")


def test_two_processes_with_one_name_never_run_a_job_twice(make_pool: MakePool) -> None:
    # Given two processes started with the same worker name (a copied config, a restart
    # while the old process still runs)
    pool = declared(make_pool(delay_buckets=(1,)))
    for key in ("twin-1", "twin-2"):
        pool.start(key, [str(Path(sys.executable).parent / "pool-worker"), "run",
                         "--name", "twin", "--slots", "2", "--phases", "ap",
                         "--simulate", "3", "--simulate-builtin", "--idle-poll", "0.5",
                         "--data-dir", str(pool.tmp / key)], QUICK)
    pool.workers["twin"] = frozenset({Phase.AP})
    # When the same job attempt is published three times (outbox duplicates, escalations)
    job = publish(pool, 7)
    publish(pool, 7)
    publish(pool, 7)
    # Then every copy is answered, all with the one run's result: one epoch, one start time
    got = gather(pool, 3, 60)
    assert {(r.job_id, r.attempt) for r in got} == {(job.job_id, 1)}
    assert {(r.epoch, r.started_at, r.outcome.value) for r in got} == {
        (1, got[0].started_at, "ok")}
    logs = (pool.tmp / "twin-1.log").read_text() + (pool.tmp / "twin-2.log").read_text()
    assert logs.count("t01000/7/ap attempt 1 on slot") == 1  # the executor ran once


def test_twelve_hand_backs_do_not_spend_the_delivery_limit(make_pool: MakePool) -> None:
    # Given a pool whose queues dead-letter after 2 deliveries, and one long job
    pool = declared(make_pool(delivery_limit=2, delay_buckets=(1,)))
    path = pool.worker_from_config(
        "hb", 'data_dir = "data"\nsimulate = 60\nslots = 1\nphases = ["ap"]\n'
        'heartbeat_interval = "0.5s"\nidle_poll = "0.5s"\ndrain_timeout = "1s"\n', phases="ap")
    job = publish(pool, 3)

    def slot() -> dict[str, Any]:
        out = pool.cli("pool-worker", "list", "--config", str(path), "--json")
        return dict(json.loads(out.stdout)[0])

    # When it is handed back twelve times (pause --now, then resume)
    for _ in range(12):
        pool.wait_for("the job running", lambda: slot()["job"] == job.job_id, 30)
        pool.cli("pool-worker", "pause", "--config", str(path), "--index", "0", "--now")
        pool.wait_for("the slot idle", lambda: slot()["state"] == "idle", 15)
        pool.cli("pool-worker", "resume", "--config", str(path), "--index", "0")
    # Then it is still in the pool, never parked, and its start count did not grow
    pool.wait_for("the job running again", lambda: slot()["job"] == job.job_id, 30)
    assert pool.ready(pool.names.poison_queue) == 0
    starts = pool.redis().get(pool.names.starts_key(job.job_id, job.attempt))
    assert starts == "1"
    log = (pool.tmp / "hb.log").read_text()
    assert log.count(f"{job.job_id} attempt 1 handed back") == 12


def test_drain_waits_for_the_kill_grace_and_leaves_no_processor(make_pool: MakePool) -> None:
    # Given a processor that ignores SIGTERM, with a 30 s kill grace, and a 1 s drain
    pool = declared(make_pool(delay_buckets=(1,)))
    pidfile = pool.tmp / "pids"
    pool.worker_from_config(
        "dr", 'data_dir = "data"\nsimulate = 0.05\nslots = 1\nphases = ["ap"]\n'
        'heartbeat_interval = "0.5s"\ndrain_timeout = "1s"\n'
        f'[executors.ap]\nkind = "external"\ncommand = ["{sys.executable}", "{FAULT}"]\n'
        f'kill_grace = "30s"\nenv = {{ FAULT = "hang", PIDFILE = "{pidfile}" }}\n',
        phases="ap")
    job = publish(pool, 5)
    pool.wait_for("the processor running", lambda: pidfile.exists()
                  and len(pidfile.read_text().split()) == 2, 30)
    pids = [int(p) for p in pidfile.read_text().split()]
    # When the worker is told to stop
    code = pool.stop("dr", timeout=60)
    # Then it exits cleanly, with the processor and its child gone (they were killed at
    # the end of the kill grace, not orphaned), and the job handed back (never parked)
    assert code == 0
    pool.wait_for("no processor left", lambda: not any(alive(p) for p in pids), 5)
    lane = pool.names.miner_queue(Phase.AP, Lane.CC, MINER)
    pool.wait_for("the job back in its queue", lambda: pool.ready(lane) == 1, 15)
    assert pool.ready(pool.names.poison_queue) == 0
    log = (pool.tmp / "dr.log").read_text()
    assert f"{job.job_id} attempt 1 handed back" in log
    assert pool.redis().get(pool.names.done_key(job.job_id, 1)) is None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_100_kb_processor_output_travels_by_reference_and_the_sector_finishes(
        pool: Pool) -> None:
    # Given pc2 run by a processor that prints 100 KB of outputs (every later job of the
    # sector carries them: inline, the c2 job would be over the 64 KiB message limit)
    pool.worker_from_config(
        "wb", 'data_dir = "data"\nsector_sizes = ["2KiB"]\nsimulate = 0.05\n'
        'heartbeat_interval = "0.5s"\ndrain_timeout = "2s"\n'
        f'[executors.pc2]\nkind = "external"\ncommand = ["{sys.executable}", "{FAULT}"]\n'
        'env = { FAULT = "big" }\n')
    pool.miner(MINER)
    pool.enqueue(MINER, 1, "cc")
    # Then the sector is done, pc2's outputs are stored once by reference, nothing parked
    [row] = pool.wait_finished([MINER], timeout=60)
    assert row["state"] == "done", row
    params = pool.record(MINER, row["sector"]).params
    ref = params["pc2"]
    assert set(ref) == {"$blob", "bytes"} and ref["bytes"] > 100_000
    stored = pool.redis().get(pool.names.blob_key(ref["$blob"]))
    assert stored is not None and json.loads(stored)["proof"] == "ab" * 50_000
    assert pool.ready(pool.names.poison_queue) == 0
