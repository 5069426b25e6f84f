"""Deadlines: how long a sector still needs, and whether it will make it.

slack = deadline - now - expected remaining time, where the remaining time sums the
observed mean duration of every phase still ahead (per phase and sector size, learned from
accepted results) and the chain waits. A sector whose slack falls under the threshold is
escalated: an urgent copy of its current job is published (the same attempt, so whichever
copy runs first wins and the other finds its done marker). A sector with negative slack
cannot make its deadline: it is reported (status, log, counter), not silently sealed late."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import redis

from broker_topology.durations import decode_mean, duration_field, encode_mean
from broker_topology.messages import PIPELINE, Phase
from broker_topology.naming import Names
from broker_topology.units import GiB

from .config import MinerSettings
from .pipeline import Sector, State
from .redis_text import opt_text, text_map
from .store import Record

#: Durations on a 32GiB sector before any are observed (seconds; roughly what a 2023-era
#: sealing box does). Scaled linearly with sector size.
DEFAULT_32G_S: dict[Phase, float] = {
    Phase.AP: 1800, Phase.PC1: 4 * 3600, Phase.PC2: 1800, Phase.C1: 120, Phase.C2: 1800,
    Phase.FIN: 600,
}
_ALPHA = 0.3  # weight of the newest observation in the moving average
_PHASES = frozenset(p.value for p in Phase)


@dataclass(frozen=True)
class Slack:
    seconds: float
    remaining: float

    @property
    def late(self) -> bool:
        return self.seconds < 0


class Durations:
    """Exponentially weighted mean duration per (phase, sector size), shared in Redis."""

    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.r = client
        self.key = names.durations_key

    def observe(self, phase: Phase, size: int, seconds: float) -> None:
        """Fold one measured duration in. The table is shared by every miner, so a value
        that is not a finite, non-negative number never enters it, and a stored mean that
        is not one (written before this guard) is replaced instead of averaged."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        field = duration_field(phase, size)
        mean = decode_mean(opt_text(self.r.hget(self.key, field)))
        mean = seconds if mean is None else (1 - _ALPHA) * mean + _ALPHA * seconds
        self.r.hset(self.key, field, encode_mean(mean))

    def table(self) -> dict[tuple[Phase, int], float]:
        out = {}
        for field, raw in text_map(self.r.hgetall(self.key)).items():
            phase, _, size = field.partition(":")
            mean = decode_mean(raw)
            if mean is not None and phase in _PHASES and size.isdigit():
                out[(Phase(phase), int(size))] = mean
        return out


def clamp_duration(started_at: float, finished_at: float, window: float) -> float | None:
    """A result's duration, trusted only as far as the miner's own clock allows: within
    [0, time since the miner dispatched the attempt]. None when it says nothing (NaN)."""
    measured = finished_at - started_at
    if math.isnan(measured) or not math.isfinite(window):
        return None
    return min(max(measured, 0.0), max(window, 0.0))


def expected(phase: Phase, size: int, observed: dict[tuple[Phase, int], float]) -> float:
    if (phase, size) in observed:
        return observed[(phase, size)]
    return DEFAULT_32G_S[phase] * size / (32 * GiB)


def slack(sector: Sector, size: int, deadline: float, now: float,
          observed: dict[tuple[Phase, int], float], cfg: MinerSettings) -> Slack:
    """Pure: the slack of a sector in the pipeline (pending sectors count from ap)."""
    remaining = 0.0
    if sector.state is State.PENDING:
        start = 0
    elif sector.state is State.CHAIN:  # count the whole wait of the step under way
        precommit = sector.chain_step == "precommit"
        start = PIPELINE.index(Phase.C1 if precommit else Phase.FIN)
        remaining += (cfg.chain_precommit + cfg.chain_seed) if precommit else cfg.chain_commit
    else:
        start = PIPELINE.index(sector.phase)
    ahead = PIPELINE[start:]
    remaining += sum(expected(p, size, observed) for p in ahead)
    if Phase.PC2 in ahead:
        remaining += cfg.chain_precommit + cfg.chain_seed
    if Phase.C2 in ahead:
        remaining += cfg.chain_commit
    return Slack(deadline - now - remaining, remaining)


def urgent_check(cfg: MinerSettings, observed: dict[tuple[Phase, int], float], now: float
                 ) -> Callable[[Record], bool]:
    """Is this sector short of slack at `now` (the Redis clock) (escalate it, admit it
    regardless of the share)?"""
    def urgent(rec: Record) -> bool:
        s = slack(rec.sector, rec.size, rec.deadline, now, observed, cfg)
        return s.seconds < cfg.escalate_slack
    return urgent
