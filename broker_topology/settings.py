"""Settings every sealpool process shares: where the broker and Redis are, the namespace,
and the topology knobs whose values become queue arguments (so they must agree pool-wide)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .units import parse_bytes, parse_duration


def _seconds(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _bytes(value: Any) -> Any:
    return parse_bytes(value) if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
#: A size as operators write it ("96GiB", "1500MiB") or a byte count.
Bytes = Annotated[int, BeforeValidator(_bytes), Field(gt=0)]


class PoolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEALPOOL_", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = Field(default="sealpool", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")

    #: A deal job waiting longer than this is escalated to the urgent lane by the broker.
    aging_deal: Seconds = 2 * 3600
    #: The same for CC jobs, so CC never starves behind a stream of deals.
    aging_cc: Seconds = 8 * 3600
    #: How long a follow-up waits for its home worker before falling back to the pool.
    locality_wait: Seconds = 15 * 60
    #: A worker queue unused this long is deleted (well above locality_wait: x-expires drops
    #: messages without dead-lettering them).
    worker_queue_expires: Seconds = 7 * 86400
    #: AMQP heartbeat (s): a hung or cut-off process loses its jobs after 2-3 of these.
    heartbeat: int = Field(default=30, ge=2, le=600)
    #: Deliveries a job may have in one queue before the broker dead-letters it onwards.
    delivery_limit: int = Field(default=5, ge=1)
    #: Every miner's deal jobs before any miner's CC jobs (an operator who owns all the
    #: miners); otherwise each miner's deals go before its own CC, and miners share by weight.
    deals_first: bool = False
    #: Retry backoff buckets (queue TTLs) in seconds.
    delay_buckets: Annotated[tuple[int, ...], NoDecode] = (5, 30, 120, 600, 1800)

    @field_validator("delay_buckets", mode="before")
    @classmethod
    def _buckets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(int(parse_duration(v)) for v in value.split(",") if v.strip())
        return value

    @field_validator("worker_queue_expires")
    @classmethod
    def _expires_above_wait(cls, value: float, info: Any) -> float:
        wait = info.data.get("locality_wait", 0)
        if value < 4 * wait:
            raise ValueError(f"must be at least 4 × locality_wait ({wait:.0f}s)")
        return value
