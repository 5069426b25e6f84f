"""Scenarios: miners, machines, phase durations, chain waits and arrivals, from TOML.

A bad value is one line naming its key (`seed-003.toml: machines.1.slots.0.phases: ...`).
Durations are written as operators write them ("4h", "90s") or as seconds."""

from __future__ import annotations

import math
import random
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from broker_topology.errors import ConfigError
from broker_topology.messages import MINER_ID_RE, PIPELINE, WORKER_NAME_RE, Phase
from broker_topology.units import parse_duration, parse_sector_size
from miner_publisher.ratio import parse_rate

#: Phases that hold a GPU while they run (a machine runs at most `gpus` of them at once).
GPU_PHASES = frozenset({Phase.PC2, Phase.C2})


def _seconds(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _phases(value: Any) -> Any:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return value


def _rate(value: Any) -> Any:
    return parse_rate(value) if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0, allow_inf_nan=False)]
Phases = Annotated[frozenset[Phase], BeforeValidator(_phases), Field(min_length=1)]
#: Sectors per hour ("20/h", or a number).
PerHour = Annotated[float, BeforeValidator(_rate), Field(gt=0, allow_inf_nan=False)]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Spread(_Part):
    """A phase's duration: `mean`, and how runs vary around it."""

    mean: Seconds
    #: none: always the mean; uniform: mean ± pct%; lognormal: mean × e^N(-σ²/2, σ).
    kind: Literal["none", "uniform", "lognormal"] = "none"
    pct: float = Field(default=0.0, ge=0, lt=100)
    sigma: float = Field(default=0.0, ge=0, le=3)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return self.mean * rng.uniform(1 - self.pct / 100, 1 + self.pct / 100)
        if self.kind == "lognormal":  # the mean stays the mean
            return self.mean * math.exp(rng.gauss(-self.sigma ** 2 / 2, self.sigma))
        return self.mean


def _spread(value: Any) -> Any:
    return {"mean": value} if isinstance(value, str | int | float) else value


SpreadField = Annotated[Spread, BeforeValidator(_spread)]


class Miner(_Part):
    id: str = Field(pattern=MINER_ID_RE.pattern)
    #: Part of the arrivals (backlog or rate) that is this miner's.
    share: float = Field(gt=0)
    #: Its weight in the pool (fair shares of slot time); default: its share.
    weight: float | None = Field(default=None, gt=0)
    #: Fraction of its sectors that carry deals (the rest are CC).
    deals: float = Field(default=0.0, ge=0, le=1)
    deal_deadline: Seconds = 24 * 3600.0
    cc_deadline: Seconds = 7 * 86400.0

    @property
    def pool_weight(self) -> float:
        return self.weight if self.weight is not None else self.share


class SlotSpec(_Part):
    phases: Phases
    count: int = Field(default=1, ge=1, le=256)


class Machines(_Part):
    """`count` identical machines."""

    name: str = Field(pattern=WORKER_NAME_RE.pattern.replace("62", "40"))
    count: int = Field(ge=1, le=1000)
    slots: tuple[SlotSpec, ...] = Field(min_length=1)
    #: GPUs per machine (informative, and at least the slots serving GPU phases).
    gpus: int = Field(default=0, ge=0)
    #: "machine": each machine keeps its sectors' files; any other word names a storage
    #: group shared by every machine that names it (any member takes the follow-ups).
    storage: str = Field(default="machine", pattern=WORKER_NAME_RE.pattern)

    @model_validator(mode="after")
    def _gpu_slots(self) -> Machines:
        gpu_slots = sum(s.count for s in self.slots if s.phases & GPU_PHASES)
        if self.gpus and gpu_slots > self.gpus:
            raise ValueError(f"{gpu_slots} slots serve GPU phases but the machine has "
                             f"{self.gpus} GPU(s)")
        return self


class Chain(_Part):
    precommit: Seconds = 0.0
    seed: Seconds = 0.0
    commit: Seconds = 0.0


class Arrivals(_Part):
    #: Sectors waiting at t=0 (split by the miners' shares).
    backlog: int = Field(default=0, ge=0)
    #: Poisson arrivals over `duration`, sectors per hour (all miners).
    rate: PerHour | None = None
    duration: Seconds = 0.0

    @model_validator(mode="after")
    def _some(self) -> Arrivals:
        if self.backlog == 0 and (self.rate is None or self.duration <= 0):
            raise ValueError("no sectors: set backlog, or rate and duration")
        return self


class Policy(_Part):
    """The pool's knobs that shape scheduling (their SEALPOOL_* namesakes)."""

    pool_depth: int = Field(default=2, ge=1)
    deals_first: bool = False
    aging_deal: Seconds = 2 * 3600.0
    aging_cc: Seconds = 8 * 3600.0
    locality_wait: Seconds = 15 * 60.0
    locality_recovery: Literal["wait", "restart"] = "wait"
    home_wait: Seconds = 120.0
    escalate_slack: Seconds = 3600.0
    #: How often miners look for sectors short of slack (the real ones: every 2 s).
    escalate_every: Seconds = 60.0
    retry_base: Seconds = 5.0
    delay_buckets: tuple[int, ...] = (5, 30, 120, 600, 1800)


class RealScale(_Part):
    """How `--real` shrinks the scenario to run on the broker in about a minute."""

    sectors: int = Field(default=12, ge=1)
    #: Per machine group name: how many machines and their slots (default: as simulated).
    machines: dict[str, Machines] = Field(default_factory=dict)
    #: Phase durations in real seconds (no spread: the simulated executor is exact).
    durations: dict[Phase, Seconds] = Field(default_factory=dict)
    chain: Chain = Chain()


class Scenario(_Part):
    name: str = "scenario"
    seed: int = 1
    sector_size: str = "32GiB"
    #: Stop simulating here even if sectors are left (a bound, not a target).
    horizon: Seconds = 30 * 86400.0
    miners: tuple[Miner, ...] = Field(min_length=1)
    machines: tuple[Machines, ...] = Field(min_length=1)
    durations: dict[Phase, SpreadField]
    chain: Chain = Chain()
    arrivals: Arrivals
    policy: Policy = Policy()
    #: Temporary failures per phase (probability a run fails and is retried).
    failures: dict[Phase, float] = Field(default_factory=dict)
    real: RealScale = RealScale()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        parse_sector_size(self.sector_size)
        if len({m.id for m in self.miners}) != len(self.miners):
            raise ValueError("miner ids repeat")
        if len({m.name for m in self.machines}) != len(self.machines):
            raise ValueError("machine group names repeat")
        served = frozenset().union(*(s.phases for m in self.machines for s in m.slots))
        if missing := [p.value for p in PIPELINE if p not in served]:
            raise ValueError(f"no machine serves {', '.join(missing)}")
        if missing := [p.value for p in PIPELINE if p not in self.durations]:
            raise ValueError(f"durations: no duration for {', '.join(missing)}")
        if unknown := set(self.real.machines) - {m.name for m in self.machines}:
            raise ValueError(f"real.machines: no machine group {', '.join(sorted(unknown))}")
        return self

    @property
    def size(self) -> int:
        return parse_sector_size(self.sector_size)


def load(path: Path) -> Scenario:
    """A scenario file; ConfigError in one line naming the file and the key."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse(data, str(path))


def parse(data: dict[str, Any], where: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {key or 'scenario'}: {msg}") from None


def builtin(name: str) -> Path:
    """A scenario shipped with the package (`seed-003`)."""
    path = Path(str(files("sealpool_sim").joinpath("scenarios", f"{name}.toml")))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.toml"))
        raise ConfigError(f"no scenario {name!r}; shipped: {', '.join(shipped)}")
    return path


def resolve(spec: str) -> Scenario:
    """A path to a TOML file, or the name of a shipped scenario."""
    path = Path(spec)
    return load(path if path.suffix == ".toml" or path.exists() else builtin(spec))


def scaled(s: Scenario, time_scale: float = 1.0) -> Scenario:
    """The scenario as `--real` runs it: its `[real]` machines, sector count, durations
    (exact) and chain waits, times × time_scale."""
    r = s.real
    machines = tuple(r.machines.get(m.name, m) for m in s.machines)
    machines = tuple(m.model_copy(update={"name": name}) for m, name
                     in zip(machines, (m.name for m in s.machines), strict=True))
    durations = {p: Spread(mean=r.durations.get(p, s.durations[p].mean) * time_scale)
                 for p in PIPELINE}
    chain = Chain(precommit=r.chain.precommit * time_scale, seed=r.chain.seed * time_scale,
                  commit=r.chain.commit * time_scale)
    return s.model_copy(update={
        "name": f"{s.name} (real scale)", "machines": machines, "durations": durations,
        "chain": chain, "arrivals": Arrivals(backlog=r.sectors), "failures": {},
        "sector_size": "2KiB"})
