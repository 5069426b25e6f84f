"""What a phase needs (disk, memory) for a sector size, and whether a slot has it now.

The claim is a `basic.get` that happens before the job is decoded, so the sector size is
unknown when a slot decides whether to claim. A slot therefore claims a phase when some
size it takes fits now, and once the job is decoded checks the job's own size: one that
does not fit now, or that this worker does not take, goes round again through the delay
exchange (a new message: no delivery limit is spent). The sizes a worker takes default to
those the machine can hold at all (`machine_sizes`).

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

from broker_topology.control import size_key, why_held
from broker_topology.messages import Phase
from broker_topology.units import format_bytes, sector_size_name

from .claimer import phase_of_queue
from .config_parts import ALL_SECTOR_SIZES
from .executors.simulated import SimulatedExecutor

if TYPE_CHECKING:
    from broker_topology.naming import Names

    from .config import WorkerSettings
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
    """Decides, before each claim pass, which phases each idle slot may claim, and after a
    claim whether the job's own size fits now."""

    def __init__(self, executors: dict[Phase, Any], sector_sizes: Iterable[int],
                 sealed_dir: Path, names: Names, machine: Machine | None = None) -> None:
        self.executors = executors
        self.sizes = tuple(sorted(sector_sizes))
        self.sealed_dir = sealed_dir
        self.names = names
        self.machine = machine or Machine()
        #: queue -> monotonic time until which this worker leaves it to others
        self._shunned: dict[str, float] = {}

    def shun(self, queue: str, seconds: float) -> None:
        """Leave `queue` to other workers for a while: it just held a job this worker cannot
        run (a size it does not take, or one that does not fit now). Without it the job,
        back from the delay queue just as this worker polls again, would be taken by this
        worker every time instead of by one that can run it."""
        self._shunned[queue] = time.monotonic() + seconds

    def admit(self, idle: list[Slot], every: list[Slot]) -> list[Slot]:
        """Set each idle slot's `held_back`/`held_sizes` and `candidates`; return those that
        may claim. A phase is claimed if some size it takes fits: the size of a job is known
        only once it is claimed (then `fits` checks it)."""
        now = time.monotonic()
        self._shunned = {q: t for q, t in self._shunned.items() if t > now}
        memory = self.machine.free_memory()
        running = self._running(every)
        ready = []
        for slot in idle:
            held: dict[str, str] = {}
            by_size: dict[str, str] = {}
            for phase in sorted(slot.phases):
                whys = [self._why_not(slot, phase, size, memory, running)
                        for size in self.sizes]
                for size, why in zip(self.sizes, whys, strict=True):
                    if why is not None:
                        by_size[size_key(phase, size)] = why
                if all(whys):
                    held[phase.value] = str(whys[0])  # even the smallest does not fit
            slot.held_back, slot.held_sizes = held, by_size
            allowed = {p for p in slot.phases if p.value not in held}
            slot.candidates = [q for q in slot.queues if q not in self._shunned
                               and phase_of_queue(self.names, q) in allowed]
            if slot.candidates:
                ready.append(slot)
        return ready

    def fits(self, slot: Slot, phase: Phase, size: int) -> str | None:
        """Why the slot cannot run this phase at this size now (as the last claim pass
        found it), or None."""
        if size not in self.sizes:
            return f"this worker does not take {sector_size_name(size)} sectors"
        return why_held(slot.held_back, slot.held_sizes, phase, size)

    def _running(self, every: list[Slot]) -> dict[int, int]:
        """Disk that jobs running now will still write, per filesystem."""
        running: dict[int, int] = {}
        for s in every:
            job = s.job
            if job is not None:
                dev = self.machine.device(s.temp_dir)
                running[dev] = running.get(dev, 0) + need_of(
                    self.executors.get(job.phase), job.phase, job.size).disk
        return running

    def _why_not(self, slot: Slot, phase: Phase, size_bytes: int, memory: int,
                 running: dict[int, int]) -> str | None:
        n = need_of(self.executors.get(phase), phase, size_bytes)
        size = sector_size_name(size_bytes)
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


def resolve_sizes(cfg: WorkerSettings, executors: dict[Phase, Any],
                  temp_dirs: Iterable[Path]) -> WorkerSettings:
    """`cfg` with its sector sizes filled in from the machine when it names none."""
    if cfg.sector_sizes:
        return cfg
    sizes = machine_sizes(executors, cfg.phases, temp_dirs)
    return cfg.model_copy(update={"sector_sizes": sizes})


def machine_sizes(executors: dict[Phase, Any], phases: Iterable[Phase],
                  temp_dirs: Iterable[Path], memory_total: int | None = None,
                  disk_total: Callable[[Path], int] | None = None) -> tuple[int, ...]:
    """The sector sizes this machine can take at all: every phase it serves fits the
    machine's total memory and each temp disk's size (what is free now is checked per
    claim). The default of `sector_sizes`, so a worker started without size settings takes
    2KiB work on a small machine instead of waiting for room for 64GiB."""
    total = memory_total if memory_total is not None else psutil.virtual_memory().total
    capacity = disk_total or (lambda p: shutil.disk_usage(p).total)
    smallest_disk = min((capacity(d) for d in temp_dirs), default=0)
    fits = [size for size in ALL_SECTOR_SIZES
            if all(need_of(executors.get(p), p, size).memory <= total
                   and need_of(executors.get(p), p, size).disk <= smallest_disk
                   for p in phases)]
    return tuple(fits) or ALL_SECTOR_SIZES[:1]
