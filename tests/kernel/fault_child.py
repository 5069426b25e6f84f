"""Fault scenarios run in a child process by test_kernel_faults.py: a crash here (SIGSEGV,
abort) must fail that test, not kill pytest. ``python -m tests.kernel.fault_child NAME``
prints one ``ok ...`` line per check and exits 0."""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

import labeler_c
from labeler_c import LayerPool

if TYPE_CHECKING:
    from collections.abc import Callable

API = "1.1.0"
POREP = bytes([91] * 32)
# Beyond RECENT + PREFETCH_AHEAD (label.c): rows far enough in are prefetched before they
# are checked, and base parents that far back are prefetched at all.
NODES = 1 << 13
ROW = 14 * 4
HUGE = (0xFFFFFFFF, 0xFFFFF000, 0x80000000, NODES, NODES + 16)


def corrupt(good: bytes, row: int, word: int, value: int) -> bytes:
    bad = bytearray(good)
    at = row * ROW + 4 * word
    bad[at : at + 4] = value.to_bytes(4, "little")
    return bytes(bad)


# The three labeling paths: node-interleaved lockstep, per-sector layout read in place,
# and per-sector layout with a producer thread.
PATHS = {"lockstep": (True, False), "direct": (False, False), "producer": (False, True)}


def expect_corrupt(cache: Path, path: str, batch: int) -> None:
    rids = [bytes([i + 1] * 32) for i in range(batch)]
    try:
        lockstep, producer = PATHS[path]
        labeler_c.label_batch(rids, POREP, NODES, 2, API, parent_cache=cache, lockstep=lockstep,
                              producer=producer)
    except labeler_c.CorruptParentCache:
        return
    raise AssertionError(f"{cache.name}: no CorruptParentCache ({path})")


def rows(tmp: Path) -> None:
    """Hand-picked damage: every implementation, direct and producer paths."""
    good = labeler_c.ensure_parent_cache(NODES, POREP, API).read_bytes()
    cases = [(5000, w, v) for w in (0, 3, 6, 13) for v in HUGE] + [(NODES - 1, 13, 1 << 31)]
    for impl in labeler_c.available_implementations():
        labeler_c.use_implementation(impl)
        for i, (row, word, value) in enumerate(cases):
            cache = tmp / f"bad-{i}.cache"
            cache.write_bytes(corrupt(good, row, word, value))
            for path in PATHS:
                expect_corrupt(cache, path, (1, 2, 5, 16)[i % 4])
        whole = tmp / "all-ff.cache"
        whole.write_bytes(b"\xff" * len(good))
        for path in PATHS:
            expect_corrupt(whole, path, 2)
        print(f"ok rows {impl}: {len(cases)} damaged rows, every path")


def random_damage(tmp: Path) -> None:
    """Any damage that puts an index out of range is reported; none crashes."""
    good = labeler_c.ensure_parent_cache(NODES, POREP, API).read_bytes()
    cache = tmp / "random.cache"

    @settings(max_examples=40, deadline=None, database=None)
    @given(row=st.integers(2, NODES - 1), word=st.integers(0, 13),
           value=st.one_of(st.sampled_from(HUGE), st.integers(NODES, 2**32 - 1)),
           path=st.sampled_from(sorted(PATHS)), batch=st.sampled_from([1, 3, 16]),
           impl=st.sampled_from(labeler_c.available_implementations()))
    def check(row: int, word: int, value: int, path: str, batch: int, impl: str) -> None:
        labeler_c.use_implementation(impl)
        cache.write_bytes(corrupt(good, row, word, value))
        expect_corrupt(cache, path, batch)

    check()
    print("ok random damage")


def wrong_pool(_: Path) -> None:
    """A job handed to a pool that did not admit it is refused, never freed into it."""
    a, b = LayerPool(1 << 20, 1 << 16), LayerPool(1 << 20, 1 << 16)
    part, full = a.join(1, 1 << 18), a.join(1, 1 << 18)  # layers of 4 blocks
    a.grow(part, 2)
    a.grow(full, 4)
    calls: dict[str, Callable[[], object]] = {
        "leave": lambda: b.leave(part), "grow": lambda: b.grow(part, 1),
        "finish_layer": lambda: b.finish_layer(full), "can_grant": lambda: b._safe_to_grant(part)}
    for name, call in calls.items():
        try:
            call()
        except ValueError as exc:
            assert "another layer pool" in str(exc), exc
        else:
            raise AssertionError(f"{name} through the wrong pool was accepted")
    assert b.free_blocks() == b.blocks and a.free_blocks() == a.blocks - 6
    a.leave(part)
    a.leave(full)
    try:
        a.grow(part, 1)
    except ValueError as exc:
        assert "already left" in str(exc), exc
    else:
        raise AssertionError("a job that left could still grow")
    a.close()
    b.close()
    print("ok wrong pool")


SCENARIOS = {"rows": rows, "random": random_damage, "wrong-pool": wrong_pool}


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault(labeler_c._cache.ENV_CACHE_DIR, d)
        random.seed(0)
        for name in argv:
            SCENARIOS[name](Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
