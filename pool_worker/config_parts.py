"""The structured parts of the worker config: a slot, an executor, and the value parsers
they share with the flat settings (sizes, CPU lists, phase lists, sector sizes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from broker_topology.messages import Phase
from broker_topology.settings import Seconds
from broker_topology.units import SECTOR_SIZES, parse_bytes, parse_duration, parse_sector_size

from .cpus import parse_cpus


def parse_phases(value: Any) -> Any:
    """ "pc1,pc2" -> {PC1, PC2}; lists and sets are left to pydantic."""
    if isinstance(value, str):
        items = [v.strip().lower() for v in value.split(",") if v.strip()]
        unknown = [v for v in items if v not in {p.value for p in Phase}]
        if unknown:
            raise ValueError(f"unknown phase(s) {', '.join(unknown)}; "
                             f"known: {', '.join(p.value for p in Phase)}")
        return frozenset(Phase(v) for v in items)
    return value


def _bytes(value: Any) -> Any:
    return parse_bytes(value) if isinstance(value, str) else value


def _seconds(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def parse_sector_sizes(value: Any) -> Any:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return tuple(sorted({parse_sector_size(str(v)) for v in value}))
    return value


Bytes = Annotated[int, BeforeValidator(_bytes), Field(ge=0)]
Cpus = Annotated[tuple[int, ...], BeforeValidator(parse_cpus)]
Phases = Annotated[frozenset[Phase], BeforeValidator(parse_phases)]
#: Empty means: every size this machine can hold (pool_worker.resources.machine_sizes).
SectorSizes = Annotated[tuple[int, ...], BeforeValidator(parse_sector_sizes)]
ALL_SECTOR_SIZES: tuple[int, ...] = tuple(sorted(SECTOR_SIZES.values()))


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlotConfig(_Part):
    """One slot ("sealing thread"): runs one job at a time."""

    #: Phases it claims; None: all the worker's phases.
    phases: Phases | None = None
    #: Where new sectors' temp files go (fast storage); None: <data_dir>/<name>/temp.
    #: `{name}` expands to the worker name. Must exist: a missing mount is never filled.
    temp_dir: Path | None = None
    #: CPUs its executor runs on ("0-7,16-23"); empty: all.
    cores: Cpus = ()
    #: GPU index (NVML order) its executor sees; None: the worker's --gpu.
    gpu: Annotated[int, Field(ge=0)] | None = None
    #: Memory budget: a phase needing more is not claimed. None: what the machine has free.
    memory: Bytes | None = None
    #: Bytes to leave free on the temp filesystem on top of a phase's need.
    keep_free: Bytes = 0


def parse_slots(value: Any) -> Any:
    """`slots = 4` (four default slots), a JSON list from the environment, or a list of
    `[[slots]]` tables."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 256:
            raise ValueError(f"must be between 1 and 256, got {value}")
        return tuple(SlotConfig() for _ in range(value))
    return value


Slots = Annotated[tuple[SlotConfig, ...], BeforeValidator(parse_slots),
                  Field(min_length=1, max_length=256)]


class ExternalConfig(_Part):
    """Any program: the job as JSON on stdin, the outputs as JSON on stdout."""

    kind: Literal["external"]
    #: argv; a relative program path is taken from the config file's directory.
    command: tuple[str, ...] = Field(min_length=1)
    #: Kill it (and report a temporary error) after this long; None: no limit.
    timeout: Seconds | None = None
    #: Between SIGTERM and SIGKILL when it must stop (pause --now, drain, timeout).
    kill_grace: Seconds = 10.0
    #: Extra environment (e.g. FIL_PROOFS_* switches).
    env: dict[str, str] = Field(default_factory=dict)


class SimulatedConfig(_Part):
    kind: Literal["simulated"]
    duration: Annotated[float, BeforeValidator(_seconds), Field(ge=0)] = 0.0


ExecutorConfig = Annotated[ExternalConfig | SimulatedConfig, Field(discriminator="kind")]
