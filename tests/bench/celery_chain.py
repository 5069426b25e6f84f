"""The Celery side of bench_throughput.py: one no-op task, chained 6 times per "sector".

Configured as the Celery documentation says for quorum queues (5.5+): a quorum queue on a
topic exchange, `confirm_publish` (every publish waits for its confirm), late acks,
prefetch multiplier 1, no result backend. A chain publishes its next step from the worker
when a step finishes, as a miner publishes a sector's next phase; the last step counts the
sector done in Redis and records when.

Settings come from the environment (the benchmark sets them for itself and the worker):
BENCH_CELERY_BROKER, BENCH_CELERY_QUEUE, BENCH_REDIS_URL. Run by the benchmark as
`celery -A celery_chain worker` from this directory; needs the `bench` extra."""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

import redis

# Untyped libraries, taken as Any (the bench extra; mypy checks this file without it too).
celery: Any = importlib.import_module("celery")
kombu: Any = importlib.import_module("kombu")

STEPS = 6
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-chain")

app = celery.Celery("celery_chain", broker=os.environ.get("BENCH_CELERY_BROKER",
                                                   "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_queues=[kombu.Queue(QUEUE, kombu.Exchange(QUEUE, type="topic"), routing_key=QUEUE,
                       queue_arguments={"x-queue-type": "quorum"})],
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_exchange_type="topic",
    task_default_routing_key=QUEUE,
    broker_transport_options={"confirm_publish": True},
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:  # per process: prefork children open their own after the fork
        _redis = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL",
                                                     "redis://127.0.0.1:6379/0"))
    return _redis


def _step(key: str, sector: int, index: int) -> None:
    """A phase that takes no time; the last one marks its sector done."""
    if index == STEPS - 1:
        pipe = _client().pipeline(transaction=False)
        pipe.incr(f"{key}:done")
        pipe.set(f"{key}:last", repr(time.time()))
        pipe.execute()


step: Any = app.task(name="bench.step")(_step)


def sector_chain(key: str, sector: int) -> Any:
    """The 6 steps of one sector, each published by the worker when the one before ends."""
    return celery.chain(*(step.si(key, sector, i) for i in range(STEPS)))
