"""Which queue a free slot takes its next job from: strict pull order.

For each phase the slot serves, pipeline-end first (fin, c2, c1, pc2, pc1, ap) so started
sectors finish before new ones start: this worker's own follow-up queue, then urgent, deal,
cc. RabbitMQ 3.10 quorum queues have no priorities and push consumers cannot prefer one
queue over another, so preference is expressed by the order of basic.get.

Empty basic.get on a quorum queue costs ~0.6 ms of broker CPU (a Raft round); a passive
queue.declare reads the ready count for ~0.08 ms. So one probe pass reads the counts of all
candidate queues and only non-empty ones are asked."""

from __future__ import annotations

from collections.abc import Iterable

from broker_topology.messages import CLAIM_ORDER, LOCAL_PHASES, Lane, Phase
from broker_topology.naming import Names


def candidate_queues(names: Names, worker: str, phases: Iterable[Phase]) -> list[str]:
    served = set(phases)
    order: list[str] = []
    for phase in CLAIM_ORDER:
        if phase not in served:
            continue
        if phase in LOCAL_PHASES:
            order.append(names.worker_queue(worker, phase))
        order += [names.pool_queue(phase, lane) for lane in (Lane.URGENT, Lane.DEAL, Lane.CC)]
    return order


def first_nonempty(candidates: list[str], counts: dict[str, int]) -> str | None:
    return next((q for q in candidates if counts.get(q, 0) > 0), None)


def phase_of_queue(names: Names, queue: str) -> Phase:
    """The phase a queue holds (`<ns>.q.<phase>.<lane>` or `<ns>.w.<worker>.<phase>`)."""
    rest = queue.removeprefix(names.namespace + ".")
    kind, *parts = rest.split(".")
    return Phase(parts[0] if kind == "q" else parts[-1])
