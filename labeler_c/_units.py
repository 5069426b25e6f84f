"""Sizes as people write them ("64GiB", "1.5GB", "512MiB", a bare count): the kernel's
own small parser, so labeling depends on nothing outside this package."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_UNITS = {"": 1, "b": 1, **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgtp")},
          **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgtp")}}
_MAX_BYTES = 1 << 60


def parse_size(text: str) -> int:
    """Bytes from "64GiB", "1.5GB", "512MiB" or a bare count; ValueError otherwise. A bare
    "G" or "GI" is refused as ambiguous (powers of 1024 or of 1000?)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read {text[:40]!r} as a size; use e.g. 64GiB, 512MiB, 48GB "
                         "or a number of bytes")
    value = float(match.group(1)) * _UNITS[unit]
    if not value <= _MAX_BYTES:  # also refuses inf
        raise ValueError(f"size {text[:40]!r} is too large")
    return int(value)
