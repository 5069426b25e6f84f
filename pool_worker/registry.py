"""This worker's registry entry: who it is, where it runs, and every slot's view."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from broker_topology.control import SlotView, WorkerStatus
from broker_topology.messages import Phase


def address_towards(url: str) -> str:
    """The local IP address this machine uses to reach the host of `url` (a UDP connect
    picks the route and sends nothing), or the host name when there is no route."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostname()


class Registry:
    """Builds the entry; the facts that do not change are gathered once."""

    def __init__(self, *, name: str, instance: str, broker_url: str,
                 heartbeat_interval: float, phases: Iterable[Phase],
                 storage_group: str | None, sector_sizes: Iterable[int]) -> None:
        self.name = name
        self.instance = instance
        self.host = socket.gethostname()
        self.address = address_towards(broker_url)
        self.pid = os.getpid()
        self.started_at = time.time()
        self.heartbeat_interval = heartbeat_interval
        self.phases = tuple(sorted(phases))
        self.storage_group = storage_group
        self.sector_sizes = tuple(sorted(sector_sizes))

    def status(self, slots: tuple[SlotView, ...]) -> WorkerStatus:
        return WorkerStatus(
            name=self.name, instance=self.instance, host=self.host, address=self.address,
            pid=self.pid, started_at=self.started_at, at=time.time(),
            heartbeat_interval=self.heartbeat_interval, phases=self.phases,
            storage_group=self.storage_group, sector_sizes=self.sector_sizes, slots=slots)
