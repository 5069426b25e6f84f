"""Miner-side settings: retry limits, default deadlines, chain step delays, escalation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker_topology.errors import ConfigError
from broker_topology.messages import Phase, SectorClass
from broker_topology.settings import Seconds
from broker_topology.units import parse_sector_size


class MinerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEALPOOL_MINER_", extra="ignore", frozen=True)

    #: Attempts per phase before a temporary error becomes permanent.
    max_attempts: dict[Phase, int] = Field(default_factory=lambda: {p: 3 for p in Phase})
    #: Backoff before retry n is base × 2^(n-1), with jitter, capped.
    retry_base: Seconds = 5.0
    retry_cap: Seconds = 1800.0
    #: Deadline of a sector enqueued without --deadline.
    default_deadline: dict[SectorClass, float] = Field(
        default_factory=lambda: {SectorClass.DEAL: 24 * 3600.0, SectorClass.CC: 7 * 86400.0})
    #: Simulated chain: precommit message landing + waiting for the seed; commit message.
    chain_precommit: float = Field(default=0.0, ge=0)
    chain_seed: float = Field(default=0.0, ge=0)
    chain_commit: float = Field(default=0.0, ge=0)
    #: A sector whose slack (deadline - now - expected remaining time) falls under this is
    #: escalated to the urgent lane.
    escalate_slack: Seconds = 3600.0
    #: A follow-up reached a worker without the sector's files (its home did not take it
    #: within SEALPOOL_LOCALITY_WAIT): "wait" sends it home again after `home_wait`;
    #: "restart" starts the sector over at ap on whichever worker is free.
    locality_recovery: Literal["wait", "restart"] = "wait"
    home_wait: Seconds = 120.0
    #: "wait" gives the home up (the sector starts over at ap elsewhere: CC from zeros, a
    #: deal from its unsealed data; else it fails saying why) once no worker of it has
    #: beaten for `home_gone_after`, or after `home_rounds` needs_data rounds in a row.
    home_gone_after: Seconds = 600.0
    home_rounds: int = Field(default=6, ge=1)
    #: Pool level: keep this many sectors waiting for or in pc1 by pledging CC sectors of
    #: `pledge_size` when no deals wait (0: off) ...
    pledge_target: int = Field(default=0, ge=0)
    pledge_size: str = "32GiB"

    @field_validator("pledge_size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_sector_size(value)
        return value

    #: ... unless this many of the miner's sectors already wait at pc2/c1/c2.
    pledge_max_downstream: int = Field(default=4, ge=1)
    #: This miner's weight when several miners share the pool (shares of worker time).
    weight: float = Field(default=1.0, gt=0)
    #: Sectors in the pool per worker slot, over all miners: one running, the rest ready so
    #: a slot never waits for the miner.
    pool_depth: int = Field(default=2, ge=1)
    #: Unpublished jobs older than this are (re)published by any running instance.
    outbox_grace: Seconds = 10.0
    #: How long a publishing instance holds an outbox entry (Redis clock; renewed every
    #: third of it while the broker has not confirmed): nobody republishes it meanwhile.
    outbox_claim: Seconds = 60.0
    #: Watchdog: a queued sector with no progress for longer than max(3 × the phase's
    #: expected duration, this) is flagged `stalled` in status and logged once.
    stall_floor: Seconds = 3600.0
    #: Done and failed sectors older than this lose their record and history (counted in
    #: stats as `trimmed`); a bounded batch per round of the service's periodic work.
    retention: Seconds = 30 * 86400.0


def load_miner_settings() -> MinerSettings:
    """MinerSettings from the environment; a bad value is one line naming its variable."""
    try:
        return MinerSettings()
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "settings"
        raise ConfigError(f"SEALPOOL_MINER_{key.upper()}: {err['msg']}") from None
