"""The queues a slot may claim from, and which phase a queue holds.

For each phase the slot serves: this worker's own follow-up queue (local phases), the
phase's urgent lane, and every miner's deal and cc lanes. The order they are asked in is
decided per claim pass by policy.py (pipeline-end first, fair between miners).

RabbitMQ 3.10 quorum queues have no priorities and push consumers cannot prefer one
queue over another, so preference is expressed by the order of basic.get. An empty
basic.get on a quorum queue costs ~0.6 ms of broker CPU (a Raft round); a passive
queue.declare reads the ready count for ~0.08 ms. So one probe pass reads the counts of
all candidate queues and only non-empty ones are asked."""

from __future__ import annotations

from collections.abc import Iterable

from broker_topology.messages import CLAIM_ORDER, Phase
from broker_topology.naming import Names

from .policy import Lanes, phase_lanes


def slot_lanes(names: Names, locality: str, phases: Iterable[Phase],
               miners: Iterable[str]) -> list[Lanes]:
    """The lanes of each phase the slot serves, pipeline-end first."""
    served, known = set(phases), sorted(miners)
    return [phase_lanes(names, locality, p, known) for p in CLAIM_ORDER if p in served]


def candidate_queues(names: Names, locality: str, phases: Iterable[Phase],
                     miners: Iterable[str] = ()) -> list[str]:
    """Every queue of these phases, pipeline-end first (home, urgent, then the miners'
    deal and cc lanes by name)."""
    out: list[str] = []
    for lanes in slot_lanes(names, locality, phases, miners):
        out += [q for q in (lanes.home, lanes.urgent) if q is not None]
        out += [q for pair in lanes.miners.values() for q in pair]
    return out


def is_miner_lane(names: Names, queue: str) -> bool:
    """A miner's own deal or cc lane (`<ns>.q.<phase>.<lane>.<miner>`): a claim from it was
    a choice between miners."""
    parts = queue.removeprefix(names.namespace + ".").split(".")
    return len(parts) == 4 and parts[0] == "q"


def phase_of_queue(names: Names, queue: str) -> Phase:
    """The phase a queue holds (`<ns>.q.<phase>.<lane>[.<miner>]` or
    `<ns>.w.<worker>.<phase>`)."""
    rest = queue.removeprefix(names.namespace + ".")
    kind, *parts = rest.split(".")
    return Phase(parts[0] if kind == "q" else parts[-1])
