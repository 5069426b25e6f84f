"""Redis leases with fencing tokens: the application half of "nothing done twice".

Keys (spelled in broker_topology.naming):
  lease:<job>#<attempt>   "<worker>/<instance>/<slot>|<epoch>" while a slot runs it (PX)
  epoch:<job>#<attempt>   the fencing token, INCRed by every grant
  done:<job>#<attempt>    the recorded Result JSON, written only under the current epoch
  starts:<job>#<attempt>  grants that never finished (a crash loop is parked)
  instance:<instance>     this process is alive (refreshed by the keeper, TTL of a few beats)

A lease is taken over only when it expired or its instance is gone, so a redelivered copy
of a job still running anywhere, this process included, is deferred instead of run beside
it. The miner accepts a result only when it carries the current epoch, and the done marker
is written only under it: a worker frozen past its lease (SIGSTOP, a VM pause) can neither
record nor deliver a result once another worker was granted the attempt."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

from broker_topology.messages import Job

if TYPE_CHECKING:
    import redis

    from broker_topology.naming import Names

#: Done markers and counters outlive any redelivery of the attempt.
DONE_TTL_S = 7 * 86400


def _script(name: str) -> str:
    return files("pool_worker").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class Grant:
    """A lease we hold: the job attempt, our lease value and its fencing token."""

    job_id: str
    attempt: int
    value: str
    epoch: int
    #: Grants of this attempt so far, this one included, that did not finish.
    starts: int


@dataclass(frozen=True)
class Done:
    """The attempt was already recorded: its Result JSON."""

    result: bytes


@dataclass(frozen=True)
class Held:
    """Someone alive holds the attempt: `<worker>/<instance>/<slot>`."""

    holder: str


class Leases:
    def __init__(self, client: redis.Redis, names: Names, worker: str, instance: str,
                 ttl_s: float) -> None:
        self.r = client
        self.names = names
        self.worker = worker
        self.instance = instance
        self.ttl_ms = int(ttl_s * 1000)
        self._held: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self._acquire = client.register_script(_script("acquire.lua"))
        self._renew = client.register_script(_script("renew.lua"))
        self._finish = client.register_script(_script("finish.lua"))
        self._release = client.register_script(_script("release.lua"))

    def holder(self, slot: int) -> str:
        return f"{self.worker}/{self.instance}/{slot}"

    def alive(self, ttl_s: float) -> None:
        """Say this process is alive for `ttl_s` (the keeper calls it every beat)."""
        self.r.set(self.names.instance_key(self.instance), self.worker,
                   px=max(1, int(ttl_s * 1000)))

    def gone(self) -> None:
        """A clean stop: our leases may be taken over at once."""
        self.r.delete(self.names.instance_key(self.instance))

    def acquire(self, job: Job, slot: int) -> Grant | Done | Held:
        n = self.names
        status, *rest = self._acquire(
            keys=[n.lease_key(job.job_id, job.attempt), n.done_key(job.job_id, job.attempt),
                  n.epoch_key(job.job_id, job.attempt), n.starts_key(job.job_id, job.attempt)],
            args=[self.holder(slot), self.ttl_ms, n.instance_key(""), DONE_TTL_S])
        if status == "done":
            return Done(str(rest[0]).encode())
        if status == "held":
            return Held(str(rest[0]))
        epoch, starts = int(rest[0]), int(rest[1])
        grant = Grant(job.job_id, job.attempt, f"{self.holder(slot)}|{epoch}", epoch, starts)
        with self._lock:
            self._held[self.lease_key(grant)] = grant
        return grant

    def lease_key(self, grant: Grant) -> str:
        return self.names.lease_key(grant.job_id, grant.attempt)

    def renew(self) -> set[str]:
        """Extend every lease we hold; returns the lease keys that are no longer ours."""
        with self._lock:
            grants = list(self._held.values())
        if not grants:
            return set()
        keys: list[str] = []
        args: list[str | int] = [self.ttl_ms]
        for g in grants:
            keys += [self.lease_key(g), self.names.epoch_key(g.job_id, g.attempt)]
            args += [g.value, g.epoch]
        lost = {str(k) for k in self._renew(keys=keys, args=args)}
        with self._lock:
            for key in lost:
                self._held.pop(key, None)
        return lost

    def finish(self, grant: Grant, result: bytes) -> bool:
        """Record the result and drop the lease in one step; False when fenced off (the
        attempt was granted to someone else since): the result must then be dropped."""
        n = self.names
        ok = self._finish(
            keys=[self.lease_key(grant), n.done_key(grant.job_id, grant.attempt),
                  n.epoch_key(grant.job_id, grant.attempt),
                  n.starts_key(grant.job_id, grant.attempt)],
            args=[grant.value, grant.epoch, result.decode(), DONE_TTL_S])
        self._forget(grant)
        return int(ok) == 1

    def release(self, grant: Grant) -> None:
        """Give the lease up without a result (hand-back): not counted as a start."""
        self._release(keys=[self.lease_key(grant),
                            self.names.starts_key(grant.job_id, grant.attempt)],
                      args=[grant.value])
        self._forget(grant)

    def _forget(self, grant: Grant) -> None:
        with self._lock:
            self._held.pop(self.lease_key(grant), None)
