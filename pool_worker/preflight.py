"""Checks of the config against this machine, before the worker claims anything: each slot's
phases, directories, cores and GPU, and the external programs. The first problem stops the
start with one line naming the key and where it was set (exit code 2)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from broker_topology.control import GpuInfo
from broker_topology.messages import Phase

from . import cpus, gpu
from .config import WorkerSettings
from .config_file import ConfigSource
from .config_parts import ExternalConfig
from .storage import Storage


def check(cfg: WorkerSettings, source: ConfigSource, storage: Storage) -> dict[int, GpuInfo]:
    """Raise ConfigError for the first problem; return the GPUs the slots use."""
    _phases(cfg, source)
    _directories(cfg, source, storage)
    for i, slot in enumerate(cfg.slots):
        if why := cpus.check(slot.cores):
            raise source.error(("slots", i, "cores"), why)
    gpus = _gpus(cfg, source)
    _programs(cfg, source)
    return gpus


def _names(phases: Any) -> str:
    return ", ".join(sorted(p.value for p in phases))


def _phases(cfg: WorkerSettings, source: ConfigSource) -> None:
    served: set[Phase] = set()
    for i, slot in enumerate(cfg.slots):
        phases = slot.phases if slot.phases is not None else cfg.phases
        if extra := phases - cfg.phases:
            raise source.error(("slots", i, "phases"),
                               f"{_names(extra)} not among the worker's phases "
                               f"({_names(cfg.phases)})")
        if not phases:
            raise source.error(("slots", i, "phases"), "a slot needs at least one phase")
        served |= phases
    if unserved := cfg.phases - served:
        raise source.error(("phases",), f"{_names(unserved)} served by no slot")


def _directories(cfg: WorkerSettings, source: ConfigSource, storage: Storage) -> None:
    for i, temp in enumerate(storage.temp_dirs):
        if temp in storage.configured:
            _usable(temp, source, ("slots", i, "temp_dir"))
    if storage.sealed_dir in storage.configured:
        _usable(storage.sealed_dir, source, ("sealed_dir",))
    # the defaults under data_dir are created at start: their nearest existing parent
    # must take them (nothing is created before every check passed)
    for d in {storage.home, storage.sealed_dir, *storage.temp_dirs} - storage.configured:
        existing = next(p for p in (d, *d.parents) if p.exists())
        _usable(existing, source, ("data_dir",))


def _usable(path: Path, source: ConfigSource, loc: tuple[Any, ...]) -> None:
    if not path.exists():
        raise source.error(loc, f"{path} does not exist (create it, or mount its disk)")
    if not path.is_dir():
        raise source.error(loc, f"{path} is not a directory")
    try:  # os.access says yes to root even on a read-only mount
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise source.error(loc, f"{path} is not writable ({exc.strerror})") from None


def _gpus(cfg: WorkerSettings, source: ConfigSource) -> dict[int, GpuInfo]:
    wanted: list[tuple[tuple[Any, ...], int]] = []
    if cfg.gpu is not None:
        wanted.append((("gpu",), cfg.gpu))
    wanted += [(("slots", i, "gpu"), s.gpu) for i, s in enumerate(cfg.slots)
               if s.gpu is not None]
    found: dict[int, GpuInfo] = {}
    for loc, index in wanted:
        if index not in found:
            try:
                found |= gpu.probe([index])
            except gpu.GpuUnavailable as exc:
                raise source.error(loc, str(exc)) from None
    return found


def _programs(cfg: WorkerSettings, source: ConfigSource) -> None:
    for phase, spec in cfg.executors.items():
        if not isinstance(spec, ExternalConfig) or phase not in cfg.phases:
            continue
        program = spec.command[0]
        loc = ("executors", phase.value, "command")
        if "/" in program:
            if not os.path.isfile(program):
                raise source.error(loc, f"{program} does not exist")
            if not os.access(program, os.X_OK):
                raise source.error(loc, f"{program} is not executable")
        elif shutil.which(program) is None:
            raise source.error(loc, f"{program} not found on PATH")
