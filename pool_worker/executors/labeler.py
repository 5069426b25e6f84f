"""Built-in executors on the labeler_c kernel: ap (unsealed data + CommD) and pc1 (SDR
labeling, all layers, resumable per layer).

Both write `ap.json`/`pc1.json` next to their data in the sector's directory: the marker
the other executors use to tell whether this machine holds the sector."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import labeler_c
from broker_topology.errors import NeedsData, PermanentError
from broker_topology.messages import Job, SectorClass
from broker_topology.units import GiB

from .base import Cancelled, ExecContext

log = logging.getLogger(__name__)
UNSEALED = "unsealed.dat"
#: SDR layers per sector size (rust-fil-proofs `LAYERS`): 11 from 32GiB up, else 2.
LARGE_SECTOR = 32 * GiB


def layers_for(size: int) -> int:
    return 11 if size >= LARGE_SECTOR else 2


def prover_id(miner: str) -> bytes:
    """The miner actor id as Filecoin's 32-byte prover id (LE u64, zero padded)."""
    return int(miner[2:]).to_bytes(8, "little") + bytes(24)


def _marker(ctx: ExecContext, job: Job, outputs: dict[str, Any]) -> None:
    (ctx.workdir / f"{job.phase.value}.json").write_text(json.dumps(
        {"job_id": job.job_id, "attempt": job.attempt, "worker": ctx.worker,
         "at": time.time(), **outputs}))


@dataclass
class ApExecutor:
    """Stages the sector's unsealed data and computes CommD. A CC sector is all zeros: a
    sparse file and the zero-tree CommD, no hashing. A sector whose job names
    `params.unsealed_path` (an Fr32-padded file of the sector's size, readable here) is
    copied and hashed."""

    name: str = "labeler-ap"

    def run(self, job: Job, ctx: ExecContext) -> dict[str, Any]:
        target = ctx.workdir / UNSEALED
        source = job.params.get("unsealed_path")
        if source:
            src = Path(str(source))
            if not src.is_file() or src.stat().st_size != job.size:
                raise PermanentError(f"unsealed_path {src} is not a {job.size}-byte file")
            tmp = target.with_suffix(".part")
            with src.open("rb") as fin, tmp.open("wb") as fout:
                while chunk := fin.read(8 << 20):
                    ctx.check_cancelled()
                    fout.write(chunk)
            os.replace(tmp, target)
            comm_d = labeler_c.commd(str(target))
            data = "file"
        else:
            if job.sector_class is SectorClass.DEAL:
                raise PermanentError("deal sector without params.unsealed_path: no piece "
                                     "data to seal")
            with target.open("wb") as f:
                f.truncate(job.size)
            comm_d = labeler_c.zero_commd(job.size)
            data = "zeros"
        outputs = {"comm_d": comm_d.hex(), "data": data}
        _marker(ctx, job, outputs)
        return outputs


#: Smallest sector whose labeling gains from a producer thread (8 MiB already misses the
#: caches of the machines measured: perf-limits.md).
PRODUCER_MIN_BYTES = 8 << 20


@dataclass
class Pc1Executor:
    """SDR labeling with labeler_c. Layer files `sc-02-data-layer-<l>.dat` go into the
    sector's directory; a layer finished before a crash or hand-back is not recomputed.
    With several pc1 slots, their sectors share one memory pool per sector size
    (MEM_POOL_SIZE, default (3N+1)/2 · S) instead of 2 · S each."""

    api_version: str = "1.1.0"
    #: pc1 slots on this machine: the pool is sized for them.
    slots: int = 1
    #: The worker config's pool size; None: $MEM_POOL_SIZE or the default.
    pool_bytes: int | None = None
    name: str = "labeler-pc1"
    _pools: dict[int, labeler_c.LayerPool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def pool(self, size: int) -> labeler_c.LayerPool | None:
        if self.slots < 2:
            return None
        with self._lock:
            if size not in self._pools:
                pool = labeler_c.LayerPool.for_sectors(self.slots, size, self.pool_bytes)
                log.info("pc1 memory pool for %d slots of %d-byte sectors: %d bytes",
                         self.slots, size, pool.capacity)
                self._pools[size] = pool
            return self._pools[size]

    def check_pool(self, sizes: Iterable[int]) -> None:
        """Refuse a pool size (pc1_pool_size, or MEM_POOL_SIZE) too small for the slots
        (raises ValueError naming the minimum), before any job runs."""
        if self.slots < 2:
            return
        configured = self.pool_bytes or labeler_c.pool_size_from_env()
        if configured is None:
            return
        largest = max(sizes)
        floor = labeler_c.pool_sizes(self.slots, largest)["min"]
        if configured < floor:
            key = "pc1_pool_size" if self.pool_bytes else "MEM_POOL_SIZE"
            raise ValueError(f"{key} is {configured} bytes; {self.slots} pc1 slots of "
                             f"{largest}-byte sectors need at least (N+1)·S = {floor}")

    def use_producer(self, size: int, ctx: ExecContext) -> bool:
        """A parent-gathering thread pays when the sector is beyond the CPU caches and the
        slot has a core to spare for it: two pinned cores, or (unpinned) two per pc1 slot."""
        if size < PRODUCER_MIN_BYTES:
            return False
        if ctx.cores:
            return len(ctx.cores) >= 2
        return (os.cpu_count() or 1) >= 2 * self.slots

    def check_pages(self) -> None:
        """Say at start when layers cannot get 2 MiB pages: random parent reads then pay a
        page walk each (perf-limits.md: 0.5 instead of 0.6-0.7 of the bound, one core)."""
        if labeler_c.huge_page_mode() == "never":
            log.warning("transparent huge pages are off (%s = never): pc1 labels up to a "
                        "fifth slower; 'madvise' or 'always' lets its layers use 2 MiB pages",
                        "/sys/kernel/mm/transparent_hugepage/enabled")

    def run(self, job: Job, ctx: ExecContext) -> dict[str, Any]:
        if not (ctx.workdir / "ap.json").exists():
            raise NeedsData(f"sector {job.miner}/{job.sector} has no files on {ctx.worker}")
        ap = job.params.get("ap") or {}
        ticket_hex = job.params.get("ticket")
        if "comm_d" not in ap or not ticket_hex:
            raise PermanentError("pc1 needs params.ap.comm_d and params.ticket")
        porep = labeler_c.porep_id(job.size, self.api_version)
        rid = labeler_c.replica_id(prover_id(job.miner), job.sector, bytes.fromhex(ticket_hex),
                                   bytes.fromhex(ap["comm_d"]), porep)
        layers = layers_for(job.size)
        started = time.monotonic()
        producer = self.use_producer(job.size, ctx)
        try:
            files = labeler_c.label_sector(
                rid, porep, job.size // 32, layers, self.api_version, ctx.workdir,
                pool=self.pool(job.size), progress=lambda _layer, _node: ctx.check_cancelled(),
                cancelled=ctx.cancelled.is_set, producer=producer)
        except labeler_c.PoolWaitCancelled as exc:  # handed back while waiting for memory
            raise Cancelled(str(exc)) from None
        seconds = time.monotonic() - started
        last = hashlib.sha256()
        with files[-1].open("rb") as f:
            while chunk := f.read(8 << 20):
                last.update(chunk)
        outputs = {"replica_id": rid.hex(), "layers": layers, "api_version": self.api_version,
                   "last_layer_sha256": last.hexdigest(),
                   "implementation": labeler_c.implementation(), "producer": producer,
                   "labels_per_s": round(job.size // 32 * layers / max(seconds, 1e-9))}
        _marker(ctx, job, outputs)
        return outputs
