"""Pool level: keep a target number of sectors waiting for or in pc1 (the phase that
decides throughput) by pledging CC sectors when no deal sectors are waiting, and stop while
the later phases (pc2, c1, c2) already have more than they can absorb."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from broker_topology.messages import Phase, SectorClass

from .config import MinerSettings
from .pipeline import State
from .store import SectorStore

log = logging.getLogger(__name__)
EARLY = (Phase.AP, Phase.PC1)
DOWNSTREAM = (Phase.PC2, Phase.C1, Phase.C2)


@dataclass(frozen=True)
class Level:
    pending_deals: int
    early: int  # pending, or queued at ap/pc1
    downstream: int  # queued at pc2/c1/c2


def level(store: SectorStore) -> Level:
    pending_deals = early = downstream = 0
    for number in store.pending(10_000):
        rec = store.get(number)
        if rec is not None:
            early += 1
            pending_deals += rec.sector_class is SectorClass.DEAL
    for number in store.inflight():
        rec = store.get(number)
        if rec is None or rec.sector.state is not State.QUEUED:
            continue
        early += rec.sector.phase in EARLY
        downstream += rec.sector.phase in DOWNSTREAM
    return Level(pending_deals, early, downstream)


def to_pledge(lvl: Level, cfg: MinerSettings) -> int:
    """How many CC sectors to pledge now. Pure."""
    if cfg.pledge_target <= 0 or lvl.pending_deals > 0:
        return 0
    if lvl.downstream >= cfg.pledge_max_downstream:
        return 0
    return max(0, cfg.pledge_target - lvl.early)


def pledge(store: SectorStore, cfg: MinerSettings, size: int) -> int:
    """Create the CC sectors the pool level asks for (one instance at a time)."""
    if cfg.pledge_target <= 0:
        return 0
    lock = store.names.pledge_lock_key(store.miner)
    if not store.r.set(lock, "1", nx=True, ex=5):
        return 0
    try:
        n = to_pledge(level(store), cfg)
        if n:
            now = store.redis_now()
            store.create(n, SectorClass.CC, size, now + cfg.default_deadline[SectorClass.CC],
                         {}, now)
            store.count("pledged", n)
            log.info("pledged %d CC sector(s) to keep %d at pc1", n, cfg.pledge_target)
        return n
    finally:
        store.r.delete(lock)
