"""Labeling sectors (SPEC §8): layer files, resume per layer, batches, and replica_id (§2)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from labeler_c._cache import ParentCache, ensure_parent_cache, forget
from labeler_c._errors import CorruptParentCache, check
from labeler_c._ffi import ffi, lib
from labeler_c._graph import NODE_BYTES, Graph, as_int, check_bytes32
from labeler_c._lockstep import Lockstep
from labeler_c._pool import LayerPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from typing_extensions import Buffer

    PathArg = str | os.PathLike[str]

# Nodes per C call: about 0.2 s of hashing, so progress is reported and the caller's
# thread gets the GIL back regularly.
_LABEL_CHUNK = 1 << 18
_LAYER_FILE = re.compile(r"sc-02-data-layer-(\d+)\.dat")
# Written before the first layer; layers in a directory are only trusted if it matches.
_PARAMS_FILE = ".sealpool-labels.json"


def layer_file_name(layer: int) -> str:
    """Upstream's name of layer ``layer`` (1-based) in a sector's cache directory."""
    return f"sc-02-data-layer-{layer}.dat"


def replica_id(
    prover_id: bytes, sector_id: int, ticket: bytes, comm_d: bytes, porep_id: bytes
) -> bytes:
    """FrSafe(SHA256(prover_id || BE64(sector_id) || ticket || comm_d || porep_id))."""
    sector = as_int(sector_id, "sector_id")
    if not 0 <= sector < 2**64:
        raise ValueError(f"sector_id must be an integer in [0, 2^64), got {sector_id!r}")
    out = ffi.new("uint8_t[32]")
    lib.labeler_replica_id(
        check_bytes32(prover_id, "prover_id"),
        sector,
        check_bytes32(ticket, "ticket"),
        check_bytes32(comm_d, "comm_d"),
        check_bytes32(porep_id, "porep_id"),
        out,
    )
    return bytes(out)


class _LayerDir:
    """A sector's layer files: what is finished, and atomic, durable writes of new ones."""

    def __init__(self, path: Path, params: dict[str, object], layer_bytes: int) -> None:
        self.path = path
        self.layer_bytes = layer_bytes
        path.mkdir(parents=True, exist_ok=True)
        params_path = path / _PARAMS_FILE
        try:
            same = json.loads(params_path.read_text()) == params
        except (FileNotFoundError, ValueError):
            same = False
        if not same:
            # Layers from other inputs (or of unknown origin) must not be resumed from.
            for entry in path.iterdir():
                if _LAYER_FILE.fullmatch(entry.name):
                    entry.unlink()
            tmp = params_path.with_name(params_path.name + ".tmp")
            tmp.write_text(json.dumps(params, sort_keys=True))
            os.replace(tmp, params_path)

    def file(self, layer: int) -> Path:
        return self.path / layer_file_name(layer)

    def finished(self, layer: int) -> bool:
        try:
            return self.file(layer).stat().st_size == self.layer_bytes
        except FileNotFoundError:
            return False

    def first_missing(self, layers: int) -> int:
        first = 1
        while first <= layers and self.finished(first):
            first += 1
        return first

    def write(self, layer: int, data: Iterable[Buffer]) -> None:
        final = self.file(layer)
        tmp = final.with_name(final.name + ".partial")
        with open(tmp, "wb") as f:
            for view in data:
                f.write(view)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _Batch:
    """Sectors labeled together by one thread, two per 2-stream compression, each in its own
    (upstream) layout; their layers lent block by block by a pool.

    Block b of sector s's layer is the job's block ``b * k + s`` (k sectors), in the order
    the pool granted them.
    """

    @staticmethod
    def own_pool(k: int, nodes: int) -> LayerPool:
        """A private arena: two whole layers per sector, each one block."""
        return LayerPool(2 * k * nodes * NODE_BYTES, nodes * NODE_BYTES)

    def __init__(self, pool: LayerPool, rids: list[bytes], nodes: int,
                 cancelled: Callable[[], bool] | None) -> None:
        self.pool = pool
        self.cancelled = cancelled
        self.k = len(rids)
        self.layer_bytes = nodes * NODE_BYTES
        self.per_sector = pool.blocks_for(self.layer_bytes)
        self.block_nodes = min(nodes, pool.block_bytes // NODE_BYTES)
        self.block_shift = self.block_nodes.bit_length() - 1
        self.job = pool.join(self.k, self.layer_bytes, cancelled)
        self._rids = [ffi.new("uint8_t[32]", rid) for rid in rids]
        self.sectors = ffi.new("labeler_sector[]", self.k)
        for s in range(self.k):
            self.sectors[s].replica_id = self._rids[s]
        self._tables: list[object] = []  # keeps the block tables alive while C uses them
        self._set_tables(cur=[], prev=[])

    def _set_tables(self, cur: list[int], prev: list[int]) -> None:
        tables = []
        for s in range(self.k):
            cur_t = ffi.new("uint8_t *[]", self.per_sector)
            prev_t = ffi.new("uint8_t *[]", self.per_sector) if prev else ffi.NULL
            for b, block in enumerate(cur[s :: self.k]):
                cur_t[b] = self.pool.pointer(block)
            for b, block in enumerate(prev[s :: self.k]):
                prev_t[b] = self.pool.pointer(block)
            self.sectors[s].cur = cur_t
            self.sectors[s].prev = prev_t
            tables += [cur_t, prev_t]
        self._tables = tables

    def ensure(self, end: int) -> None:
        """The current layer has blocks for nodes [0, end) in every sector (may wait)."""
        want = -(-end // self.block_nodes)
        have = (self.job.blocks_per_layer - self.job.remaining) // self.k
        if want > have:
            self.pool.grow(self.job, self.k * (want - have), self.cancelled)
            self._set_tables(self.job.cur, self.job.prev)

    def finish_layer(self) -> None:
        """The current layer becomes the previous one; the old previous goes back."""
        self.pool.finish_layer(self.job)
        self._set_tables([], self.job.prev)

    def views(self, s: int, blocks: list[int]) -> list[memoryview]:
        """Sector s's layer held in ``blocks``, as memoryviews in node order."""
        size = min(self.layer_bytes, self.pool.block_bytes)
        return [self.pool.view(block)[:size] for block in blocks[s :: self.k]]

    def load(self, s: int, path: Path) -> None:
        """Sector s's current layer from a layer file (the whole layer must be lent)."""
        with open(path, "rb") as f:
            for view in self.views(s, self.job.cur):
                if f.readinto(view) != view.nbytes:
                    raise OSError(f"{path} changed size while being read")

    def dump(self, s: int) -> Iterator[Buffer]:
        """Sector s's previous layer, in node order, as upstream's bytes."""
        yield from self.views(s, self.job.prev)

    def close(self) -> None:
        self.pool.leave(self.job)

    def label(self, cache: ParentCache, nodes: int, layer: int,
              progress: Callable[[int, int], None] | None, producer: bool) -> None:
        _label_layer(self, cache, nodes, layer, progress, producer)


def _label_layer(
    batch: _Batch,
    cache: ParentCache,
    nodes: int,
    layer: int,
    progress: Callable[[int, int], None] | None,
    producer: bool,
) -> None:
    args = ffi.new("labeler_layer_args *")
    args.producer = producer
    args.parents = cache.rows
    args.sectors = batch.sectors
    args.nsectors = batch.k
    args.block_shift = batch.block_shift
    args.nodes = nodes
    args.layer = layer
    # Never more than one block ahead of the labels: a block taken early is memory another
    # sector of the pool waits for.
    chunk = min(_LABEL_CHUNK, batch.block_nodes)
    for start in range(0, nodes, chunk):
        end = min(nodes, start + chunk)
        batch.ensure(end)
        args.start, args.end = start, end
        check(lib.labeler_label_layer(args), f"labeling layer {layer}")
        if progress is not None:
            progress(layer, end)


def _check_layers(layers: int) -> int:
    try:
        count = as_int(layers, "layers")
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"layers must be a positive integer, got {layers!r}")
    return count


def _label(
    rids: list[bytes],
    graph: Graph,
    layers: int,
    out_dirs: Sequence[PathArg] | None,
    pool: LayerPool | None,
    parent_cache: PathArg | None,
    progress: Callable[[int, int], None] | None,
    keep_last: bool,
    cancelled: Callable[[], bool] | None = None,
    producer: bool = False,
    lockstep: bool = False,
) -> list[bytes] | None:
    """Label layers 1..layers of every sector, resuming from out_dirs; the last layers.
    ``lockstep``: the node-interleaved batch kernel (16-lane AVX-512 where it runs)."""
    nodes = graph.nodes
    layer_bytes = nodes * NODE_BYTES
    dirs: list[_LayerDir] = []
    first = 1  # the first layer to compute; every layer before it is on disk for every sector
    if out_dirs is not None:
        if len(out_dirs) != len(rids):
            raise ValueError(f"{len(rids)} replica ids but {len(out_dirs)} output directories")
        for rid, out_dir in zip(rids, out_dirs, strict=True):
            params = {
                "replica_id": rid.hex(),
                "porep_id": graph.porep_id.hex(),
                "nodes": nodes,
                "api_version": graph.api_version,
            }
            dirs.append(_LayerDir(Path(out_dir), params, layer_bytes))
        first = min(d.first_missing(layers) for d in dirs)
        if first > layers:
            return [d.file(layers).read_bytes() for d in dirs] if keep_last else None

    cache_path = parent_cache or ensure_parent_cache(nodes, graph.porep_id, graph.api_version)
    kind: type[_Batch] | type[Lockstep] = Lockstep if lockstep else _Batch
    own_pool = pool is None
    if pool is None:
        pool = kind.own_pool(len(rids), nodes)
    try:
        batch = kind(pool, rids, nodes, cancelled)
        try:
            if first > 1:
                batch.ensure(nodes)
                for s, d in enumerate(dirs):
                    batch.load(s, d.file(first - 1))
                batch.finish_layer()
            with ParentCache(cache_path, nodes) as cache:
                for layer in range(first, layers + 1):
                    try:
                        batch.label(cache, nodes, layer, progress, producer)
                    except CorruptParentCache:
                        if parent_cache is None:  # damaged since verified: re-hash next time
                            forget(Path(cache_path))
                        raise
                    batch.finish_layer()
                    for s, d in enumerate(dirs):
                        d.write(layer, batch.dump(s))
            if not keep_last:
                return None
            return [b"".join(bytes(v) for v in batch.dump(s)) for s in range(len(rids))]
        finally:
            batch.close()
    finally:
        if own_pool:
            pool.close()


def label_layers(
    replica_id: bytes,
    porep_id: bytes,
    nodes: int,
    layers: int,
    api_version: str,
    out_dir: PathArg | None = None,
    *,
    pool: LayerPool | None = None,
    parent_cache: PathArg | None = None,
    progress: Callable[[int, int], None] | None = None,
    producer: bool = False,
) -> bytes:
    """Label ``layers`` layers and return the last one (N x 32 bytes).

    With ``out_dir``, every layer is written there as ``sc-02-data-layer-<l>.dat`` and a
    rerun resumes after the last finished layer. ``pool`` lends the layer memory (shared
    with other sectors labeling at once); by default the call allocates its own.
    ``parent_cache`` names a cache file to use as is (only its size is checked); by default
    the managed cache is used, generated and verified as needed. ``progress(layer,
    nodes_done)`` is called between chunks. ``producer`` adds a second thread that gathers
    parent labels ahead of the hashing one: faster for sectors beyond the CPU caches when a
    core is free for it, slower otherwise.
    """
    rid = check_bytes32(replica_id, "replica_id")
    graph = Graph(nodes, porep_id, api_version)
    dirs = None if out_dir is None else [out_dir]
    count = _check_layers(layers)
    last = _label([rid], graph, count, dirs, pool, parent_cache, progress, True,
                  producer=producer)
    assert last is not None
    return last[0]


def label_sector(
    replica_id: bytes,
    porep_id: bytes,
    nodes: int,
    layers: int,
    api_version: str,
    out_dir: PathArg,
    *,
    pool: LayerPool | None = None,
    parent_cache: PathArg | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    producer: bool = False,
) -> list[Path]:
    """``label_layers`` into ``out_dir`` for production sizes: returns the layer files
    instead of a copy of the last layer (32 GiB for a 32 GiB sector). ``cancelled`` is
    polled while the sector waits for pool memory (raises ``PoolWaitCancelled``)."""
    rid = check_bytes32(replica_id, "replica_id")
    graph = Graph(nodes, porep_id, api_version)
    count = _check_layers(layers)
    _label([rid], graph, count, [out_dir], pool, parent_cache, progress, False, cancelled,
           producer)
    return [Path(out_dir) / layer_file_name(layer) for layer in range(1, count + 1)]


def label_batch(
    replica_ids: Sequence[bytes],
    porep_id: bytes,
    nodes: int,
    layers: int,
    api_version: str,
    out_dirs: Sequence[PathArg] | None = None,
    *,
    pool: LayerPool | None = None,
    parent_cache: PathArg | None = None,
    progress: Callable[[int, int], None] | None = None,
    producer: bool = False,
    lockstep: bool | None = None,
) -> list[bytes]:
    """Label several sectors of one graph in lockstep on this thread; their last layers.

    Node v of every sector hashes together. By default (``lockstep``) the batch's layers
    are node-interleaved and all its sectors go through one lockstep compression: 16 lanes
    of AVX-512 where the CPU has it (for batches that fill enough of them), 2-stream SHA-NI
    otherwise; up to 32 sectors. ``lockstep=False`` keeps each sector in its own layout and
    hashes two at a time (up to 16; the only form with a ``producer`` thread). Either way
    a core labels more than one sector per thread. ``out_dirs`` (one per sector) works as
    in ``label_layers``.
    """
    if isinstance(replica_ids, (bytes, bytearray)) or not replica_ids:
        raise ValueError("replica_ids must be a non-empty sequence of 32-byte ids")
    if lockstep is None:
        lockstep = not producer
    if lockstep and producer:
        raise ValueError("the producer thread works with lockstep=False only")
    most = lib.LABELER_MAX_LOCKSTEP if lockstep else lib.LABELER_MAX_BATCH
    if len(replica_ids) > most:
        raise ValueError(f"a batch holds at most {most} sectors, got {len(replica_ids)}")
    rids = [check_bytes32(r, "replica_id") for r in replica_ids]
    graph = Graph(nodes, porep_id, api_version)
    count = _check_layers(layers)
    last = _label(rids, graph, count, out_dirs, pool, parent_cache, progress, True,
                  producer=producer, lockstep=lockstep)
    assert last is not None
    return last
