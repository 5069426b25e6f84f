"""The executor protocol: how a phase is run. Executors know nothing about the broker."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from broker_topology.messages import Job


class Cancelled(Exception):
    """The worker is handing the job back (pause --now, drain timeout)."""


@dataclass
class ExecContext:
    #: The sector's directory in this slot's temp storage (created by the runtime).
    workdir: Path
    #: Where finished sectors go (fin moves files there).
    sealed_dir: Path
    worker: str
    slot: int
    gpu: int | None = None
    cores: tuple[int, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("job handed back")


class Executor(Protocol):
    """Runs one phase. Returns the phase's outputs (JSON-able, small); raises a JobError
    subclass (TemporaryError, PermanentError, NeedsData) to say how it failed, or
    Cancelled when ctx.cancelled is set. Must be safe to call from several slot threads."""

    name: str

    def run(self, job: Job, ctx: ExecContext) -> dict[str, Any]: ...
