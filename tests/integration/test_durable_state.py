"""Durable state on a real Redis that persists nothing: `run` refuses it without the
operator's flag, and with the flag a restart is detected, not silently numbered over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
import redis

from broker_topology import connect_blocking
from broker_topology.messages import Phase, job_id
from miner_publisher.durable import ALLOW_VOLATILE_ENV, EXIT_REDIS_WIPED

from .conftest import BIN, Pool

pytestmark = pytest.mark.integration
M = "t01000"


class PrivateRedis:
    """A redis-server of our own on a free port, started `--save "" --appendonly no`."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        limit = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > limit:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """What a reboot does to a Redis without persistence: every key is gone."""
        self.stop()
        self.start()


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        why = "redis-server is not installed (deploy/local.sh installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def miner_cli(pool: Pool, *args: str, env: dict[str, str] | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "miner-publisher"), *args], env=env or pool.env,
                          capture_output=True, text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_run_refuses_a_redis_that_persists_nothing_without_the_flag(
        volatile_redis: PrivateRedis, make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(redis_url=volatile_redis.url)
    env = {k: v for k, v in pool.env.items() if k != ALLOW_VOLATILE_ENV}
    proc = miner_cli(pool, "run", "--miner", M, env=env)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "persists nothing" in line and "--allow-volatile-redis" in line


def publish_result(pool: Pool, sector: int, epoch: int) -> None:
    body = {"schema_version": 1, "job_id": job_id(M, sector, Phase.AP), "miner": M,
            "sector": sector, "phase": "ap", "attempt": 1, "worker": "w1",
            "started_at": time.time() - 1, "finished_at": time.time(), "outcome": "ok",
            "epoch": epoch}
    conn = connect_blocking(pool.settings.amqp_url, "test-stale-result")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(pool.names.results, M, json.dumps(body).encode(),
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()


def test_a_redis_restart_stops_the_miner_and_numbers_are_never_reused(
        volatile_redis: PrivateRedis, make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(redis_url=volatile_redis.url)
    log = pool.tmp / "miner-t01000.log"
    miner = pool.miner(M)
    pool.wait_for("miner up", lambda: "running" in log.read_text())
    assert pool.enqueue(M, 2, "cc") == [1, 2]
    # A worker was granted sector 1's ap (epoch 1) before the restart.
    r = pool.redis()
    r.incr(pool.names.epoch_key(job_id(M, 1, Phase.AP), 1))
    # When Redis restarts with nothing kept
    volatile_redis.restart()
    # Then the running miner stops with one line and its own exit status
    assert miner.wait(30) == EXIT_REDIS_WIPED
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("error: Redis has no generation marker") and "recover" in last
    # and a fresh run or enqueue refuses instead of numbering sectors from 1 again
    for args in (["run", "--miner", M], ["enqueue", "--miner", M, "--count", "1", "--cc"]):
        proc = miner_cli(pool, *args)
        assert proc.returncode == EXIT_REDIS_WIPED
        assert "was wiped" in one_line(proc) and "recover --miner t01000" in proc.stderr
    # After recover, new sectors are numbered above the old ones
    out = miner_cli(pool, "recover", "--miner", M)
    assert out.returncode == 0 and "numbered from 3" in out.stdout
    assert pool.enqueue(M, 1, "cc") == [3]
    # and a stale result for the old sector 1 is accepted by nothing
    pool.miner(M, key="miner-again")
    again = pool.tmp / "miner-again.log"
    pool.wait_for("miner up again", lambda: "running" in again.read_text())
    publish_result(pool, 1, epoch=1)
    pool.wait_for("stale result dropped",
                  lambda: pool.stats(M).get("stale_results", 0) == 1)
    assert [(row["sector"], row["state"], row["phase"]) for row in pool.rows(M)] == [
        (3, "queued", "ap")]
