"""Shared fixtures of the miner's unit tests (no tests here): the real local Redis under a
fresh namespace, deleted afterwards; skipped when Redis is unreachable, failed under CI."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import redis

from broker_topology.naming import Names

REDIS_URL = os.environ.get("SEALPOOL_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), 2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def rds() -> Iterator[tuple[redis.Redis, Names]]:
    """(client, names) of a fresh namespace `t<hex>` on the local Redis."""
    if not _reachable(REDIS_URL):
        why = f"Redis ({REDIS_URL}) not reachable; start it with deploy/local.sh services"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    names = Names(f"t{uuid.uuid4().hex[:10]}")
    try:
        yield client, names
    finally:
        keys = list(client.scan_iter(match=f"{names.namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
