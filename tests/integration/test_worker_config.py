"""A worker run from a config file: slots with their own phases, cores, temp directories
and executors; the effective config at start; bad configs refused with one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from broker_topology import PIPELINE

from .conftest import Pool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "deploy/processors/example.py"
CPUS = sorted(os.sched_getaffinity(0))


def test_a_config_file_gives_each_slot_its_phases_cores_dirs_and_executors(pool: Pool) -> None:
    # Given a worker whose config splits the pipeline over two slots on their own CPUs and
    # temp disks, with ap and pc2 run by the example external processor
    for d in ("nvme0", "nvme1", "sealed/wc"):
        (pool.tmp / d).mkdir(parents=True)
    pool.worker_from_config("wc", f"""
data_dir = "data"
sealed_dir = "sealed/{{name}}"
storage_group = "rack-a"
sector_sizes = ["2KiB"]
simulate = 0.05

[[slots]]
phases = ["ap", "pc1"]
cores = "{CPUS[0]}"
temp_dir = "nvme0"

[[slots]]
phases = "pc2,c1,c2,fin"
cores = [{CPUS[-1]}]
temp_dir = "nvme1"

[executors.ap]
kind = "external"
command = ["{sys.executable}", "{EXAMPLE}"]

[executors.pc2]
kind = "external"
command = ["{sys.executable}", "{EXAMPLE}"]
env = {{ API_TOKEN = "s3cret" }}
""")
    pool.miner("t01000")
    # When sectors run through it
    numbers = pool.enqueue("t01000", 2, "deal")
    rows = pool.wait_finished(["t01000"])
    # Then every phase ran once, each on the slot (and so the CPUs) configured for it
    for row in rows:
        assert row["state"] == "done", row
        assert [h["phase"] for h in row["history"] if h["outcome"] == "ok"] == [
            p.value for p in PIPELINE]
        params = pool.record("t01000", row["sector"]).params
        assert params["ap"]["processor"] == "example" and params["ap"]["cpus"] == [CPUS[0]]
        assert params["pc2"]["cpus"] == [CPUS[-1]]
        assert params["pc2"]["cuda_visible_devices"] is None  # no GPU configured
    # and the sector stayed in the temp dir of the slot that started it (pc2 on slot 1
    # found it in slot 0's), then fin moved it to this worker's sealed directory
    for n in numbers:
        sealed = pool.tmp / "sealed/wc/t01000" / str(n)
        assert sorted(p.name for p in sealed.iterdir()) == sorted(
            f"{p.value}.json" for p in PIPELINE)
        assert not (pool.tmp / "nvme0/t01000" / str(n)).exists()
    assert not (pool.tmp / "nvme1/t01000").exists()
    # and the start printed the effective config, secrets masked
    log = (pool.tmp / "wc.log").read_text()
    assert 'amqp_url = "amqp://guest:***@' in log and "s3cret" not in log
    assert 'storage_group = "rack-a"' in log and 'slots[1] = {"phases": ["c1"' in log


def refused(pool: Pool, toml: str, *flags: str) -> str:
    path = pool.tmp / "bad.toml"
    path.write_text(toml)
    proc = pool.cli("pool-worker", "run", "--config", str(path), *flags, check=False,
                    timeout=30)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0].removeprefix(f"error: {path}")


@pytest.mark.parametrize(("toml", "flags", "expected"), [
    ('name = "w"\nslots = 2\nslotz = 3\n', (), ":3: slotz: unknown key"),
    ('name = "w"\n[[slots]]\nphases = ["pc1"]\n[[slots]\n', (), ":4: not valid TOML"),
    ('[[slots]]\n[[slots]]\ntemp_dir = "nowhere"\n', (),
     ":3: slots[1].temp_dir: {tmp}/nowhere does not exist"),
    ('[[slots]]\ncores = "0-4095"\n', (), ":2: slots[0].cores: CPU "),
    ('[[slots]]\n\ngpu = 0\n', (), ":3: slots[0].gpu: "),
    ('name = "w"\n', ("--gpu", "0"), "--gpu: "),
    ('[executors.pc2]\nkind = "external"\ncommand = ["/bin/nonexistent-processor"]\n', (),
     ":3: executors.pc2.command: /bin/nonexistent-processor does not exist"),
])
def test_a_bad_config_refuses_to_start_naming_key_and_line(pool: Pool, toml: str,
                                                           flags: tuple[str, ...],
                                                           expected: str) -> None:
    line = refused(pool, f'data_dir = "data"\nsimulate = 0.1\n{toml}', *flags)
    # two lines are prepended above
    if expected.startswith(":"):
        n, rest = expected[1:].split(":", 1)
        expected = f":{int(n) + 2}:{rest}"
    else:
        line = line.removeprefix("error: ")
    assert line.startswith(expected.format(tmp=pool.tmp)), line
    if "gpu" in expected:  # no NVIDIA driver here; with one, index 0 exists and it starts
        assert "no NVIDIA driver" in line or "does not exist" in line
