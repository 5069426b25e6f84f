"""Integration fixtures: the real RabbitMQ and Redis, a fresh namespace per test, and the
real CLIs run as processes (so tests can kill them the way operators' machines die)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
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
from broker_topology.declare import delete
from miner_publisher.queries import sector_rows
from miner_publisher.store import Record, SectorStore

BIN = Path(sys.executable).parent
AMQP_URL = os.environ.get("SEALPOOL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("SEALPOOL_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port), 2).close()
        return True
    except OSError:
        return False


def _docker_engine() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[str, str]]:
    """(amqp_url, redis_url) of running servers: the configured ones, else containers when a
    Docker engine exists; otherwise skip locally and fail under CI=true."""
    if _reachable(AMQP_URL, 5672) and _reachable(REDIS_URL, 6379):
        yield AMQP_URL, REDIS_URL
        return
    if _docker_engine():
        from testcontainers.rabbitmq import RabbitMqContainer
        from testcontainers.redis import RedisContainer

        with RabbitMqContainer("rabbitmq:3.10") as rmq, RedisContainer("redis:7") as red:
            amqp = (f"amqp://guest:guest@{rmq.get_container_host_ip()}:"
                    f"{rmq.get_exposed_port(5672)}/%2F")
            red_url = f"redis://{red.get_container_host_ip()}:{red.get_exposed_port(6379)}/0"
            yield amqp, red_url
        return
    why = (f"RabbitMQ ({AMQP_URL}) or Redis ({REDIS_URL}) not reachable and no Docker engine; "
           "start them with deploy/local.sh services")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


@dataclass
class Pool:
    """One isolated pool: its own namespace, processes, data directory and logs."""

    settings: PoolSettings
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers: dict[str, frozenset[Phase]] = field(default_factory=dict)
    miners: set[str] = field(default_factory=set)

    @property
    def names(self) -> Names:
        return Names(self.settings.namespace)

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "SEALPOOL_AMQP_URL": s.amqp_url,
                "SEALPOOL_REDIS_URL": s.redis_url, "SEALPOOL_NAMESPACE": s.namespace,
                "SEALPOOL_AGING_DEAL": str(s.aging_deal), "SEALPOOL_AGING_CC": str(s.aging_cc),
                "SEALPOOL_LOCALITY_WAIT": str(s.locality_wait),
                "SEALPOOL_WORKER_QUEUE_EXPIRES": str(s.worker_queue_expires),
                "SEALPOOL_DELAY_BUCKETS": ",".join(map(str, s.delay_buckets)),
                "SEALPOOL_DELIVERY_LIMIT": str(s.delivery_limit),
                "SEALPOOL_HEARTBEAT": str(s.heartbeat),
                # The test Redis persists nothing (a throwaway pool), and each pool keeps
                # its miners' host state (generation, highest sector number) to itself.
                "SEALPOOL_MINER_ALLOW_VOLATILE_REDIS": "1",
                "SEALPOOL_MINER_STATE_DIR": str(self.tmp / "miner-state"),
                "PYTHONUNBUFFERED": "1"}

    def ready(self, queue: str) -> int:
        """Messages ready in `queue` now."""
        conn = connect_blocking(self.settings.amqp_url, "test-depth")
        try:
            return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
        finally:
            conn.close()

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, decode_responses=True)

    def start(self, key: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{key}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[key] = proc
        return proc

    def worker(self, name: str, *, simulate: float = 0.05, slots: int = 2,
               phases: str = "ap,pc1,pc2,c1,c2,fin", extra: list[str] | None = None,
               env: dict[str, str] | None = None, kernel: bool = False
               ) -> subprocess.Popen[bytes]:
        """A worker with simulated phases (timed by `simulate`); kernel=True runs ap and
        pc1 on the labeler_c kernel instead."""
        self.workers[name] = frozenset(Phase(p) for p in phases.split(","))
        builtin = [] if kernel else ["--simulate-builtin"]
        return self.start(name, [str(BIN / "pool-worker"), "run", "--name", name,
                                 "--slots", str(slots), "--phases", phases,
                                 "--simulate", str(simulate), "--idle-poll", "1",
                                 "--data-dir", str(self.tmp / "data"), *builtin,
                                 *(extra or [])], env)

    def worker_from_config(self, name: str, toml: str, *, phases: str = "ap,pc1,pc2,c1,c2,fin",
                           extra: list[str] | None = None, env: dict[str, str] | None = None,
                           wait: bool = True) -> Path:
        """A worker run with `--config` (the TOML is written next to the logs, with `name`
        added unless it has one; relative paths in it are relative to self.tmp). `phases`
        is what teardown cleans up. With `wait`, returns once its registry entry is there.
        Returns the config path (`pool-worker list --config PATH` finds the worker)."""
        path = self.tmp / f"{name}.toml"
        if not any(line.startswith("name =") for line in toml.splitlines()):
            toml = f'name = "{name}"\n{toml}'
        path.write_text(toml)
        self.workers[name] = frozenset(Phase(p) for p in phases.split(","))
        # simulated phases all take the configured time (ap and pc1 too, not the kernel)
        self.start(name, [str(BIN / "pool-worker"), "run", "--config", str(path),
                          "--idle-poll", "1", "--simulate-builtin", *(extra or [])], env)
        if wait:
            self.wait_for(f"worker {name} up", lambda: self.redis().exists(
                self.names.redis_key("worker", name)) == 1, timeout=30)
        return path

    def miner(self, miner: str, key: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.miners.add(miner)
        return self.start(key or f"miner-{miner}",
                          [str(BIN / "miner-publisher"), "run", "--miner", miner], env)

    def cli(self, tool: str, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BIN / tool), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def enqueue(self, miner: str, count: int, klass: str = "deal", *extra: str) -> list[int]:
        import json

        self.miners.add(miner)
        out = self.cli("miner-publisher", "enqueue", "--miner", miner, "--count", str(count),
                       f"--{klass}", "--json", *extra)
        return list(json.loads(out.stdout)["sectors"])

    def store(self, miner: str) -> SectorStore:
        return SectorStore(self.redis(), self.names, miner)

    def record(self, miner: str, number: int) -> Record:
        """The stored sector, which the test expects to be there."""
        rec = self.store(miner).get(number)
        assert rec is not None, f"sector {number} of {miner} is not in the store"
        return rec

    def rows(self, miner: str) -> list[dict[str, Any]]:
        return sector_rows(self.store(miner))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace")
                                                       .splitlines()[-25:])
                         for p in sorted(self.tmp.glob("*.log")))

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def wait_finished(self, miners: list[str], timeout: float = 90) -> list[dict[str, Any]]:
        def finished() -> bool:
            rows = [r for m in miners for r in self.rows(m)]
            return bool(rows) and all(r["state"] in ("done", "failed") for r in rows)

        self.wait_for(f"sectors of {miners} to finish", finished, timeout)
        return [r for m in miners for r in self.rows(m)]

    def slot_jobs(self, worker: str) -> list[str]:
        """Jobs the worker's registry entry says are running (needs a short
        SEALPOOL_WORKER_HEARTBEAT_INTERVAL to be current)."""
        import json

        raw = self.redis().get(self.names.redis_key("worker", worker))
        return [s["job"] for s in json.loads(raw)["slots"] if s["job"]] if raw else []

    def stats(self, miner: str) -> dict[str, int]:
        return self.store(miner).stats()

    def stop(self, key: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs.pop(key)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        return proc.wait(timeout)

    def teardown(self) -> None:
        for key in list(self.procs):
            proc = self.procs[key]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        stuck = []
        for key, proc in list(self.procs.items()):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                stuck.append(key)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()
        topo = pool_topology(self.settings)
        for name, phases in self.workers.items():
            topo += worker_topology(self.settings, name, phases)
        for m in self.miners:
            topo += miner_topology(self.settings, m)
        conn = connect_blocking(self.settings.amqp_url, "test-teardown")
        try:
            delete(conn, topo)
        finally:
            conn.close()
        r = self.redis()
        keys = list(r.scan_iter(match=f"{self.settings.namespace}:*", count=1000))
        if keys:
            r.delete(*keys)
        assert not stuck, f"processes ignored SIGTERM for 20 s: {stuck}\n{self.logs()}"


#: The `make_pool` fixture: make_pool(**PoolSettings overrides) -> Pool.
MakePool = Callable[..., Pool]


@pytest.fixture
def make_pool(services: tuple[str, str], tmp_path: Path) -> Iterator[MakePool]:
    """make_pool(**PoolSettings overrides) -> Pool with a fresh namespace."""
    made: list[Pool] = []
    amqp, red = services

    def make(**overrides: Any) -> Pool:
        ns = f"t{uuid.uuid4().hex[:10]}"
        # Short-lived home queues: any a test leaves behind (a storage group's, say) are
        # removed by the broker itself.
        settings = PoolSettings(**{"amqp_url": amqp, "redis_url": red, "namespace": ns,
                                   "locality_wait": 60, "worker_queue_expires": 300,
                                   **overrides})
        pool = Pool(settings, tmp_path / ns)
        pool.tmp.mkdir()
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.teardown()


@pytest.fixture
def pool(make_pool: MakePool) -> Pool:
    return make_pool()
