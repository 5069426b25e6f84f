"""What a run leaves behind, simulated or real: every job run and every sector's fate.
The metrics (metrics.py) read only this, so both runs are measured the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker_topology.messages import Phase

#: Which slots a job ran on: the slot's phases, its machine group, its worker.
SlotKind = frozenset[Phase]


@dataclass(frozen=True)
class SlotInfo:
    key: str  # "<worker>/<index>"
    worker: str
    group: str  # machine group
    phases: SlotKind
    locality: str  # where follow-ups of sectors homed here wait (storage group or worker)


@dataclass(frozen=True)
class Run:
    """One job run on one slot."""

    miner: str
    sector: int
    deal: bool
    phase: Phase
    attempt: int
    slot: str
    #: When the job could first have been started (ap: the sector's arrival, so sectors
    #: held back by admission count as waiting work), then started and finished.
    ready_at: float
    started_at: float
    finished_at: float
    outcome: str  # ok, temporary, needs_data...
    #: Where its files were (None: anywhere).
    home: str | None = None


@dataclass(frozen=True)
class SectorFate:
    miner: str
    sector: int
    deal: bool
    arrived_at: float
    deadline: float
    done_at: float | None
    failed: bool = False


@dataclass
class Trace:
    slots: list[SlotInfo]
    runs: list[Run] = field(default_factory=list)
    sectors: list[SectorFate] = field(default_factory=list)
    #: miner -> weight
    weights: dict[str, float] = field(default_factory=dict)
    #: Mean observed duration per phase (what `miner-publisher ratio` would read).
    durations: dict[Phase, float] = field(default_factory=dict)
    end: float = 0.0
