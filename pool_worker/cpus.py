"""CPU lists as operators write them ("0-7,16-23"), checked against this machine, and the
affinity of a slot's thread.

A slot's executor runs on its slot thread; on Linux `sched_setaffinity(0, ...)` pins the
calling thread only, and threads and child processes started from it inherit the mask, so
pinning the slot thread covers built-in executors and external processors alike."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from broker_topology.units import format_cpus


def parse_cpus(value: Any) -> tuple[int, ...]:
    """ "0-3,8" or [0, 1, 2] -> (0, 1, 2, 3, 8), sorted, without duplicates."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        cpus: set[int] = set()
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            first, sep, last = part.partition("-")
            try:
                lo, hi = int(first), int(last) if sep else int(first)
            except ValueError:
                raise ValueError(f"cannot read {part!r} as CPUs; use e.g. 0-7,16-23") from None
            if lo < 0 or hi < lo:
                raise ValueError(f"bad CPU range {part!r}")
            cpus.update(range(lo, hi + 1))
        value = cpus
    if isinstance(value, Iterable):
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{v!r} is not a CPU number")
            out.append(v)
        return tuple(sorted(set(out)))
    raise ValueError(f"cannot read {value!r} as CPUs; use e.g. \"0-7,16-23\" or [0, 1]")


def available() -> frozenset[int]:
    """The CPUs this process may run on (cgroup and taskset limits included)."""
    return frozenset(os.sched_getaffinity(0))


def check(cpus: tuple[int, ...]) -> str | None:
    """Why `cpus` cannot be used here, or None."""
    have = available()
    missing = [c for c in cpus if c not in have]
    if missing:
        return (f"CPU {format_cpus(missing)} not on this machine "
                f"(available: {format_cpus(have)})")
    return None


def pin_current_thread(cpus: tuple[int, ...]) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
