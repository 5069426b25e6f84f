"""RabbitMQ and Redis restarted under a running pool: everything reconnects, nothing lost."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MakePool, Pool
from .test_failures import assert_each_phase_accepted_once

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{tool} is needed for this test")
        pytest.skip(f"{tool} not installed")
    return path


def busy(pool: Pool) -> None:
    """Two workers, a miner, and sectors past ap, with phases that take a while."""
    for w in ("wa", "wb"):
        pool.worker(w, simulate=0.7, slots=2)
    pool.miner("t01000")
    pool.enqueue("t01000", 4, "deal")
    pool.wait_for("work in flight", lambda: any(
        r["phase"] not in ("ap",) for r in pool.rows("t01000")), 60)


def test_rabbitmq_restart_mid_run_loses_nothing(pool: Pool) -> None:
    ctl = _need("rabbitmqctl")
    # Given a pool busy with sectors whose phases take a while
    busy(pool)
    # When the broker application stops and starts again (queues are durable quorum queues)
    subprocess.run([ctl, "stop_app"], check=True, capture_output=True, timeout=120)
    time.sleep(3)
    subprocess.run([ctl, "start_app"], check=True, capture_output=True, timeout=120)
    subprocess.run([ctl, "await_startup"], check=True, capture_output=True, timeout=120)
    # Then workers and miner reconnect, jobs that ran meanwhile report, and all finish once
    rows = pool.wait_finished(["t01000"], timeout=180)
    assert_each_phase_accepted_once(rows)
    for key in ("wa", "wb", "miner-t01000"):
        assert pool.procs[key].poll() is None
    assert "reconnecting" in (pool.tmp / "miner-t01000.log").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server owned by the test: its own port, append-only file on."""

    def __init__(self, tmp: Path) -> None:
        self.binary = _need("redis-server")
        self.port = _free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        limit = time.monotonic() + 20
        while time.monotonic() < limit:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("test redis did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    r.stop()


def test_redis_restart_mid_run_loses_nothing(own_redis: OwnRedis, make_pool: MakePool) -> None:
    pool: Pool = make_pool(redis_url=own_redis.url)
    busy(pool)
    # When Redis goes away for a few seconds and comes back with its append-only file
    own_redis.stop()
    time.sleep(4)
    own_redis.start()
    # Then every process waited it out and every sector finished exactly once
    rows = pool.wait_finished(["t01000"], timeout=180)
    assert_each_phase_accepted_once(rows)
    for key in ("wa", "wb", "miner-t01000"):
        assert pool.procs[key].poll() is None
