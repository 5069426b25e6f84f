"""Faults the kernel must survive: damaged parent caches, a job through the wrong pool, and
pool memory that must go back to the OS. Crash scenarios run in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import labeler_c
from labeler_c import LayerPool
from labeler_c._ffi import ffi

ROOT = Path(__file__).resolve().parents[2]


def run_child(*scenarios: str, cache_dir: Path) -> str:
    env = {**os.environ, labeler_c._cache.ENV_CACHE_DIR: str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "tests.kernel.fault_child", *scenarios],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode < 0:
        pytest.fail(f"child killed by {signal.Signals(-proc.returncode).name}:\n{proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_damaged_cache_rows_are_errors_for_every_implementation_and_path(
        parent_cache_dir: Path) -> None:
    out = run_child("rows", cache_dir=parent_cache_dir)
    for impl in labeler_c.available_implementations():
        assert f"ok rows {impl}" in out


def test_random_out_of_range_indices_are_errors_never_crashes(parent_cache_dir: Path) -> None:
    assert "ok random damage" in run_child("random", cache_dir=parent_cache_dir)


def test_a_job_through_the_wrong_pool_is_refused(parent_cache_dir: Path) -> None:
    assert "ok wrong pool" in run_child("wrong-pool", cache_dir=parent_cache_dir)


def mapping_rss(address: int) -> int:
    """Resident bytes of the mapping that holds ``address`` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no mapping holds {address:#x}")


def fill_and_return(pool: LayerPool) -> tuple[int, int]:
    """Lend every block as two layers of one job, write them all, give them back: the
    pool mapping's RSS at the peak and after."""
    base = int(ffi.cast("uintptr_t", pool.pointer(0)))
    job = pool.join(1, pool.capacity // 2)
    for _ in range(2):
        pool.grow(job, job.remaining)
        for block in job.cur:
            pool.view(block)[:] = b"\x5a" * pool.block_bytes
        pool.finish_layer(job)
    pool.grow(job, job.remaining)
    for block in job.cur:
        pool.view(block)[:] = b"\xa5" * pool.block_bytes
    peak = mapping_rss(base)
    pool.leave(job)
    return peak, mapping_rss(base)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_returned_blocks_go_back_to_the_os_above_the_watermark() -> None:
    size, idle = 64 << 20, 4 << 20
    with LayerPool(size, block_bytes=1 << 20, idle_bytes=idle) as pool:
        peak, after = fill_and_return(pool)
    assert peak >= size * 0.9, peak
    # the watermark stays (one huge page of rounding at most), the peak does not
    assert after <= idle + (2 << 20), after
    with LayerPool(size, block_bytes=1 << 20, idle_bytes=size) as pool:  # control
        peak, after = fill_and_return(pool)
    assert after >= size * 0.9, (peak, after)


def test_labels_are_exact_when_pool_blocks_are_dropped_and_lent_again() -> None:
    porep, nodes, api = bytes([4] * 32), 1 << 12, "1.1.0"
    replicas = [bytes([i + 1] * 32) for i in range(3)]
    with LayerPool(5 * nodes * 32, block_bytes=8 << 10, idle_bytes=0) as pool:
        for _ in range(2):
            got = [labeler_c.label_layers(r, porep, nodes, 3, api, pool=pool) for r in replicas]
    assert got == [labeler_c.label_layers(r, porep, nodes, 3, api) for r in replicas]
