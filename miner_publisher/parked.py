"""What a parked job does to its sector: nothing stays queued behind a dead letter.

A dead letter of the attempt a sector waits for moves the sector on, by why it was parked
(`broker_topology.poison.Reason`). Dead letters of older attempts change nothing."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from broker_topology.messages import ErrorClass
from broker_topology.poison import Reason
from broker_topology.units import sector_size_name

from .config import MinerSettings
from .pipeline import Sector, State, Transition, retry_or_fail

#: The job itself is wrong: running it again cannot help.
_PERMANENT = frozenset({Reason.OVERSIZED, Reason.SCHEMA, Reason.SCHEMA_VERSION,
                        Reason.NOT_JSON})


def is_current(sector: Sector, entry: dict[str, Any]) -> bool:
    return (sector.state is State.QUEUED and sector.phase.value == entry.get("phase")
            and sector.attempt == entry.get("attempt"))


def on_parked(sector: Sector, size: int, entry: dict[str, Any], cfg: MinerSettings,
              rng: random.Random | None = None) -> tuple[Transition, ErrorClass] | None:
    """The transition a dead letter causes (and how it counts), None if it is not for the
    attempt the sector waits for. Pure."""
    if not is_current(sector, entry):
        return None
    reason, detail = str(entry.get("reason")), str(entry.get("detail") or "no detail")
    phase = sector.phase
    parked = f"{entry.get('kind') or 'job'} parked as {reason}"  # its job, or its result
    if reason == Reason.CRASH_LOOP:
        # The worker's own start count: every worker that took it died.
        return _failed(sector, f"{phase}: crash: crash_loop ({detail})"), ErrorClass.CRASH
    if reason in _PERMANENT:
        return (_failed(sector, f"{phase}: permanent: {parked} ({detail})"),
                ErrorClass.PERMANENT)
    if reason == Reason.UNSERVED_SIZE:
        return (_failed(sector, f"{phase}: permanent: no worker takes "
                                f"{sector_size_name(size)} sectors ({detail})"),
                ErrorClass.PERMANENT)
    # delivery_limit (the broker's count: connection losses, not a crash), misrouted,
    # no_results_queue, handler_error, anything else: try again, capped by the phase's limit.
    why = f"{phase}: temporary: {parked} ({detail})"
    return retry_or_fail(sector, why, cfg, rng), ErrorClass.TEMPORARY


def _failed(sector: Sector, error: str) -> Transition:
    return Transition(replace(sector, state=State.FAILED, error=error), None)


def history_of(entry: dict[str, Any], error_class: ErrorClass, error: str | None
               ) -> dict[str, Any]:
    at = entry.get("at")
    return {"phase": entry.get("phase"), "attempt": entry.get("attempt"),
            "worker": entry.get("parked_by"), "started_at": at, "finished_at": at,
            "outcome": "parked", "error_class": error_class.value, "error": error}
