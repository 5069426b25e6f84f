"""Redis leases and done markers: the application half of "nothing done twice".

lease:<job>#<attempt> = "<worker>/<instance>"  (SET NX PX, renewed while the job runs)
done:<job>#<attempt>  = the Result JSON        (kept 7 days, republished on redelivery)

The unacked delivery is the broker's lease; this one survives a lost channel, so a copy
redelivered while the first holder still runs is deferred instead of run twice."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from broker_topology.messages import Job

if TYPE_CHECKING:
    import redis

    from broker_topology.naming import Names

DONE_TTL_S = 7 * 86400

# Renew our leases; one that expired (Redis was away longer than the TTL) is taken back
# unless someone else took it meanwhile. Returns the keys held by someone else.
_RENEW = """
local lost = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2])
  elseif not v then redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  else table.insert(lost, k) end
end
return lost
"""
_FINISH = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    def __init__(self, client: redis.Redis, names: Names, worker: str, instance: str,
                 ttl_s: float) -> None:
        self.r = client
        self.names = names
        self.worker = worker
        self.holder = f"{worker}/{instance}"
        self.ttl_ms = int(ttl_s * 1000)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    def _key(self, kind: str, job: Job) -> str:
        return self.names.redis_key(kind, f"{job.job_id}#{job.attempt}")

    def done_result(self, job: Job) -> bytes | None:
        raw = self.r.get(self._key("done", job))
        return raw.encode() if isinstance(raw, str) else raw

    def acquire(self, job: Job) -> str | None:
        """None if the lease is ours now; else who holds it. A lease left by an earlier
        process of this same worker (it restarted) is taken over: that process is gone."""
        key = self._key("lease", job)
        if not self.r.set(key, self.holder, nx=True, px=self.ttl_ms):
            holder = self.r.get(key)
            if holder is not None and holder != self.holder and (
                    not str(holder).startswith(f"{self.worker}/")):
                return str(holder)
            self.r.set(key, self.holder, px=self.ttl_ms)
        with self._lock:
            self._held.add(key)
        return None

    def renew(self) -> set[str]:
        """Extend every lease we hold; returns the lease keys another worker now holds."""
        with self._lock:
            keys = list(self._held)
        if not keys:
            return set()
        lost = set(self._renew(keys=keys, args=[self.holder, self.ttl_ms]))
        with self._lock:
            self._held -= lost
        return lost

    def lease_key(self, job: Job) -> str:
        return self._key("lease", job)

    def count_start(self, job: Job) -> int:
        """How many times this attempt was started on the pool (this start included)."""
        key = self._key("starts", job)
        pipe = self.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, DONE_TTL_S)
        return int(pipe.execute()[0])

    def uncount_start(self, job: Job) -> None:
        """A clean hand-back (drain, pause --now) is not a crash."""
        self.r.decr(self._key("starts", job))

    def finish(self, job: Job, result: bytes) -> None:
        """Record the result and drop the lease in one step."""
        key = self._key("lease", job)
        self._finish(keys=[key, self._key("done", job)],
                     args=[self.holder, result.decode(), DONE_TTL_S])
        with self._lock:
            self._held.discard(key)

    def release(self, job: Job) -> None:
        key = self._key("lease", job)
        self._release(keys=[key], args=[self.holder])
        with self._lock:
            self._held.discard(key)
