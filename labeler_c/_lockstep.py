"""A lockstep batch: K sectors of one graph whose layers are node-interleaved (node v of
every sector side by side, as SHA-256 words), so one parent fetch serves all K lanes of
the lockstep compression. Layer files stay in upstream's per-sector byte layout: they are
packed in on resume and unpacked out on write."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labeler_c._errors import check
from labeler_c._ffi import ffi, lib
from labeler_c._graph import NODE_BYTES
from labeler_c._pool import DEFAULT_BLOCK_BYTES, LayerPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from labeler_c._cache import ParentCache

# Labels per C call (all sectors together): about 0.2 s of hashing, so progress is reported
# and the caller's thread gets the GIL back regularly.
_LABELS_PER_CALL = 1 << 18
# Nodes per pack/unpack call when moving a layer to and from its files.
_COPY_NODES = 1 << 15


class Lockstep:
    """K sectors labeled in lockstep in the node-interleaved layout, their layers lent
    block by block by a pool: block b of a layer holds nodes [b·n, (b+1)·n) of every
    sector, n = block_bytes // (32·K)."""

    @staticmethod
    def own_pool(k: int, nodes: int) -> LayerPool:
        """A private arena: two whole batch layers, in blocks of at most 64 MiB."""
        block = min(DEFAULT_BLOCK_BYTES, 1 << (nodes * NODE_BYTES * k - 1).bit_length())
        per = -(-nodes // (block // (NODE_BYTES * k)))
        return LayerPool(2 * per * block, block)

    def __init__(self, pool: LayerPool, rids: list[bytes], nodes: int,
                 cancelled: Callable[[], bool] | None) -> None:
        self.pool = pool
        self.cancelled = cancelled
        self.k = len(rids)
        self.nodes = nodes
        self.block_nodes = min(nodes, pool.block_bytes // (NODE_BYTES * self.k))
        if self.block_nodes < 1:
            raise ValueError(f"pool blocks of {pool.block_bytes} bytes cannot hold a node of "
                             f"a {self.k}-sector lockstep batch ({NODE_BYTES * self.k} bytes)")
        self.per_layer = -(-nodes // self.block_nodes)
        self.job = pool.join_blocks(self.per_layer, cancelled,
                                    f"a lockstep batch of {self.k} sectors of {nodes} nodes")
        self._rids = ffi.new("uint8_t[]", b"".join(rids))
        self._cur: Any = ffi.new("uint32_t *[]", self.per_layer)
        self._prev: Any = ffi.NULL

    def _table(self, blocks: list[int]) -> Any:
        table = ffi.new("uint32_t *[]", self.per_layer)
        for i, block in enumerate(blocks):
            table[i] = ffi.cast("uint32_t *", self.pool.pointer(block))
        return table

    def ensure(self, end: int) -> None:
        """The current layer has blocks for nodes [0, end) (may wait)."""
        want = -(-end // self.block_nodes)
        have = self.per_layer - self.job.remaining
        if want > have:
            self.pool.grow(self.job, want - have, self.cancelled)
            self._cur = self._table(self.job.cur)

    def finish_layer(self) -> None:
        """The current layer becomes the previous one; the old previous goes back."""
        self.pool.finish_layer(self.job)
        self._prev = self._table(self.job.prev)
        self._cur = ffi.new("uint32_t *[]", self.per_layer)

    def label(self, cache: ParentCache, nodes: int, layer: int,
              progress: Callable[[int, int], None] | None, producer: bool) -> None:
        args = ffi.new("labeler_lockstep_args *")
        args.parents = cache.rows
        args.replica_ids = self._rids
        args.nsectors = self.k
        args.block_nodes = self.block_nodes
        args.nodes = nodes
        args.layer = layer
        args.prev = self._prev if layer > 1 else ffi.NULL
        # Never more than one block ahead of the labels: a block taken early is memory
        # another job of the pool waits for.
        chunk = max(1, min(_LABELS_PER_CALL // self.k, self.block_nodes))
        for start in range(0, nodes, chunk):
            end = min(nodes, start + chunk)
            self.ensure(end)
            args.cur = self._cur
            args.start, args.end = start, end
            check(lib.labeler_label_lockstep(args), f"labeling layer {layer}")
            if progress is not None:
                progress(layer, end)

    def load(self, s: int, path: Path) -> None:
        """Sector s's current layer from a layer file (the whole layer must be lent)."""
        with open(path, "rb") as f:
            for start in range(0, self.nodes, _COPY_NODES):
                count = min(_COPY_NODES, self.nodes - start)
                data = f.read(count * NODE_BYTES)
                if len(data) != count * NODE_BYTES:
                    raise OSError(f"{path} changed size while being read")
                check(lib.labeler_lockstep_pack(self._cur, self.block_nodes, self.k, s, start,
                                                count, data), "packing a layer")

    def dump(self, s: int) -> Iterator[bytearray]:
        """Sector s's previous layer, in node order, as upstream's bytes."""
        for start in range(0, self.nodes, _COPY_NODES):
            count = min(_COPY_NODES, self.nodes - start)
            out = bytearray(count * NODE_BYTES)
            check(lib.labeler_lockstep_unpack(self._prev, self.block_nodes, self.k, s, start,
                                              count, ffi.from_buffer(out)), "unpacking a layer")
            yield out

    def close(self) -> None:
        self.pool.leave(self.job)
