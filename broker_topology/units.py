"""Parsing of sizes and durations as operators type them ("2KiB", "6h", "90s")."""

from __future__ import annotations

import re
from collections.abc import Iterable

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The sector sizes Filecoin registers proofs for.
SECTOR_SIZES: dict[str, int] = {
    "2KiB": 2 * KiB,
    "8MiB": 8 * MiB,
    "512MiB": 512 * MiB,
    "32GiB": 32 * GiB,
    "64GiB": 64 * GiB,
}
#: The same sizes in bytes: what a message's `size` must be one of.
SECTOR_SIZE_BYTES: frozenset[int] = frozenset(SECTOR_SIZES.values())

_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "kib": KiB,
    "mb": 1000**2, "mib": MiB,
    "gb": 1000**3, "gib": GiB,
    "tb": 1000**4, "tib": 1024 * GiB,
}
#: Bare K/M/G/T: systemd and Kubernetes read them as powers of 1024, others as powers of
#: 1000 (96G is 89.4GiB or 96GiB). Refused, so the operator writes which one was meant.
_AMBIGUOUS_UNITS = frozenset({"k", "m", "g", "t"})
#: Larger byte counts or durations are typing errors (and past 2^63 they stop being ints
#: every consumer can hold: Redis, C, the kernel's pool).
_MAX_BYTES = 2**62
_MAX_SECONDS = 100 * 365 * 86400.0
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_sector_size(text: str) -> int:
    """One of the registered sizes, by name (2KiB) or by byte count."""
    for name, size in SECTOR_SIZES.items():
        if text.strip().lower() in (name.lower(), str(size)):
            return size
    raise ValueError(f"unknown sector size {text!r}; expected one of {', '.join(SECTOR_SIZES)}")


def sector_size_name(size: int) -> str:
    for name, value in SECTOR_SIZES.items():
        if value == size:
            return name
    raise ValueError(f"{size} bytes is not a registered sector size")


def parse_bytes(text: str) -> int:
    """Bytes from "64GiB", "1.5GB", "512MiB" or a bare count; ValueError naming the form."""
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if match is not None and unit in _AMBIGUOUS_UNITS:
        raise ValueError(f"size {text!r} is ambiguous: write {match.group(1)}{unit.upper()}iB "
                         f"(powers of 1024) or {match.group(1)}{unit.upper()}B (powers of 1000)")
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(f"cannot read {text!r} as a size; use e.g. 64GiB, 512MiB or 1000000")
    # float() of hundreds of digits is inf, and int(inf) raises OverflowError: bound first.
    value = float(match.group(1)) * _BYTE_UNITS[unit]
    if not value <= _MAX_BYTES:
        raise ValueError(f"size {_shown(text)} is too large (at most {format_bytes(_MAX_BYTES)})")
    return int(value)


def parse_duration(text: str) -> float:
    """Seconds from "90s", "15m", "6h", "2d" or a bare number of seconds."""
    match = _NUMBER_UNIT.match(text)
    unit = (match.group(2).lower() or "s") if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"cannot read {text!r} as a duration; use e.g. 90s, 15m, 6h or 2d")
    value = float(match.group(1)) * _DURATION_UNITS[unit]
    if not value <= _MAX_SECONDS:
        raise ValueError(f"duration {_shown(text)} is too long (at most 100 years)")
    return value


def _shown(text: str) -> str:
    """`text` quoted for an error message, cut so a pasted blob does not flood it."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def format_bytes(n: int) -> str:
    """1536 -> "1.5KiB", 34359738368 -> "32GiB": the inverse of parse_bytes, for messages."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f}".removesuffix(".0") + unit
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """75 -> "1m15s", 7322 -> "2h2m", 0.4 -> "0s": for ages in tables."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def format_cpus(cpus: Iterable[int]) -> str:
    """(0, 1, 2, 3, 8) -> "0-3,8"."""
    ranges: list[list[int]] = []
    for c in sorted(set(cpus)):
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)
