"""A slot: one job at a time, on its own thread, with its own AMQP channel (a channel error
requeues every delivery on that channel, so slots never share one)."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from broker_topology.messages import Job, Phase
from broker_topology.transport import Delivery

from .claimer import candidate_queues

if TYPE_CHECKING:
    from broker_topology.naming import Names

    from .config import WorkerSettings
    from .leases import Grant
    from .shares import Charge
    from .storage import Storage


class SlotState(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"


@dataclass
class Slot:
    index: int
    phases: frozenset[Phase]
    candidates: list[str]
    state: SlotState = SlotState.IDLE
    job: Job | None = None
    delivery: Delivery | None = None
    started_at: float | None = None
    last_error: str | None = None
    #: The lease of the running job, once granted.
    grant: Grant | None = None
    #: What claiming the running job charged its miner (fair queuing), if anything.
    charge: Charge | None = None
    #: Set by the keeper when another worker holds this job's lease now.
    lease_lost: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    inbox: queue.SimpleQueue[tuple[Delivery, Job] | None] = field(
        default_factory=queue.SimpleQueue)
    # -- what the operator configured (SlotConfig, resolved) and steers (pause/resume)
    #: The phases the config gives it; `phases` is what it claims now (resume --phase).
    configured_phases: frozenset[Phase] = frozenset()
    temp_dir: Path = Path(".")
    cores: tuple[int, ...] = ()
    gpu: int | None = None
    memory: int | None = None
    keep_free: int = 0
    #: Paused: finishes its job, then claims nothing until resumed.
    paused: bool = False
    paused_since: float | None = None
    #: Phase -> why it is not claimed now (set before every claim pass).
    held_back: dict[str, str] = field(default_factory=dict)
    #: `<phase>:<size>` -> why not at that size now (see broker_topology.control.why_held).
    held_sizes: dict[str, str] = field(default_factory=dict)
    #: Every queue of the phases it claims now (the miners' lanes change: refreshed every
    #: claim pass); `candidates` is the part admission leaves it for the next one.
    queues: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.queues:
            self.queues = list(self.candidates)

    @property
    def claimable(self) -> bool:
        return self.state is SlotState.IDLE and not self.paused

    @property
    def channel_key(self) -> str:
        return f"slot-{self.index}"

    def assign(self, delivery: Delivery, job: Job) -> None:
        """Called on the I/O thread when a claim succeeded."""
        self.state = SlotState.BUSY
        self.job, self.delivery, self.started_at = job, delivery, time.time()
        self.cancel.clear()
        self.lease_lost = False
        self.inbox.put((delivery, job))

    def release(self) -> None:
        self.job = self.delivery = self.started_at = self.grant = self.charge = None
        self.state = SlotState.IDLE


def build_slots(cfg: WorkerSettings, names: Names, storage: Storage) -> list[Slot]:
    """The configured slots; unset per-slot values come from the worker's."""
    slots = []
    for i, sc in enumerate(cfg.slots):
        phases = sc.phases if sc.phases is not None else cfg.phases
        slots.append(Slot(i, phases, candidate_queues(names, cfg.locality, phases),
                          configured_phases=phases, temp_dir=storage.temp_dirs[i],
                          cores=sc.cores, gpu=sc.gpu if sc.gpu is not None else cfg.gpu,
                          memory=sc.memory, keep_free=sc.keep_free))
    return slots
