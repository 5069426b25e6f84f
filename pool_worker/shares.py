"""What fair queuing reads and writes in Redis: the miners and their weights, each miner's
virtual time, and the expected duration of each phase (see policy.py).

Read once per claim pass, on the I/O thread, with a client that never waits out an outage:
a Redis that is away makes the choice between miners less fair for a while, never a slot
idle or the broker connection starved of heartbeats."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

import redis

from broker_topology.durations import decode_mean, duration_field
from broker_topology.messages import Job, Phase
from broker_topology.units import GiB

from .policy import CLOCK, DEFAULT_EXPECTED_S, claim_cost

if TYPE_CHECKING:
    from broker_topology.naming import Names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Charge:
    """A claimed job's miner and the phase's expected seconds, which its actual duration
    corrects when it ends."""

    miner: str
    weight: float
    seconds: float


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: object, default: float) -> float:
    try:
        f = float(_text(value))
    except ValueError:
        return default
    return f if f == f and abs(f) != float("inf") else default


class Shares:
    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.r = client
        self.names = names
        self.weights: dict[str, float] = {}
        self.vtimes: dict[str, float] = {}
        self.durations: dict[str, float] = {}
        self._charge = client.register_script(
            files("pool_worker").joinpath("lua", "charge.lua").read_text())

    def refresh(self) -> None:
        """Re-read miners, virtual times and durations (kept as they were if Redis fails)."""
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.names.miners_key)
            pipe.hgetall(self.names.vtime_key)
            pipe.hgetall(self.names.durations_key)
            miners, vtimes, durations = pipe.execute()
        except redis.RedisError as exc:
            log.debug("fair shares not refreshed: %s", exc)
            return
        self.weights = {_text(m): max(_float(w, 1.0), 1e-6) for m, w in miners.items()
                        if _text(m) != CLOCK}
        self.vtimes = {_text(m): _float(v, 0.0) for m, v in vtimes.items()}
        self.durations = {_text(k): mean for k, v in durations.items()
                          if (mean := decode_mean(v)) is not None}

    @property
    def miners(self) -> list[str]:
        return sorted(self.weights)

    def expected(self, phase: Phase, size: int) -> float:
        """The observed mean duration of the phase at this size, else a guess scaled from
        the default (small sectors are quick)."""
        known = self.durations.get(duration_field(phase, size))
        if known is not None:
            return known
        return DEFAULT_EXPECTED_S * min(1.0, size / (32 * GiB)) + 1.0

    def charge(self, job: Job, *, chosen: bool = True) -> Charge:
        """Charge the job's miner now (the next claim already sees it): `claim_cost` of
        the job, `chosen` as in policy.charged. Returns what to correct when it ends; when
        Redis is away the charge is skipped (shares are a little off, nothing else)."""
        weight = self.weights.get(job.miner, 1.0)
        cost = claim_cost(job.phase, job.size, self.expected)
        if cost > 0:
            try:
                after, clock = self._charge(keys=[self.names.vtime_key],
                                            args=[job.miner, repr(cost), repr(weight), CLOCK,
                                                  "1" if chosen else "0"])
                self.vtimes[job.miner] = _float(after, self.vtimes.get(job.miner, 0.0))
                self.vtimes[CLOCK] = _float(clock, self.vtimes.get(CLOCK, 0.0))
            except redis.RedisError as exc:
                log.debug("claim of %s not charged: %s", job.job_id, exc)
        return Charge(job.miner, weight, self.expected(job.phase, job.size))

    def correct(self, charge: Charge, actual_s: float) -> None:
        """Replace the expected slot time by the actual one (slot thread, any client)."""
        self.r.hincrbyfloat(self.names.vtime_key, charge.miner,
                            (actual_s - charge.seconds) / charge.weight)
