"""The worker process: a consumer, a runner and a keeper around one broker transport.

Threads: the transport's I/O thread runs the `Consumer` (claims on its ticks, triage, acks
and publishes for everyone), one thread per slot runs the `Runner`'s job protocol, and the
`Keeper` renews leases and heartbeats. See consumer.py, runner.py and keeper.py.

Stopping (SIGTERM): no new claims; running jobs get `drain_timeout` to finish; the rest are
cancelled (an external processor gets SIGTERM, then SIGKILL after its `kill_grace`) and
handed back; every processor group still alive is killed before the process exits, so a
processor never outlives its worker while its job runs again elsewhere."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from broker_topology.blobs import Blobs
from broker_topology.control import read_registry
from broker_topology.link import EXIT_IO_THREAD, Link
from broker_topology.naming import Names
from broker_topology.redis_conn import connect_redis

from .consumer import Consumer
from .control import Controller
from .executors.external import ExternalExecutor, kill_all_groups
from .keeper import Keeper
from .leases import Leases
from .registry import Registry
from .resources import Admission, resolve_sizes
from .runner import Runner
from .shares import Shares
from .slots import SlotState, build_slots
from .storage import Storage

if TYPE_CHECKING:
    from broker_topology.control import GpuInfo
    from broker_topology.settings import PoolSettings
    from broker_topology.transport import Session, Transport

    from .config import WorkerSettings
    from .executors.base import Executor

log = logging.getLogger(__name__)
#: Makes the worker's transport from (name, on_connect, on_tick): the in-memory twin in
#: tests; the pika Link otherwise.
TransportFactory = Callable[[str, Callable[["Session"], None], Callable[["Session"], None]],
                            "Transport"]
#: Slack on top of the longest kill grace when joining slot threads at stop.
JOIN_MARGIN_S = 5.0


class Worker:
    def __init__(self, pool: PoolSettings, cfg: WorkerSettings,
                 executors: dict[Any, Executor], client: redis.Redis,
                 gpus: dict[int, GpuInfo] | None = None,
                 transport: TransportFactory | None = None) -> None:
        self.pool = pool
        self.storage = Storage.from_config(cfg)
        cfg = resolve_sizes(cfg, executors, self.storage.existing_temp_dirs())
        self.cfg = cfg
        self.names = Names(pool.namespace)
        self.executors = executors
        self.redis = client
        self.instance = uuid.uuid4().hex[:12]
        self.leases = Leases(client, self.names, cfg.name, self.instance, cfg.lease_ttl)
        self.slots = build_slots(cfg, self.names, self.storage)
        self.admission = Admission(executors, cfg.sector_sizes, self.storage.sealed_dir,
                                   self.names)
        self.control = Controller(cfg.name, self.slots, gpus or {}, self.request_claim)
        self.registry = Registry(name=cfg.name, instance=self.instance,
                                 broker_url=pool.amqp_url,
                                 heartbeat_interval=cfg.heartbeat_interval, phases=cfg.phases,
                                 storage_group=cfg.storage_group,
                                 sector_sizes=cfg.sector_sizes)
        # Fair queuing reads Redis on the I/O thread: never wait out an outage there.
        self.shares = Shares(connect_redis(pool.redis_url, retries=0), self.names)
        self.consumer = Consumer(pool, cfg, self.slots, self.admission, self.control,
                                 self.shares, lambda: read_registry(self.shares.r, self.names))
        name = f"pool-worker/{cfg.name}"
        self.transport: Transport = (
            transport(name, self.consumer.on_connect, self.consumer.on_tick) if transport
            else Link(pool.amqp_url, name=name, on_connect=self.consumer.on_connect,
                      on_tick=self.consumer.on_tick, heartbeat=pool.heartbeat, on_fatal=_die))
        self.runner = Runner(pool, cfg, self.transport, executors, self.leases,
                             Blobs(client, self.names), self.shares, self.storage,
                             self.slots, self.request_claim)
        self.keeper = Keeper(client, self.names, cfg.name, self.leases, self.slots,
                             lambda: self.registry.status(self.control.views()),
                             lease_ttl=cfg.lease_ttl,
                             heartbeat_interval=cfg.heartbeat_interval)

    @property
    def stopping(self) -> bool:
        return self.consumer.stopping.is_set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, ready_timeout: float = 30.0) -> None:
        self.storage.prepare()
        self.keeper.alive()  # before the first claim: our leases must not look orphaned
        self.transport.start(wait_s=ready_timeout)
        self.keeper.start()  # the registry lists us once we are connected
        self.runner.start()
        log.info("worker %s (instance %s) up: %d slot(s), phases %s", self.cfg.name,
                 self.instance, len(self.slots),
                 ",".join(sorted(p.value for p in self.cfg.phases)))

    def kill_grace(self) -> float:
        """The longest time an executor may take to stop once cancelled."""
        return max((e.kill_grace_s for e in self.executors.values()
                    if isinstance(e, ExternalExecutor)), default=0.0)

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish for drain_timeout, then hand them back."""
        self.consumer.stopping.set()
        drain = self.cfg.drain_timeout if drain_timeout is None else drain_timeout
        limit = time.monotonic() + drain
        while any(s.state is SlotState.BUSY for s in self.slots) and time.monotonic() < limit:
            time.sleep(0.1)
        stuck = self.runner.stop(self.kill_grace() + JOIN_MARGIN_S)
        if stuck:
            log.error("slot(s) %s did not stop in time; their jobs are requeued by the broker",
                      ",".join(map(str, stuck)))
        if killed := kill_all_groups():
            log.warning("killed %d processor group(s) still running", killed)
        self.keeper.stop()
        self.transport.stop()
        try:  # best effort, no outage retries: both expire by themselves anyway
            quick = connect_redis(self.pool.redis_url, retries=0)
            quick.delete(self.names.worker_key(self.cfg.name))
            quick.delete(self.names.instance_key(self.instance))
        except redis.RedisError as exc:
            log.warning("could not remove registry entry: %s", exc)

    def request_claim(self) -> None:
        self.consumer.request_claim()
        if not self.stopping:
            self.transport.call(lambda _s: None)  # wakes the I/O thread


def _die(exc: BaseException) -> None:
    """The I/O thread died: kill our processors and exit non-zero, so the supervisor
    restarts us (a process heartbeating without a broker connection looks healthy)."""
    kill_all_groups()
    logging.shutdown()
    os._exit(EXIT_IO_THREAD)
