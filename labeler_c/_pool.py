"""Memory for labeling: one arena shared by the sectors labeling at once.

A sector needs its previous layer whole (expander parents are random) and its current
layer up to the node being labeled. So N sectors need up to 2·N·S bytes at the end of a
layer, but much less on average when they are at different points. The pool hands out the
current layer block by block and takes the previous layer back when a layer completes;
a sector that would exhaust it waits. The pool itself is C (src/pool.c: mutex, condition
variable, banker's rule against deadlock); this is its Python face.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from labeler_c._errors import check
from labeler_c._ffi import ffi, lib
from labeler_c._units import parse_size

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

#: The pool size, in bytes or with a unit (64GiB, 48G, 1500MiB); the older name is read too.
ENV_POOL_SIZE = "MEM_POOL_SIZE"
ENV_POOL_BYTES = "SEALPOOL_PC1_POOL_BYTES"
DEFAULT_BLOCK_BYTES = 64 << 20
#: Free pool memory kept resident for the next job; the rest goes back to the OS, so RSS
#: (and what a worker's memory admission sees) follows the blocks actually lent.
DEFAULT_IDLE_BYTES = 256 << 20
#: Blocks per layer at least. A sector holds its current layer rounded up to a block, so
#: with coarse blocks two sectors half a layer apart no longer fit (3N+1)/2 · S and stall
#: at every layer end; the pool also rounds its size down to whole blocks.
MIN_BLOCKS_PER_LAYER = 64


def pool_size_from_env() -> int | None:
    """MEM_POOL_SIZE (or SEALPOOL_PC1_POOL_BYTES) in bytes; None when unset. A value that
    does not parse is an error, never a silent default."""
    for name in (ENV_POOL_SIZE, ENV_POOL_BYTES):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            return parse_size(raw)
        except ValueError:
            raise ValueError(
                f"{name}={raw!r} is not a size; use bytes or e.g. 96GiB, 1500MiB") from None
    return None


_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_page_mode(path: str = _THP_MODE) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), or None
    where it cannot be read. Layers get 2 MiB pages unless it is ``never``."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def block_bytes_for(sector_bytes: int) -> int:
    """Pool block size for sectors of ``sector_bytes`` (a power of two >= 2 KiB)."""
    return max(32, min(DEFAULT_BLOCK_BYTES, sector_bytes // MIN_BLOCKS_PER_LAYER))


def pool_sizes(sectors: int, sector_bytes: int) -> dict[str, int]:
    """The pool sizes that matter for N sectors of S bytes: ``min`` (N+1)·S, below which
    not all N can run; ``default`` (3N+1)/2·S; ``max`` 2N·S, two whole layers each."""
    return {"min": (sectors + 1) * sector_bytes,
            "default": (3 * sectors + 1) * sector_bytes // 2,
            "max": 2 * sectors * sector_bytes}


def pool_capacity(sectors: int, sector_bytes: int, configured: int | None = None) -> int:
    """The pool size for ``sectors`` slots: ``configured``, else $MEM_POOL_SIZE, else the
    default (3N+1)/2 · S. Below the minimum (N+1) · S it raises, naming the minimum."""
    sizes = pool_sizes(sectors, sector_bytes)
    floor = sizes["min"]
    capacity = configured or pool_size_from_env() or sizes["default"]
    if capacity < floor:
        raise ValueError(
            f"a pool for {sectors} sectors of {sector_bytes} bytes needs at least "
            f"(N+1)·S = {floor} bytes, got {capacity}")
    return capacity


#: Longest single wait inside C: the thread comes back to Python this often while waiting,
#: so a cancelled job notices (``cancelled`` below) and signals are handled.
_WAIT_MS = 200


class PoolJob:
    """One job's standing in the pool: what it holds of its current and previous layer."""

    def __init__(self, handle: object) -> None:
        self._c: Any = handle

    @property
    def blocks_per_layer(self) -> int:
        return int(self._c.per_layer)

    @property
    def cur(self) -> list[int]:
        """Block indices of the current layer so far, in the order granted."""
        return list(ffi.unpack(self._c.cur, self._c.ncur)) if self._c.ncur else []

    @property
    def prev(self) -> list[int]:
        """Block indices of the previous layer."""
        return list(ffi.unpack(self._c.prev, self._c.nprev)) if self._c.nprev else []

    @property
    def remaining(self) -> int:
        return int(self._c.per_layer - self._c.ncur)


class LayerPool:
    """An arena of equal blocks, lent to labeling jobs without deadlock.

    ``block_bytes`` is a power of two; a layer smaller than a block takes one block. Of the
    free blocks, ``idle_bytes`` worth stay resident; the others are returned to the OS as
    they come back (blocks of at least a page).
    ``cancelled``, if given to a waiting call, is polled while it waits; when it returns
    True the wait ends by raising ``PoolWaitCancelled``.
    """

    def __init__(self, capacity: int, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 idle_bytes: int = DEFAULT_IDLE_BYTES) -> None:
        if block_bytes < 32 or block_bytes & (block_bytes - 1):
            raise ValueError(f"block_bytes must be a power of two >= 32, got {block_bytes}")
        if capacity < 2 * block_bytes:
            raise ValueError(f"pool capacity {capacity} is below two blocks of {block_bytes} bytes")
        out = ffi.new("labeler_pool **")
        check(lib.labeler_pool_create(capacity, block_bytes, out), "creating the layer pool")
        self._c: Any = out[0]
        lib.labeler_pool_set_idle(self._c, max(0, idle_bytes) // block_bytes)
        self.block_bytes = block_bytes
        self.capacity = int(lib.labeler_pool_blocks(self._c)) * block_bytes
        self._base = lib.labeler_pool_base(self._c)

    @classmethod
    def for_sectors(cls, sectors: int, sector_bytes: int, capacity: int | None = None
                    ) -> LayerPool:
        """A pool for ``sectors`` concurrent sectors of ``sector_bytes`` each.

        Capacity: ``capacity`` (the worker config), else ``$MEM_POOL_SIZE``, else
        (3N+1)/2 · S; at least (N+1) · S so all N can be admitted (2 · S for one sector).
        """
        size = pool_capacity(sectors, sector_bytes, capacity)
        return cls(size, block_bytes_for(sector_bytes))

    @property
    def blocks(self) -> int:
        return self.capacity // self.block_bytes

    def free_blocks(self) -> int:
        return int(lib.labeler_pool_free(self._c))

    def blocks_for(self, layer_bytes: int) -> int:
        return -(-layer_bytes // self.block_bytes)

    # ---- jobs ----

    def join(self, sectors: int, layer_bytes: int,
             cancelled: Callable[[], bool] | None = None) -> PoolJob:
        """Admit a job of ``sectors`` sectors with ``layer_bytes`` layers; may wait."""
        need = sectors * self.blocks_for(layer_bytes)
        return self.join_blocks(need, cancelled, f"{sectors} sector(s) with {layer_bytes}-byte "
                                                 "layers")

    def join_blocks(self, need: int, cancelled: Callable[[], bool] | None = None,
                    what: str = "a job") -> PoolJob:
        """Admit a job whose layers take ``need`` blocks each; may wait."""
        if 2 * need > self.blocks:
            raise ValueError(
                f"{what} need {2 * need * self.block_bytes} bytes; the pool has {self.capacity}")
        out = ffi.new("labeler_pool_job **")
        while (rc := lib.labeler_pool_join(self._c, need, _WAIT_MS, out)) == lib.LABELER_E_TIMEOUT:
            _poll(cancelled)
        check(rc, "joining the layer pool")
        return PoolJob(out[0])

    def leave(self, job: PoolJob) -> None:
        """Everything ``job`` holds goes back; a job of another pool is a ValueError."""
        if job._c is not None:
            check(lib.labeler_pool_leave(self._c, job._c), "leaving the layer pool")
            job._c = None

    def grow(self, job: PoolJob, blocks: int, cancelled: Callable[[], bool] | None = None
             ) -> None:
        """Give ``job`` ``blocks`` more blocks of its current layer, waiting while unsafe."""
        c = _live(job)
        if blocks > job.remaining:
            raise ValueError(f"job asked for {blocks} blocks, {job.remaining} left in its layer")
        want = c.ncur + blocks
        while (rc := lib.labeler_pool_grow(self._c, c, want - c.ncur, _WAIT_MS)
               ) == lib.LABELER_E_TIMEOUT:
            _poll(cancelled)
        check(rc, "growing a layer in the pool")

    def finish_layer(self, job: PoolJob) -> None:
        """The current layer is complete: it becomes the previous one, which is returned."""
        if job.remaining:
            raise ValueError(f"layer not complete: {job.remaining} blocks missing")
        check(lib.labeler_pool_finish_layer(self._c, _live(job)), "finishing a layer")

    def _safe_to_grant(self, job: PoolJob) -> bool:
        """The banker's check for one more block to ``job`` (for tests and diagnostics)."""
        rc = lib.labeler_pool_can_grant(self._c, _live(job))
        check(rc, "checking a grant")
        return bool(rc)

    # ---- addresses ----

    def view(self, block: int) -> memoryview:
        return memoryview(ffi.buffer(self._base + block * self.block_bytes, self.block_bytes))

    def pointer(self, block: int) -> object:
        """A C pointer to the start of ``block``."""
        return self._base + block * self.block_bytes

    def close(self) -> None:
        if self._c is None:
            return
        if lib.labeler_pool_destroy(self._c) == lib.LABELER_E_BUSY:
            raise RuntimeError("pool still lends memory to a job")
        self._c = None

    def __enter__(self) -> LayerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PoolWaitCancelled(Exception):
    """A wait for pool memory ended because the job was cancelled."""


def _live(job: PoolJob) -> Any:
    if job._c is None:
        raise ValueError("the job has already left its layer pool")
    return job._c


def _poll(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise PoolWaitCancelled("cancelled while waiting for pool memory")
