"""What a phase needs (disk, memory) for a sector size, and whether a slot has it now.

The claim is a `basic.get` that happens before the job is decoded, so the sector size is
unknown when a slot decides whether to claim. A slot therefore checks against the largest
sector size the worker is configured to take (`sector_sizes`); a job of a size it does not
take is sent back through the delay exchange without running (see consumer.py).
The other way, decoding and then handing the job back, would reject it: on a quorum queue
every reject counts toward the delivery limit, and a job refused a few times would end in
the poison queue although nothing was wrong with it.

Needs are fractions of the sector size S, after lotus' resource table (MinMemory) and the
files rust-fil-proofs writes (32GiB: 11 layers + tree-d 2S for pc1; the sealed replica
plus tree-c and tree-r-last, ~0.45S, for pc2; fin moves sealed + cache to the sealed dir).
Disk is checked on the slot's temp filesystem minus what the jobs already running on that
filesystem will still write (counted in full: conservative, because a pc1 that just started
has written nothing yet). Memory is checked against the slot's budget and what the machine
has available now. Simulated executors write a few bytes and need nothing."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import psutil

from broker_topology.messages import Phase
from broker_topology.units import format_bytes, sector_size_name

from .claimer import phase_of_queue
from .executors.simulated import SimulatedExecutor

if TYPE_CHECKING:
    from broker_topology.naming import Names

    from .slots import Slot


@dataclass(frozen=True)
class Need:
    #: Bytes that must be free on the slot's temp filesystem.
    disk: int = 0
    #: Bytes that must be free on the sealed directory's filesystem.
    sealed: int = 0
    memory: int = 0


#: phase -> (temp disk, sealed disk, memory) as multiples of the sector size.
FACTORS: dict[Phase, tuple[float, float, float]] = {
    Phase.AP: (1.1, 0.0, 1 / 32),   # the unsealed copy; CommD streams
    Phase.PC1: (13.0, 0.0, 1.5),    # 11 layers + tree-d; lotus MinMemory 48GiB at 32GiB
    Phase.PC2: (1.5, 0.0, 1.0),     # sealed replica + tree-c + tree-r-last
    Phase.C1: (0.01, 0.0, 1 / 32),
    Phase.C2: (0.01, 0.0, 2.0),     # lotus MinMemory 60GiB at 32GiB
    Phase.FIN: (0.0, 1.5, 1 / 32),  # sealed replica and cache land in the sealed dir
}


def need(phase: Phase, size: int) -> Need:
    disk, sealed, memory = FACTORS[phase]
    return Need(math.ceil(disk * size), math.ceil(sealed * size), math.ceil(memory * size))


class Costed(Protocol):
    """Executors may state their own needs; the table is used otherwise."""

    def requirements(self, phase: Phase, size: int) -> Need: ...


def need_of(executor: Any, phase: Phase, size: int) -> Need:
    if hasattr(executor, "requirements"):
        return cast(Costed, executor).requirements(phase, size)
    if isinstance(executor, SimulatedExecutor):
        return Need()
    return need(phase, size)


@dataclass
class Machine:
    """What the machine has now (replaced in tests)."""

    free_disk: Callable[[Path], int] = field(default=lambda p: shutil.disk_usage(p).free)
    free_memory: Callable[[], int] = field(default=lambda: psutil.virtual_memory().available)
    device: Callable[[Path], int] = field(default=lambda p: os.stat(p).st_dev)


class Admission:
    """Decides, before each claim pass, which phases each idle slot may claim."""

    def __init__(self, executors: dict[Phase, Any], sector_sizes: Iterable[int],
                 sealed_dir: Path, names: Names, machine: Machine | None = None) -> None:
        self.executors = executors
        self.size = max(sector_sizes)
        self.sealed_dir = sealed_dir
        self.names = names
        self.machine = machine or Machine()
        #: queue -> monotonic time until which this worker leaves it to others
        self._shunned: dict[str, float] = {}

    def shun(self, queue: str, seconds: float) -> None:
        """Leave `queue` to other workers for a while: it just held a job of a size this
        worker does not take. Without it the job, back from the delay queue just as this
        worker polls again, would be taken by this worker every time instead of by one
        that can run it."""
        self._shunned[queue] = time.monotonic() + seconds

    def admit(self, idle: list[Slot], every: list[Slot]) -> list[Slot]:
        """Set each idle slot's `held_back` and `candidates`; return those that may claim."""
        now = time.monotonic()
        self._shunned = {q: t for q, t in self._shunned.items() if t > now}
        memory = self.machine.free_memory()
        running: dict[int, int] = {}
        for s in every:
            job = s.job
            if job is not None:
                dev = self.machine.device(s.temp_dir)
                running[dev] = running.get(dev, 0) + need_of(
                    self.executors.get(job.phase), job.phase, job.size).disk
        ready = []
        for slot in idle:
            held: dict[str, str] = {}
            for phase in sorted(slot.phases):
                why = self._why_not(slot, phase, memory, running)
                if why is not None:
                    held[phase.value] = why
            slot.held_back = held
            allowed = {p for p in slot.phases if p.value not in held}
            slot.candidates = [q for q in slot.queues if q not in self._shunned
                               and phase_of_queue(self.names, q) in allowed]
            if slot.candidates:
                ready.append(slot)
        return ready

    def _why_not(self, slot: Slot, phase: Phase, memory: int,
                 running: dict[int, int]) -> str | None:
        n = need_of(self.executors.get(phase), phase, self.size)
        size = sector_size_name(self.size)
        if slot.memory is not None and n.memory > slot.memory:
            return (f"needs {format_bytes(n.memory)} memory for {size} sectors; the slot's "
                    f"budget is {format_bytes(slot.memory)}")
        if n.memory > memory:
            return (f"needs {format_bytes(n.memory)} memory for {size} sectors; "
                    f"{format_bytes(memory)} available")
        if n.disk:
            free = (self.machine.free_disk(slot.temp_dir)
                    - running.get(self.machine.device(slot.temp_dir), 0) - slot.keep_free)
            if n.disk > free:
                kept = f" after keep_free {format_bytes(slot.keep_free)}" if slot.keep_free else ""
                return (f"needs {format_bytes(n.disk)} free disk in {slot.temp_dir} for {size} "
                        f"sectors; {format_bytes(max(free, 0))} usable{kept}")
        if n.sealed:
            free = self.machine.free_disk(self.sealed_dir)
            if n.sealed > free:
                return (f"needs {format_bytes(n.sealed)} free disk in {self.sealed_dir} for "
                        f"{size} sectors; {format_bytes(free)} free")
        return None
