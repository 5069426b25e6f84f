"""sealpool-sim --real: seed 003's scenario at real scale on the real broker, its table
next to the simulation's, and the namespace gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def test_real_run_agrees_with_its_simulation(services: tuple[str, str]) -> None:
    amqp, redis_url = services
    env = {**os.environ, "SEALPOOL_AMQP_URL": amqp, "SEALPOOL_REDIS_URL": redis_url}
    proc = subprocess.run([str(BIN / "sealpool-sim"), "seed-003", "--real", "--json",
                           "--timeout", "110"], env=env, capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout)["runs"]
    sim, real = runs["sim pooled"], runs["real broker"]
    assert real["done"] == real["sectors"] == sim["sectors"] == 16
    print(json.dumps({"sim": sim["groups"], "real": real["groups"]}, indent=1))
    for s, r in zip(sim["groups"], real["groups"], strict=True):
        assert s["phases"] == r["phases"]
        # The bottleneck group (ap+pc1, 12-s pc1) within 3 points. The c1+c2+fin slots run
        # three 3-s phases per sector, each after a handoff (result, miner, publish,
        # claim; the chain step after c2 on the miner's 0.5-s tick): measured 92-94%
        # against the simulation's 100%, so a looser bound there.
        limit = 0.03 if s["phases"] == "ap+pc1" else 0.12
        assert abs(s["utilization_backlogged"] - r["utilization_backlogged"]) <= limit, (s, r)
    assert abs(sim["makespan_s"] - real["makespan_s"]) <= 0.1 * sim["makespan_s"]
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match="simreal-*", count=1000))
