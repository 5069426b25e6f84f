"""Executor registry: which executor runs which phase on this worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker_topology.errors import ConfigError
from broker_topology.messages import Phase

from ..config_parts import ExecutorConfig, ExternalConfig
from .base import Cancelled, ExecContext, Executor
from .external import ExternalExecutor
from .labeler import ApExecutor, Pc1Executor
from .simulated import SimulatedExecutor, parse_faults

#: Phases with an executor built into sealpool: the labeler_c kernel.
BUILTIN: dict[Phase, Executor] = {Phase.AP: ApExecutor(), Phase.PC1: Pc1Executor()}


def executors_for(phases: frozenset[Phase], simulate_s: float | None,
                  simulate_fail: str = "", *,
                  configured: Mapping[Phase, ExecutorConfig] | None = None,
                  simulate_builtin: bool = False, pc1_slots: int = 1,
                  pc1_pool_bytes: int | None = None) -> dict[Phase, Executor]:
    """The config's `[executors.<phase>]` first, then built-in executors; `--simulate S`
    covers every phase without one (and the built-in ones too with `simulate_builtin`)."""
    chosen: dict[Phase, Executor] = {}
    missing = []
    faults = parse_faults(simulate_fail)
    for phase in phases:
        if configured and phase in configured:
            chosen[phase] = from_config(configured[phase], faults.get(phase, ()))
        elif phase in BUILTIN and not (simulate_builtin and simulate_s is not None):
            chosen[phase] = Pc1Executor(slots=pc1_slots, pool_bytes=pc1_pool_bytes) \
                if phase is Phase.PC1 \
                else BUILTIN[phase]
        elif simulate_s is not None:
            chosen[phase] = SimulatedExecutor(simulate_s, faults.get(phase, ()))
        else:
            missing.append(phase.value)
    if missing:
        raise ConfigError(f"no executor for phase(s) {', '.join(sorted(missing))}: "
                          "pass --simulate SECONDS or drop them from --phases")
    return chosen


def from_config(cfg: ExecutorConfig, faults: tuple[Any, ...] = ()) -> Executor:
    if isinstance(cfg, ExternalConfig):
        return ExternalExecutor(cfg.command, cfg.timeout, cfg.kill_grace, dict(cfg.env))
    return SimulatedExecutor(cfg.duration, faults)


__all__ = ["BUILTIN", "Cancelled", "ExecContext", "Executor", "ExternalExecutor",
           "SimulatedExecutor", "executors_for", "from_config"]
