"""End-to-end throughput of sealpool against Celery on the same broker, in one run (not a test).

    .venv/bin/pip install -e '.[bench]'      # Celery, and py-spy for --profile
    .venv/bin/python tests/bench/bench_throughput.py [--sectors 200] [--rounds 3]
                                                     [--profile [--gil]] [--no-celery]

sealpool: one `miner-publisher run` and 2 `pool-worker run` × 4 slots with 0-s simulated
phases (`--simulate 0 --simulate-builtin`), chain waits 0, in a fresh namespace on the real
RabbitMQ and Redis (deleted afterwards, also on failure). A round enqueues N CC sectors of
2KiB (6 phase jobs each) with `miner-publisher enqueue`; the time runs from their creation
(after the CLI's start-up) to the last sector's done (the miner's clock, this host).

Celery (the `bench` extra): a prefork worker with concurrency 2, late acks, prefetch
multiplier 1, `confirm_publish`, one quorum queue (celery_chain.py), in a vhost of its own
when `rabbitmqctl` is at hand (deleted afterwards). A round publishes N chains of 6 no-op
tasks; the time runs from the first publish to the last chain's end.

Both run warm (processes up, one small untimed round first), rounds alternate, and medians
are printed with the ratio. CPU per job comes from each process's CPU time over the round
(the broker's and Redis's too); each sealpool round also gives the median time a phase job
runs and the time from a result to the next phase's start. With --profile, one more
sealpool round runs under py-spy on the miner and one worker: ms per job by thread and by
function (--gil: only the thread holding the GIL, i.e. Python CPU).

Measured on the 2-core development box (shared, noisy), 200 sectors, 3 rounds: at first
sealpool 74.7 jobs/s against Celery's 553 (0.14); after the round-trip and claim-pass work,
208.5 against 707.2 (0.29; per round 0.29-0.32). CPU per job then: miner 1.8 ms, workers
3.4, broker 1.9, Redis 0.5, against Celery's worker 1.0 and broker 0.7."""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import redis

from broker_topology import Names, PoolSettings, connect_blocking, miner_topology, pool_topology
from broker_topology.declare import delete
from broker_topology.messages import PIPELINE
from broker_topology.topology import worker_topology
from miner_publisher.store import SectorStore

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
AMQP_URL = os.environ.get("SEALPOOL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("SEALPOOL_REDIS_URL", "redis://127.0.0.1:6379/0")
MINER = "t01000"
JOBS_PER_SECTOR = len(PIPELINE)


@dataclass
class Round:
    jobs: int
    seconds: float
    #: CPU ms per job, by process group.
    cpu_ms: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


class Procs:
    """Processes this benchmark started (each in its own session), stopped by their ids."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, key: str, argv: list[str], env: dict[str, str],
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{key}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[key] = proc
        return proc

    def cpu_s(self, key: str) -> float:
        """CPU seconds of the process and its children (prefork pool) so far."""
        proc = psutil.Process(self.procs[key].pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()


def server_cpu() -> dict[str, Callable[[], float]]:
    """CPU-seconds readers for the broker (beam.smp) and Redis, where this host has them."""
    found: dict[str, Callable[[], float]] = {}
    with contextlib.suppress(Exception):
        pid = int(redis.Redis.from_url(REDIS_URL).info("server")["process_id"])
        found["redis"] = _cpu_reader(psutil.Process(pid))
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "beam.smp":
            found["broker"] = _cpu_reader(p)
            break
    return found


def _cpu_reader(proc: psutil.Process) -> Callable[[], float]:
    def read() -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)
    return read


def measure(what: dict[str, Callable[[], float]], jobs: int,
            run: Callable[[], float]) -> Round:
    before = {k: f() for k, f in what.items()}
    seconds = run()
    after = {k: f() for k, f in what.items()}
    return Round(jobs, seconds, {k: (after[k] - before[k]) * 1000 / jobs for k in what})


# -- sealpool ----------------------------------------------------------------------------------
class Sealpool:
    def __init__(self, tmp: Path, procs: Procs, workers: int, slots: int) -> None:
        self.namespace = f"bench{uuid.uuid4().hex[:10]}"
        self.settings = PoolSettings(amqp_url=AMQP_URL, redis_url=REDIS_URL,
                                     namespace=self.namespace)
        self.names = Names(self.namespace)
        self.tmp = tmp
        self.procs = procs
        self.workers = [f"bw{i}" for i in range(1, workers + 1)]
        self.slots = slots
        self.r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.store = SectorStore(self.r, self.names, MINER)
        #: Per round: median ms running, median and p90 ms between phases.
        self.gaps: list[tuple[float, float, float]] = []
        self.env = {**os.environ, "SEALPOOL_AMQP_URL": AMQP_URL, "SEALPOOL_REDIS_URL": REDIS_URL,
                    "SEALPOOL_NAMESPACE": self.namespace,
                    # This Redis persists nothing: a throwaway pool, host state kept here.
                    "SEALPOOL_MINER_ALLOW_VOLATILE_REDIS": "1",
                    "SEALPOOL_MINER_STATE_DIR": str(tmp / "miner-state"),
                    "SEALPOOL_MINER_CHAIN_PRECOMMIT": "0", "SEALPOOL_MINER_CHAIN_SEED": "0",
                    "SEALPOOL_MINER_CHAIN_COMMIT": "0", "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        self.procs.start("miner", [str(BIN / "miner-publisher"), "run", "--miner", MINER],
                         self.env)
        for name in self.workers:
            self.procs.start(name, [str(BIN / "pool-worker"), "run", "--name", name,
                                    "--slots", str(self.slots),
                                    "--phases", ",".join(p.value for p in PIPELINE),
                                    "--simulate", "0", "--simulate-builtin",
                                    "--data-dir", str(self.tmp / "data" / name)], self.env)
        wait_for("sealpool workers registered", lambda: all(
            self.r.exists(self.names.redis_key("worker", w)) for w in self.workers), 60)

    def cpu(self) -> dict[str, Callable[[], float]]:
        return {"miner": lambda: self.procs.cpu_s("miner"),
                "workers": lambda: sum(self.procs.cpu_s(w) for w in self.workers)}

    def round(self, sectors: int) -> float:
        """Enqueue `sectors` CC sectors (`miner-publisher enqueue`); seconds from their
        creation (after the CLI's start-up) until the last is done."""
        out = subprocess.run([str(BIN / "miner-publisher"), "enqueue", "--miner", MINER,
                              "--count", str(sectors), "--cc", "--size", "2KiB", "--json"],
                             env=self.env, capture_output=True, text=True, check=True)
        numbers = set(json.loads(out.stdout)["sectors"])

        def idle() -> bool:
            pending, inflight, _ = self.store.counts()
            return pending == 0 and inflight == 0

        wait_for("sealpool sectors done", idle, 600, every=0.05)
        done = [r for r in self.store.all() if r.sector.number in numbers]
        failed = [r.sector.number for r in done if r.sector.state.value != "done"]
        if failed or len(done) != len(numbers):
            raise RuntimeError(f"sealpool sectors not done: {failed[:10]}")
        self.timeline(sorted(numbers))
        return max(r.updated_at for r in done) - min(r.created_at for r in done)

    def timeline(self, numbers: list[int]) -> None:
        """Where a sector's time goes: running (worker start to finish) and between phases
        (a result's finish to the next phase's start: result to miner, next job out,
        claimed), medians over the round, kept for the report."""
        run, between = [], []
        for history in self.store.histories(numbers).values():
            ok = [h for h in history if h["outcome"] == "ok"]
            run += [h["finished_at"] - h["started_at"] for h in ok]
            between += [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(ok)]
        self.gaps.append((statistics.median(run) * 1000, statistics.median(between) * 1000,
                          statistics.quantiles(between, n=10)[-1] * 1000))

    def cleanup(self) -> None:
        topo = pool_topology(self.settings) + miner_topology(self.settings, MINER)
        for name in self.workers:
            topo += worker_topology(self.settings, name, frozenset(PIPELINE))
        with contextlib.suppress(Exception):
            conn = connect_blocking(AMQP_URL, "bench-cleanup")
            try:
                delete(conn, topo)
            finally:
                conn.close()
        keys = list(self.r.scan_iter(match=f"{self.namespace}:*", count=1000))
        for i in range(0, len(keys), 500):
            self.r.delete(*keys[i:i + 500])


# -- Celery ------------------------------------------------------------------------------------
class CeleryPool:
    def __init__(self, procs: Procs, concurrency: int) -> None:
        self.procs = procs
        self.concurrency = concurrency
        self.tag = f"bench{uuid.uuid4().hex[:10]}"
        self.vhost = self.tag if shutil.which("rabbitmqctl") else None
        base = AMQP_URL.rsplit("/", 1)[0]
        self.broker = f"{base}/{quote(self.vhost, safe='')}" if self.vhost else AMQP_URL
        self.queue = f"{self.tag}-chain"
        self.r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.rounds = 0
        self.env = {**os.environ, "BENCH_CELERY_BROKER": self.broker,
                    "BENCH_CELERY_QUEUE": self.queue, "BENCH_REDIS_URL": REDIS_URL,
                    "PYTHONPATH": str(HERE)}
        os.environ.update({k: self.env[k] for k in ("BENCH_CELERY_BROKER",
                                                    "BENCH_CELERY_QUEUE")})
        self.app: Any = None

    def start(self) -> None:
        if self.vhost:
            _rabbitmqctl("add_vhost", self.vhost)
            _rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.procs.start("celery", [str(BIN / "celery"), "-A", "celery_chain", "worker",
                                    "-P", "prefork", "-c", str(self.concurrency),
                                    "-Q", self.queue, "--without-gossip", "--without-mingle",
                                    "--without-heartbeat", "-n", f"{self.tag}@%h"],
                         self.env, cwd=HERE)
        sys.path.insert(0, str(HERE))
        import celery_chain  # the bench extra; the queue name comes from the environment

        self.app = celery_chain

    def cpu(self) -> dict[str, Callable[[], float]]:
        return {"worker": lambda: self.procs.cpu_s("celery")}

    def round(self, sectors: int) -> float:
        self.rounds += 1
        key = f"{self.tag}:r{self.rounds}"
        start = time.time()
        for n in range(sectors):
            self.app.sector_chain(key, n).apply_async()
        wait_for("celery chains done",
                 lambda: int(self.r.get(f"{key}:done") or 0) >= sectors, 600, every=0.05)
        return float(self.r.get(f"{key}:last") or 0) - start

    def cleanup(self) -> None:
        keys = list(self.r.scan_iter(match=f"{self.tag}:*", count=1000))
        if keys:
            self.r.delete(*keys)
        if self.vhost:
            _rabbitmqctl("delete_vhost", self.vhost)
            return
        with contextlib.suppress(Exception):
            conn = connect_blocking(AMQP_URL, "bench-cleanup")
            try:
                ch = conn.channel()
                ch.queue_delete(self.queue)
                ch.exchange_delete(self.queue)
            finally:
                conn.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


# -- profile -----------------------------------------------------------------------------------
def profile_round(pool: Sealpool, sectors: int, out: Path, gil: bool, rate: int = 250) -> None:
    """One more sealpool round with py-spy sampling the miner and one worker: ms per job, by
    thread and by function (inclusive). Samples are of threads that are not idle (py-spy
    counts some waits as busy), or with `gil` of the thread holding the GIL (Python CPU)."""
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    targets = {"miner": "miner", pool.workers[0]: "worker"}
    spies = {key: (out / f"{key}.pyspy.txt", subprocess.Popen(
        [py_spy, "record", "-p", str(pool.procs.procs[key].pid), "-r", str(rate), "--threads",
         *(["--gil"] if gil else []),
         "-f", "raw", "-o", str(out / f"{key}.pyspy.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) for key in targets}
    time.sleep(1.0)  # attached
    try:
        pool.round(sectors)
    finally:
        for _, spy in spies.values():
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    per = 1000 / rate / (sectors * JOBS_PER_SECTOR)
    for key, (raw, _) in spies.items():
        threads: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            thread, *frames = stack.split(";")
            names = [f.split(" (")[0] + " " + _short(f) for f in frames]
            threads[_thread_name(thread, names)] += n
            for f in set(names):
                inclusive[f] += n
        print(f"\n{targets[key]} {key} under py-spy ({rate} Hz, "
              f"{'holding the GIL' if gil else 'not idle'}), ms per job:")
        print("  by thread: " + ", ".join(f"{t} {n * per:.2f}" for t, n in
                                          threads.most_common(8)))
        for f, n in inclusive.most_common(30):
            if n * per >= 0.05:
                print(f"    {n * per:7.3f}  {f}")


def _thread_name(thread: str, frames: list[str]) -> str:
    """The Python thread of a py-spy --threads stack, by its entry point."""
    for f in frames:
        for mark, name in (("MinerService.run", "service"), ("Link._run", "amqp-io"),
                           ("Runner._slot_loop", "slot"), ("Keeper", "keeper"),
                           ("ControlServer", "control")):
            if mark in f:
                return name
    return thread.split(" ")[0].strip('"') or "other"


def _short(frame: str) -> str:
    """`(path:line)` of a py-spy frame, with the path cut to its package."""
    where = frame.rpartition(" (")[2].rstrip(")")
    path, _, _ = where.rpartition(":")
    parts = Path(path).parts
    for anchor in ("site-packages", "main", "lib"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor):])
    return Path(path).name


# -- helpers -----------------------------------------------------------------------------------
def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             every: float = 0.2) -> None:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if predicate():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def cleaned(*things: Sealpool | CeleryPool) -> Iterator[None]:
    try:
        yield
    finally:
        for t in things:
            try:
                t.cleanup()
            except Exception as exc:  # the others are still cleaned up
                print(f"cleanup of {type(t).__name__} failed: {exc}", file=sys.stderr)


def report(name: str, rounds: list[Round]) -> float:
    rates = [r.rate for r in rounds]
    med = statistics.median(rates)
    cpu = {k: statistics.median(r.cpu_ms[k] for r in rounds) for k in rounds[0].cpu_ms}
    cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
    print(f"{name:9} {med:8.1f} jobs/s  ({min(rates):.1f}-{max(rates):.1f}; "
          f"{', '.join(f'{x:.1f}' for x in rates)})  CPU ms/job: {cpu_text}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sectors", type=int, default=200, help="per round (6 jobs each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=2, help="Celery prefork processes")
    ap.add_argument("--profile", action="store_true", help="py-spy the miner (extra round)")
    ap.add_argument("--gil", action="store_true", help="--profile: only GIL holders (CPU)")
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    procs = Procs(tmp)
    sp = Sealpool(tmp, procs, args.workers, args.slots)
    cel = None if args.no_celery else CeleryPool(procs, args.concurrency)
    servers = server_cpu()
    ok = False
    try:
        with cleaned(*(x for x in (sp, cel) if x is not None)):
            try:
                sp.start()
                if cel is not None:
                    cel.start()
                sp.round(8)  # warm: connections, shares, the workers' queues
                if cel is not None:
                    cel.round(8)
                ours: list[Round] = []
                theirs: list[Round] = []
                jobs = args.sectors * JOBS_PER_SECTOR
                for i in range(args.rounds):
                    pair: list[tuple[Sealpool | CeleryPool, list[Round]]] = [(sp, ours)]
                    if cel is not None:
                        pair.append((cel, theirs))
                    if i % 2:
                        pair.reverse()
                    for system, into in pair:
                        into.append(measure({**system.cpu(), **servers}, jobs,
                                            functools.partial(system.round, args.sectors)))
                        print(f"round {i + 1} {'sealpool' if system is sp else 'celery'}: "
                              f"{into[-1].rate:.1f} jobs/s", flush=True)
                print(f"\n{args.sectors} sectors x {JOBS_PER_SECTOR} phase jobs per round, "
                      f"median of {args.rounds} alternating rounds")
                print(f"sealpool: {args.workers} workers x {args.slots} slots, 1 miner; "
                      f"celery: prefork c={args.concurrency}, acks_late, confirm_publish, "
                      "quorum queue")
                ours_med = report("sealpool", ours)
                gaps = sp.gaps[1:]  # not the warm-up round
                run_ms, gap_ms, p90_ms = (statistics.median(g[i] for g in gaps) for i in range(3))
                print(f"          per phase job: running {run_ms:.1f} ms, from a result to the "
                      f"next phase's start {gap_ms:.1f} ms (p90 {p90_ms:.1f})")
                if theirs:
                    theirs_med = report("celery", theirs)
                    ratios = [a.rate / b.rate for a, b in zip(ours, theirs, strict=True)]
                    print(f"ratio sealpool/celery: {ours_med / theirs_med:.2f} of the medians "
                          f"(per round {', '.join(f'{x:.2f}' for x in ratios)}); target >= 1")
                if args.profile:
                    profile_round(sp, args.sectors, tmp, args.gil)
                ok = True
            finally:
                procs.stop_all()
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    main()
