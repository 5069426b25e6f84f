"""The keeper thread: renews this process's leases and says it is alive.

Every third of the lease TTL it renews the leases; a lease now held by someone else means
another worker was granted the attempt (we were frozen or cut off past the TTL), so that
slot's job is cancelled and its result, if any, is fenced off anyway. Every heartbeat it
writes the registry entry and refreshes the instance key that keeps our leases from being
taken over."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker_topology.control import REGISTRY_TTL_S, WorkerStatus, write_beat

if TYPE_CHECKING:
    import redis

    from broker_topology.naming import Names

    from .leases import Leases
    from .slots import Slot

log = logging.getLogger(__name__)
#: The instance key lives this many heartbeats: a process silent for longer is gone.
ALIVE_BEATS = 3


class Keeper:
    def __init__(self, client: redis.Redis, names: Names, worker: str, leases: Leases,
                 slots: list[Slot], status: Callable[[], WorkerStatus], *,
                 lease_ttl: float, heartbeat_interval: float) -> None:
        self.r = client
        self.names = names
        self.worker = worker
        self.leases = leases
        self.slots = slots
        self.status = status
        self.renew_every = lease_ttl / 3
        self.heartbeat_interval = heartbeat_interval
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keeper", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def alive(self) -> None:
        """Refresh the instance key: a lease held by an instance without one is taken over."""
        self.leases.alive(ALIVE_BEATS * self.heartbeat_interval)

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        next_renew = next_beat = 0.0
        while not self.stopping.wait(0.25):
            now = time.monotonic()
            try:
                if now >= next_renew:
                    self.renew()
                    next_renew = now + self.renew_every
                if now >= next_beat:
                    self.beat()
                    next_beat = now + self.heartbeat_interval
            except Exception as exc:  # Redis away: try again next round
                log.warning("keeper: %s", exc)

    def renew(self) -> None:
        lost = self.leases.renew()
        for slot in self.slots:
            grant = slot.grant
            if grant is not None and self.leases.lease_key(grant) in lost:
                log.warning("slot %d: lease of %s attempt %d taken over; cancelling",
                            slot.index, grant.job_id, grant.attempt)
                slot.lease_lost = True
                slot.cancel.set()

    def beat(self) -> None:
        """The registry entry (kept an hour after the last beat, so a dead worker is listed
        as stale instead of vanishing) and its place in the registry index, both stamped
        with the Redis clock (a host clock that is off never makes us look stale); the
        instance key."""
        self.alive()
        write_beat(self.r, self.names, self.worker, self.status(),
                   max(REGISTRY_TTL_S, int(self.heartbeat_interval * 6)))
