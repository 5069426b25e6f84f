"""Dispatch benchmark: idle polling cost and dispatch latency of sealpool workers on the
real broker, printed next to the pull-loop and Celery figures measured on this broker in
research/celery-baseline.md. Not a test: run it, read the table.

    .venv/bin/python tests/bench/bench_dispatch.py [--workers 50] [--idle-s 30] [--jobs 40]

Idle cost: N worker processes (one slot each, every phase) sit idle for --idle-s seconds;
the broker's CPU (beam.smp utime+stime from /proc) over that window, minus the same window
with no workers, is their polling cost. Dispatch latency: jobs enqueued one at a time
(paced, no backlog); latency = the ap's start on a worker minus the job's issue time."""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from broker_topology import (
    Names,
    Phase,
    PoolSettings,
    connect_blocking,
    miner_topology,
    pool_topology,
    worker_topology,
)
from broker_topology.declare import declare, delete
from broker_topology.link import Link
from broker_topology.messages import SectorClass
from miner_publisher.admission import admit
from miner_publisher.fairness import Fairness
from miner_publisher.publisher import Publisher
from miner_publisher.queries import sector_rows
from miner_publisher.store import SectorStore

BIN = Path(sys.executable).parent
#: From research/celery-baseline.md (RabbitMQ 3.10.8 on this kind of machine).
BASELINE = {
    "naive pull loop, 50 pollers x 4 QQs @1s: broker CPU % of a core": 12.8,
    "naive pull loop (idle 1 s) paced dispatch p50 / p99 ms": (378, 992),
    "Celery quorum (push) paced dispatch p50 / p99 ms": (6.1, 12.3),
}
TICKS = os.sysconf("SC_CLK_TCK")


def beam_pid() -> int:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp":
                    return int(pid)
            except OSError:
                continue
    raise SystemExit("no beam.smp process found (is RabbitMQ running here?)")


def beam_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_percent(pid: int, seconds: float) -> float:
    c0, t0 = beam_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (beam_cpu_s(pid) - c0) / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument("--idle-s", type=float, default=30)
    ap.add_argument("--jobs", type=int, default=40)
    args = ap.parse_args()
    ns = f"bench{uuid.uuid4().hex[:8]}"
    settings = PoolSettings(namespace=ns)
    env = {**os.environ, "SEALPOOL_NAMESPACE": ns, "SEALPOOL_WORKER_HEARTBEAT_INTERVAL": "5"}
    pid = beam_pid()
    conn = connect_blocking(settings.amqp_url, "bench")
    declare(conn, pool_topology(settings))
    conn.close()  # idle for minutes otherwise: heartbeats would drop it
    tmp = Path(tempfile.mkdtemp(prefix="sealpool-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base = cpu_percent(pid, args.idle_s / 2)
        miner = subprocess.Popen([str(BIN / "miner-publisher"), "run", "--miner", "t01000"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(miner)
        for i in range(args.workers):
            procs.append(subprocess.Popen(
                [str(BIN / "pool-worker"), "run", "--name", f"b{i}", "--slots", "1",
                 "--simulate", "0", "--simulate-builtin", "--data-dir", str(tmp)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(max(10.0, args.workers * 0.4))  # all connected and idle
        idle = cpu_percent(pid, args.idle_s) - base
        store = SectorStore(redis.Redis.from_url(settings.redis_url, decode_responses=True),
                            Names(ns), "t01000")
        # Publish one sector at a time, in this process, as `miner-publisher run` admits
        # them: latency = the ap's start on a worker - the moment before the publish.
        names = Names(ns)
        link = Link(settings.amqp_url, name="bench").start(wait_s=10)
        fairness = Fairness(store.r, names, "t01000", 1.0, args.workers)
        publisher = Publisher(names, store, settings.delay_buckets)
        published: dict[int, float] = {}
        for _ in range(args.jobs):
            [rec] = store.create(1, SectorClass.CC, 2048, time.time() + 86400, {}, time.time())
            published[rec.sector.number] = time.time()
            admit(store, fairness, publisher, link)
            time.sleep(0.5)
        link.stop()
        time.sleep(3)
        lat = []
        for row in sector_rows(store):
            ap_runs = [h for h in row["history"] if h["phase"] == "ap"]
            if ap_runs and row["sector"] in published:
                lat.append(1000 * (ap_runs[0]["started_at"] - published[row["sector"]]))
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"{'measure':58} {'sealpool':>14} {'baseline':>14}")
        print(f"{'idle broker CPU, % of a core, ' + str(args.workers) + ' idle workers':58} "
              f"{idle:14.1f} {BASELINE[next(iter(BASELINE))]:>14}")
        print(f"{'idle broker CPU per idle worker, % of a core':58} "
              f"{idle / args.workers:14.3f} {12.8 / 50:14.3f}")
        print(f"{'paced dispatch p50 / p99 ms (enqueue -> ap start)':58} "
              f"{p50:7.1f}/{p99:6.1f}   pull 378/992, Celery-QQ 6.1/12.3")
        print(f"(n={len(lat)} jobs, {args.workers} idle workers; targets: p99 <= 100 ms, "
              "idle <= 5 % of a core)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        topo = pool_topology(settings) + miner_topology(settings, "t01000")
        for i in range(args.workers):
            topo += worker_topology(settings, f"b{i}", frozenset(Phase))
        conn = connect_blocking(settings.amqp_url, "bench")
        delete(conn, topo)
        conn.close()
        r = redis.Redis.from_url(settings.redis_url)
        keys = list(r.scan_iter(match=f"{ns}:*"))
        if keys:
            r.delete(*keys)


if __name__ == "__main__":
    main()
