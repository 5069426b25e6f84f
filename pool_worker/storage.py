"""Where this worker keeps files: each slot's temp directory, the sealed directory, and the
worker's own directory (control socket).

A sector's follow-up phases may be claimed by any slot of its home worker, so a job's
working directory is wherever the sector already is (any slot's temp directory); only a
sector seen for the first time starts in the claiming slot's own temp directory.

Directories the config names must exist (so an unmounted disk is never filled by
accident); the defaults under data_dir are created."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import WorkerSettings

#: Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def expand(path: Path, worker: str) -> Path:
    """`{name}` -> the worker name, `{host}` -> the short host name: one config file serves
    identical machines."""
    text = str(path).replace("{name}", worker)
    return Path(text.replace("{host}", socket.gethostname().split(".")[0]))


@dataclass(frozen=True)
class Storage:
    #: Per slot, in slot order.
    temp_dirs: tuple[Path, ...]
    sealed_dir: Path
    #: <data_dir>/<name>: the control socket lives here.
    home: Path
    #: The directories the config names (they must already exist).
    configured: frozenset[Path]

    @classmethod
    def from_config(cls, cfg: WorkerSettings) -> Storage:
        configured: set[Path] = set()
        temps = []
        for slot in cfg.slots:
            if slot.temp_dir is None:
                temps.append(cfg.temp_dir)
            else:
                temps.append(expand(slot.temp_dir, cfg.name))
                configured.add(temps[-1])
        if cfg.sealed_dir is None:
            sealed = cfg.data_dir / cfg.name / "sealed"
        else:
            sealed = expand(cfg.sealed_dir, cfg.name)
            configured.add(sealed)
        return cls(tuple(temps), sealed, cfg.data_dir / cfg.name, frozenset(configured))

    @property
    def control_socket(self) -> Path:
        return self.home / "control.sock"

    def prepare(self) -> None:
        """Create the default directories (configured ones were checked to exist)."""
        for d in {self.home, self.sealed_dir, *self.temp_dirs} - self.configured:
            d.mkdir(parents=True, exist_ok=True)

    def existing_temp_dirs(self) -> list[Path]:
        """Each temp dir, or its nearest existing parent (defaults are created later): what
        a disk-size check can look at before start."""
        out = []
        for d in self.temp_dirs:
            while not d.exists() and d != d.parent:
                d = d.parent
            out.append(d)
        return out

    def workdir(self, slot: int, miner: str, sector: int) -> Path:
        """The sector's directory: where it already is, else new in this slot's temp dir."""
        own = self.temp_dirs[slot]
        for temp in (own, *(t for t in self.temp_dirs if t != own)):
            candidate = temp / miner / str(sector)
            if candidate.is_dir():
                return candidate
        path = own / miner / str(sector)
        path.mkdir(parents=True, exist_ok=True)
        return path
