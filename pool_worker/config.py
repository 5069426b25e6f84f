"""Worker settings: defaults < environment (SEALPOOL_WORKER_*) < command-line flags."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from broker_topology.messages import WORKER_NAME_RE, Phase
from broker_topology.settings import Bytes, Seconds

from .config_parts import (
    ExecutorConfig,
    SectorSizes,
    SlotConfig,
    Slots,
    parse_phases,
)


def default_name() -> str:
    """The host name, made safe for routing keys: one config serves identical machines."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]).strip("-")
    return name[:63] or "worker"


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEALPOOL_WORKER_", extra="forbid",
                                      frozen=True)

    name: str = Field(default_factory=default_name, pattern=WORKER_NAME_RE.pattern)
    phases: Annotated[frozenset[Phase], NoDecode] = frozenset(Phase)
    #: A count of identical slots, or one `[[slots]]` table each (see SlotConfig).
    slots: Annotated[Slots, NoDecode] = (SlotConfig(), SlotConfig())
    data_dir: Path = Path("/var/tmp/sealpool")
    #: Where fin puts finished sectors; None: <data_dir>/<name>/sealed. `{name}` expands.
    sealed_dir: Path | None = None
    #: Workers that share temp storage name one group: the sector's home is then the
    #: group, and any member may run its follow-ups (a routing-key word: no dots).
    storage_group: str | None = Field(default=None, pattern=WORKER_NAME_RE.pattern)
    #: Sector sizes this worker takes (resources are checked per job, for its own size).
    #: Empty: every size the machine can hold (`resources.machine_sizes`), found at start.
    sector_sizes: Annotated[SectorSizes, NoDecode] = ()
    #: Per-phase executors (`[executors.pc2] kind = "external" ...`); the rest are built
    #: in or simulated.
    executors: dict[Phase, ExecutorConfig] = Field(default_factory=dict)
    #: Run phases without a built-in executor as simulated jobs of this many seconds.
    simulate: float | None = Field(default=None, ge=0)
    #: Fault injection for simulated phases: "<phase>=<temporary|permanent|needs_data|crash>
    #: [@sector,...]", separated by ";" (demos, chaos tests, rehearsing an outage).
    simulate_fail: str = ""
    #: With `simulate`, simulate the phases that have a built-in executor (ap, pc1) too.
    simulate_builtin: bool = False
    #: Starts of one job attempt on this pool before it is parked as a crash: a job that
    #: kills its worker must not take down every machine in turn.
    max_starts: int = Field(default=3, ge=1)
    gpu: int | None = Field(default=None, ge=0)
    #: Memory shared by the pc1 slots' layers (e.g. "96GiB"); unset: $MEM_POOL_SIZE, else
    #: (3N+1)/2 · S for N pc1 slots. Below (N+1) · S the worker refuses to start.
    pc1_pool_size: Bytes | None = None
    #: SIGTERM: stop claiming, let running jobs finish this long, then hand them back.
    drain_timeout: Seconds = 600.0
    lease_ttl: Seconds = 60.0
    #: Poll interval when idle; new work rings the doorbell, so this only bounds how long
    #: a broker-side move (aging, locality fallback, retry delay) waits to be noticed.
    idle_poll: Seconds = 5.0
    heartbeat_interval: Seconds = 5.0

    _phases = field_validator("phases", mode="before")(parse_phases)

    @model_validator(mode="before")
    @classmethod
    def _phases_from_slots(cls, data: Any) -> Any:
        """Without `phases`, a worker whose slots all name theirs serves their union."""
        if isinstance(data, dict) and "phases" not in data:
            slots = data.get("slots")
            if isinstance(slots, list | tuple) and slots and all(
                    isinstance(s, dict) and s.get("phases") is not None for s in slots):
                try:
                    union = frozenset().union(*(parse_phases(s["phases"]) if isinstance(
                        s["phases"], str) else frozenset(s["phases"]) for s in slots))
                except (TypeError, ValueError):
                    return data  # the slot's own validation names the bad value
                data = {**data, "phases": union}
        return data

    @property
    def locality(self) -> str:
        """Where this worker's sector files live, as follow-ups are addressed."""
        return self.storage_group or self.name

    @property
    def temp_dir(self) -> Path:
        """Default temp root of slots without their own temp_dir (members of a storage
        group share it)."""
        return self.data_dir / self.locality / "temp"
