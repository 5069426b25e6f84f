"""The shared table of observed phase durations: how miners write it and workers read it.

Redis hash `<ns>:durations` (Names.durations_key): field `<phase>:<size>` -> `{"mean": s}`,
an exponentially weighted mean of accepted results' durations, measured on the miner's
clock. Miners use it for deadlines; workers charge fair queuing with it at claim time."""

from __future__ import annotations

import json
import math

from .messages import Phase


def duration_field(phase: Phase, size: int) -> str:
    return f"{phase.value}:{size}"


def encode_mean(mean: float) -> str:
    return json.dumps({"mean": mean})


def decode_mean(raw: str | bytes | None) -> float | None:
    """A stored mean, or None when absent or not a finite non-negative number."""
    try:
        mean = float(json.loads(raw)["mean"]) if raw else None
    except (ValueError, TypeError, KeyError):
        return None
    return mean if mean is not None and math.isfinite(mean) and mean >= 0 else None
