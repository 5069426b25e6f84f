"""A damaged parent cache in a real worker: pc1 fails with CorruptParentCache, the worker
process lives on, and the sector (and the next one) still seal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import labeler_c

from .conftest import Pool

pytestmark = pytest.mark.integration
SIZE, API = 2048, "1.1.0"  # the worker's default api version


def damage_in_place(path: Path) -> None:
    """Same inode, size and mtime: to a process that verified it, still the good file.
    Node 40's first expander parent becomes 2^32 - 1: layer 2 prefetches it 16 labels
    ahead, which used to read the block table far out of bounds (SIGSEGV)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(40 * 56 + 6 * 4)
        f.write(b"\xff\xff\xff\xff")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_corrupt_parent_cache_fails_pc1_and_the_worker_keeps_serving(pool: Pool) -> None:
    # Given a kernel worker with its own parent cache directory, which has sealed one
    # sector (so it generated, verified and trusts the 2KiB cache)
    caches = pool.tmp / "parents"
    proc = pool.worker("w", slots=1, kernel=True, env={
        "SEALPOOL_WORKER_SECTOR_SIZES": "2KiB", "SEALPOOL_PARENT_CACHE": str(caches)})
    pool.miner("t01000")
    first = pool.enqueue("t01000", 1, "cc", "--size", "2KiB")[0]
    pool.wait_finished(["t01000"], timeout=120)
    cache = labeler_c.parent_cache_path(SIZE // 32, labeler_c.porep_id(SIZE, API), API, caches)
    assert cache.exists()
    # When the cache is damaged behind its back
    damage_in_place(cache)
    second = pool.enqueue("t01000", 1, "cc", "--size", "2KiB")[0]
    rows = {r["sector"]: r for r in pool.wait_finished(["t01000"], timeout=180)}
    # Then pc1 fails with the kernel's error, not a dead process
    pc1 = [h for h in rows[second]["history"] if h["phase"] == "pc1"]
    assert pc1[0]["outcome"] == "error" and "CorruptParentCache" in pc1[0]["error"], pc1
    assert proc.poll() is None, pool.logs()
    # and the retry regenerates the cache, so the sector still seals
    assert rows[first]["state"] == rows[second]["state"] == "done", rows
    assert pc1[-1]["outcome"] == "ok"
    # and the worker serves the next sector
    third = pool.enqueue("t01000", 1, "cc", "--size", "2KiB")[0]
    rows = {r["sector"]: r for r in pool.wait_finished(["t01000"], timeout=120)}
    assert rows[third]["state"] == "done" and proc.poll() is None
