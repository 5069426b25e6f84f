"""The Redis client both sides use: it waits out a Redis outage instead of failing."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

#: While Redis is down, commands retry with backoff up to this many times (~5 min),
#: so a restart or failover is waited out and nothing is marked done without being recorded.
OUTAGE_RETRIES = 60


def connect_redis(url: str, *, retries: int = OUTAGE_RETRIES) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialWithJitterBackoff(base=0.2, cap=5.0), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
