"""Is a sector's home still there? What the registry index says of a worker or a storage
group, in the terms the pipeline decides on (pipeline.HomeCheck)."""

from __future__ import annotations

from broker_topology.control import Registered
from broker_topology.messages import SectorClass

from .pipeline import HomeCheck
from .store import Record


def home_check(members: list[Registered], home: str, now: float,
               no_restart: str | None = None) -> HomeCheck:
    """The home's latest beat and whether it beats now (`now` on the Redis clock): the
    worker of that name, or any live member of the storage group of that name. A worker
    stopped cleanly has no entry left, only its last beat in the index."""
    of_home = [m for m in members if m.name == home
               or (m.status is not None and m.status.storage_group == home)]
    alive = any(m.status is not None and not m.status.stale(now) for m in of_home)
    return HomeCheck(max((m.last_beat for m in of_home), default=None), alive, no_restart)


def no_restart(rec: Record) -> str | None:
    """Why starting over at ap elsewhere cannot rebuild this sector; None when it can (CC
    sectors are zeros; a deal's ap stages its unsealed data again)."""
    if rec.sector_class is SectorClass.CC or rec.params.get("unsealed_path"):
        return None
    return "a deal sector without unsealed data (--unsealed) cannot start over elsewhere"
