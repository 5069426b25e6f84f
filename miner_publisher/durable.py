"""Durable state: Redis must persist, and a wiped Redis must never reuse sector numbers.

Two guards:
  * `check_persistence`: Redis with neither AOF nor RDB save rules loses everything on a
    restart; `run` refuses it unless the operator says so (--allow-volatile-redis).
  * a generation marker (`Names.generation_key`, a random id written once per dataset) and
    a host-local state file per miner remembering that id and the highest sector number
    allocated. A Redis without the marker, or with another one, was wiped (or swapped):
    the miner stops, and `enqueue`/`run` refuse until `miner-publisher recover`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from broker_topology.errors import SealpoolError
from broker_topology.naming import MinerKey, Names

from .redis_text import opt_text, text
from .scripts import register

#: Exit status of a miner command that found Redis wiped (named, not a usage error: the
#: data store lost its state and an operator must restore or recover it).
EXIT_REDIS_WIPED = 65
STATE_DIR_ENV = "SEALPOOL_MINER_STATE_DIR"
ALLOW_VOLATILE_ENV = "SEALPOOL_MINER_ALLOW_VOLATILE_REDIS"


class RedisWiped(SealpoolError):
    """Redis lost (or replaced) the dataset this miner worked on."""


class VolatileRedis(SealpoolError):
    """Redis persists nothing, and the operator did not allow that."""


# -- persistence -----------------------------------------------------------------------
def persistence(client: redis.Redis) -> str | None:
    """How Redis persists ("AOF", "RDB save rules ..."), None when it persists nothing.
    Raises VolatileRedis when it cannot be told (CONFIG refused and AOF off)."""
    try:
        appendonly = text(client.config_get("appendonly").get("appendonly", "no"))
        save = text(client.config_get("save").get("save", ""))
    except redis.ResponseError as exc:
        # CONFIG renamed away or denied by ACL: INFO may still say whether AOF is on.
        try:
            aof = str(client.info("persistence").get("aof_enabled", 0)) == "1"
        except redis.ResponseError:
            aof = False
        if aof:
            return "AOF"
        raise VolatileRedis(
            f"cannot tell whether Redis persists its data: CONFIG GET refused ({exc}) and "
            "INFO does not show AOF on; enable AOF, or pass --allow-volatile-redis "
            f"({ALLOW_VOLATILE_ENV}=1) if RDB snapshots are enough") from None
    if appendonly == "yes":
        return "AOF"
    if save.strip():
        return f"RDB save rules {save.strip()!r}"
    return None


def check_persistence(client: redis.Redis, allow_volatile: bool) -> str:
    """Describe how Redis persists; raise VolatileRedis unless it does or it is allowed."""
    if allow_volatile:
        return "persistence not checked (--allow-volatile-redis)"
    how = persistence(client)
    if how is None:
        raise VolatileRedis(
            "Redis persists nothing (appendonly no, no save rules): a restart would lose "
            "every sector record and reuse sector numbers; run it with --appendonly yes "
            f"(deploy/local.sh does), or pass --allow-volatile-redis ({ALLOW_VOLATILE_ENV}=1)"
            " for a throwaway pool")
    return how


# -- the generation marker and the host's state file -------------------------------------
def state_dir() -> Path:
    base = os.environ.get(STATE_DIR_ENV)
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "sealpool"


@dataclass
class _State:
    generation: str = ""
    high_water: int = 0


@dataclass
class Durable:
    """This host's memory of one miner's Redis dataset: its generation and the highest
    sector number allocated. Implements the store's allocation guard."""

    client: redis.Redis
    names: Names
    miner: str
    path: Path
    generation: str = ""
    high_water: int = 0

    @classmethod
    def for_miner(cls, client: redis.Redis, names: Names, miner: str,
                  directory: Path | None = None) -> Durable:
        path = (directory or state_dir()) / names.namespace / f"{miner}.json"
        return cls(client, names, miner, path)

    # -- the file ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        """Read-modify-write of the state file under an exclusive lock (several processes
        of one host share it); the new content replaces the old atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "w") as f:
                json.dump({"generation": state.generation, "high_water": state.high_water}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def _read(self) -> _State:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError) as exc:
            raise RedisWiped(f"state file {self.path}: unreadable ({exc}); fix or remove "
                             "it, then run `miner-publisher recover`") from None
        generation = data.get("generation", "") if isinstance(data, dict) else None
        high_water = data.get("high_water", 0) if isinstance(data, dict) else None
        if not isinstance(generation, str) or not isinstance(high_water, int):
            raise RedisWiped(f"state file {self.path}: not a sealpool miner state; fix or "
                             "remove it, then run `miner-publisher recover`")
        return _State(generation, high_water)

    def _seq(self) -> int:
        raw = self.client.get(self.names.miner_key(MinerKey.SEQ, self.miner))
        return int(raw) if raw else 0

    # -- checks ------------------------------------------------------------------------
    def _wiped(self, known: str, now: str | None) -> RedisWiped:
        what = "has no generation marker" if now is None else f"has generation {now}"
        return RedisWiped(
            f"Redis {what}, not {known} that {self.path} remembers: it was wiped or replaced "
            f"since this host last used it (sector numbers up to {self.high_water} were "
            "allocated). Restore it from AOF, or run `miner-publisher recover --miner "
            f"{self.miner}` to start a new generation above those numbers")

    def open(self) -> Durable:
        """Check Redis against this host's state file, creating the marker on a first
        start; raise RedisWiped when the dataset is not the one this host knew."""
        key = self.names.generation_key
        with self._locked() as state:
            known = state.generation
            self.high_water = state.high_water
            current = opt_text(self.client.get(key))
            if known and current != known:
                raise self._wiped(known, current)
            if current is None:
                # A first start (on a fresh dataset, or one from before the marker existed).
                self.client.set(key, uuid.uuid4().hex, nx=True)
                current = text(self.client.get(key))
            self.generation = current
            self.high_water = max(self.high_water, self._seq())
            state.generation, state.high_water = current, self.high_water
        return self

    def check(self) -> None:
        """Raise RedisWiped if the marker vanished or changed (called every tick)."""
        current = opt_text(self.client.get(self.names.generation_key))
        if current != self.generation:
            raise self._wiped(self.generation, current)

    def allocated(self, last: int) -> None:
        """Remember that sector numbers up to `last` were handed out."""
        with self._locked() as state:
            self.high_water = max(self.high_water, state.high_water, last)
            state.generation, state.high_water = self.generation, self.high_water

    def recover(self, next_sector: int | None = None) -> tuple[str, int]:
        """After a wipe: adopt the marker (or write a new one) and move the counter above
        every number this host allocated (and below `next_sector`). Returns (generation,
        the counter)."""
        key = self.names.generation_key
        with self._locked() as state:
            self.high_water = state.high_water
            self.client.set(key, uuid.uuid4().hex, nx=True)
            self.generation = text(self.client.get(key))
            floor = max(self.high_water, (next_sector or 1) - 1)
            seq = int(register(self.client, "allocate.lua")(
                keys=[self.names.miner_key(MinerKey.SEQ, self.miner), key],
                args=[0, floor, ""]))
            self.high_water = seq
            state.generation, state.high_water = self.generation, seq
        return self.generation, seq
