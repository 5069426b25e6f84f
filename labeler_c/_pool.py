"""Memory for labeling: one arena shared by the sectors labeling at once (DESIGN.md §7).

A sector needs its previous layer whole (expander parents are random) and its current
layer up to the node being labeled. So N sectors need up to 2·N·S bytes at the end of a
layer, but much less on average when they are at different points. The pool hands out the
current layer block by block and takes the previous layer back when a layer completes;
a sector that would exhaust it waits.

Waiting can deadlock if every sector holds half a layer and needs the rest, so blocks are
granted by the banker's rule: only if afterwards every job can still finish its current
layer in some order, each releasing its previous layer when it does. A job is admitted only
while the held layers plus the largest job's layer fit (sum B + max B <= capacity); then,
once all jobs finish a layer, one can always run its next, so the pool never deadlocks.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from typing import TYPE_CHECKING

from labeler_c._ffi import ffi

if TYPE_CHECKING:
    from types import TracebackType

#: The pool size, in bytes or with a unit (64GiB, 48G, 1500MiB); the older name is read too.
ENV_POOL_SIZE = "MEM_POOL_SIZE"
ENV_POOL_BYTES = "SEALPOOL_PC1_POOL_BYTES"
DEFAULT_BLOCK_BYTES = 64 << 20
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def pool_size_from_env() -> int | None:
    """MEM_POOL_SIZE (or SEALPOOL_PC1_POOL_BYTES) in bytes; None when unset. A value that
    does not parse is an error, never a silent default."""
    for name in (ENV_POOL_SIZE, ENV_POOL_BYTES):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", raw)
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{name}={raw!r} is not a size; use bytes or e.g. 96GiB, 1500MiB")
        return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return None


class PoolJob:
    """One job's standing in the pool: blocks per layer and what it holds now."""

    def __init__(self, blocks_per_layer: int) -> None:
        self.blocks_per_layer = blocks_per_layer
        self.prev: list[int] = []  # block indices of the previous layer
        self.cur: list[int] = []  # block indices of the current layer so far

    @property
    def remaining(self) -> int:
        return self.blocks_per_layer - len(self.cur)


class LayerPool:
    """An arena of equal blocks, lent to labeling jobs without deadlock.

    ``block_bytes`` is a power of two; a layer smaller than a block takes one block.
    """

    def __init__(self, capacity: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        if block_bytes < 32 or block_bytes & (block_bytes - 1):
            raise ValueError(f"block_bytes must be a power of two >= 32, got {block_bytes}")
        if capacity < 2 * block_bytes:
            raise ValueError(f"pool capacity {capacity} is below two blocks of {block_bytes} bytes")
        self.block_bytes = block_bytes
        self.capacity = capacity // block_bytes * block_bytes
        self._arena = mmap.mmap(-1, self.capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            # Parent reads are random: 2 MiB pages keep them off the page walker.
            self._arena.madvise(mmap.MADV_HUGEPAGE)
        self._base = ffi.from_buffer(self._arena, require_writable=True)
        self._free = list(range(self.capacity // block_bytes - 1, -1, -1))
        self._jobs: list[PoolJob] = []
        self._cond = threading.Condition()

    @classmethod
    def for_sectors(cls, sectors: int, sector_bytes: int) -> LayerPool:
        """A pool for ``sectors`` concurrent sectors of ``sector_bytes`` each.

        Capacity: ``$MEM_POOL_SIZE`` or (3N+1)/2 · S, at least (N+1) · S so all
        N can be admitted (2 · S for one sector).
        """
        floor = (sectors + 1) * sector_bytes
        default = (3 * sectors + 1) * sector_bytes // 2
        capacity = pool_size_from_env() or default
        if capacity < floor:
            raise ValueError(
                f"a pool for {sectors} sectors of {sector_bytes} bytes needs at least "
                f"{floor} bytes, got {capacity}"
            )
        return cls(capacity, min(DEFAULT_BLOCK_BYTES, sector_bytes))

    @property
    def blocks(self) -> int:
        return self.capacity // self.block_bytes

    def free_blocks(self) -> int:
        with self._cond:
            return len(self._free)

    def blocks_for(self, layer_bytes: int) -> int:
        return -(-layer_bytes // self.block_bytes)

    # ---- jobs ----

    def join(self, sectors: int, layer_bytes: int) -> PoolJob:
        """Admit a job of ``sectors`` sectors with ``layer_bytes`` layers; may wait."""
        need = sectors * self.blocks_for(layer_bytes)
        if 2 * need > self.blocks:
            raise ValueError(
                f"{sectors} sector(s) with {layer_bytes}-byte layers need "
                f"{2 * need * self.block_bytes} bytes; the pool has {self.capacity}"
            )
        job = PoolJob(need)
        with self._cond:
            self._cond.wait_for(lambda: self._admissible(need))
            self._jobs.append(job)
        return job

    def leave(self, job: PoolJob) -> None:
        with self._cond:
            self._free += job.prev + job.cur
            job.prev, job.cur = [], []
            self._jobs.remove(job)
            self._cond.notify_all()

    def grow(self, job: PoolJob, blocks: int) -> None:
        """Give ``job`` ``blocks`` more blocks of its current layer, waiting while unsafe."""
        if blocks > job.remaining:
            raise ValueError(f"job asked for {blocks} blocks, {job.remaining} left in its layer")
        with self._cond:
            for _ in range(blocks):
                self._cond.wait_for(lambda: self._safe_to_grant(job))
                job.cur.append(self._free.pop())

    def finish_layer(self, job: PoolJob) -> None:
        """The current layer is complete: it becomes the previous one, which is returned."""
        if job.remaining:
            raise ValueError(f"layer not complete: {job.remaining} blocks missing")
        with self._cond:
            self._free += job.prev
            job.prev, job.cur = job.cur, []
            self._cond.notify_all()

    def _admissible(self, need: int) -> bool:
        held = sum(j.blocks_per_layer for j in self._jobs)
        largest = max([need, *(j.blocks_per_layer for j in self._jobs)])
        return held + need + largest <= self.blocks

    def _safe_to_grant(self, job: PoolJob) -> bool:
        """Banker's check: after one more block to ``job``, can every job finish its layer?"""
        if not self._free:
            return False
        free = len(self._free) - 1
        waiting = {id(j): j.remaining - (j is job) for j in self._jobs}
        progress = True
        while waiting and progress:
            progress = False
            for j in self._jobs:
                rest = waiting.get(id(j))
                if rest is not None and rest <= free:
                    free += len(j.prev) - rest  # takes the rest, then returns its previous layer
                    del waiting[id(j)]
                    progress = True
        return not waiting

    # ---- addresses ----

    def view(self, block: int) -> memoryview:
        start = block * self.block_bytes
        return memoryview(self._arena)[start : start + self.block_bytes]

    def pointer(self, block: int) -> object:
        """A C pointer to the start of ``block``."""
        return self._base + block * self.block_bytes

    def close(self) -> None:
        with self._cond:
            if self._jobs:
                raise RuntimeError(f"pool still lends memory to {len(self._jobs)} job(s)")
        ffi.release(self._base)
        self._arena.close()

    def __enter__(self) -> LayerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
