"""Bad input gets one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DEAD_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


@pytest.mark.parametrize(("argv", "needle"), [
    (["miner-publisher", "enqueue", "--miner", "bob", "--count", "1", "--cc"], "not a miner id"),
    (["miner-publisher", "enqueue", "--miner", "t01000", "--count", "1", "--cc", "--size",
      "3KiB"], "unknown sector size"),
    (["miner-publisher", "enqueue", "--miner", "t01000", "--count", "0", "--cc"],
     "--count must be positive"),
    (["miner-publisher", "enqueue", "--miner", "t01000", "--count", "1"], "--deal or --cc"),
    (["miner-publisher", "enqueue", "--miner", "t01000", "--count", "1", "--cc",
      "--deadline", "soon"], "duration"),
    (["pool-worker", "run", "--phases", "pc1,pc9", "--simulate", "1"], "pc9"),
    (["pool-worker", "run", "--phases", "pc2"], "no executor for phase"),
    (["pool-worker", "run", "--name", "bad.name", "--simulate", "1"], "--name"),
    (["broker-topology", "show", "--namespace", "has space"], "namespace"),
])
def test_bad_input_is_one_line(argv: list[str], needle: str) -> None:
    proc = run(*argv, SEALPOOL_REDIS_URL=DEAD_REDIS, SEALPOOL_AMQP_URL=DEAD_AMQP)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr, proc.stderr
    # one error line (click adds its usage hint for flag errors)
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.strip() and not ln.startswith(("Usage:", "Try '"))]
    assert len(lines) == 1, proc.stderr


def test_unreachable_redis_is_named() -> None:
    proc = run("miner-publisher", "status", "--miner", "t01000", SEALPOOL_REDIS_URL=DEAD_REDIS)
    assert proc.returncode == 4 and "Redis" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_broker_is_named() -> None:
    proc = run("broker-topology", "declare", SEALPOOL_AMQP_URL=DEAD_AMQP)
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach RabbitMQ at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_writes_definitions(tmp_path: Path) -> None:
    import json

    out = tmp_path / "definitions.json"
    proc = run("broker-topology", "export", "--out", str(out), "--namespace", "exp",
               "--miner", "t01000")
    assert proc.returncode == 0, proc.stderr
    names = {q["name"] for q in json.loads(out.read_text())["queues"]}
    assert {"exp.q.pc1.urgent", "exp.q.pc1.deal.t01000", "exp.results.t01000"} <= names
    bad = run("broker-topology", "export", "--miner", "x.y")
    assert bad.returncode == 2 and "--miner" in bad.stderr


def test_pc1_memory_pool_size_is_checked_at_start() -> None:
    env = {"SEALPOOL_REDIS_URL": DEAD_REDIS, "SEALPOOL_AMQP_URL": DEAD_AMQP,
           "SEALPOOL_WORKER_SECTOR_SIZES": "8MiB"}
    bad = run("pool-worker", "run", "--phases", "pc1", "--slots", "2",
              MEM_POOL_SIZE="plenty", **env)
    assert bad.returncode == 2 and "MEM_POOL_SIZE='plenty' is not a size" in bad.stderr
    small = run("pool-worker", "run", "--phases", "pc1", "--slots", "2",
                MEM_POOL_SIZE="16MiB", **env)
    assert small.returncode == 2, small.stderr
    assert f"need at least (N+1)·S = {3 * 8 << 20}" in small.stderr
    assert "Traceback" not in bad.stderr + small.stderr
    # the worker config's pc1_pool_size wins over the environment, and is checked the same
    cfg = run("pool-worker", "run", "--phases", "pc1", "--slots", "2", MEM_POOL_SIZE="1GiB",
              SEALPOOL_WORKER_PC1_POOL_SIZE="20MiB", **env)
    assert cfg.returncode == 2, cfg.stderr
    assert f"pc1_pool_size is {20 << 20} bytes" in cfg.stderr
    unreadable = run("pool-worker", "run", "--phases", "pc1", "--slots", "2",
                     SEALPOOL_WORKER_PC1_POOL_SIZE="lots", **env)
    assert unreadable.returncode == 2
    assert "SEALPOOL_WORKER_PC1_POOL_SIZE: cannot read 'lots'" in unreadable.stderr


def test_a_broker_that_accepts_tcp_but_never_answers_is_one_line_naming_the_cause() -> None:
    """What a RabbitMQ out of file descriptors does: the TCP connection is accepted, the
    AMQP handshake never answered. The client gives up with the likely cause, not a hang."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # never a byte back
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        url = f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}/%2F"
        proc = run("broker-topology", "declare", SEALPOOL_AMQP_URL=url)
    finally:
        stop.set()
        t.join()
        for conn in held:
            conn.close()
        server.close()
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "out of file descriptors" in line, line
