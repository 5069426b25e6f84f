"""Operating a running worker: list its slots, pause one, resume one.

The same `Controller` answers requests from the local unix socket (`pool-worker list|pause|
resume`, see control_socket.py) and from the broker's `control` exchange (`miner-publisher
worker info|pause|resume`): requests and replies are `broker_topology.control` messages.
Every operation only flips flags the claim loop and the slot threads read, so it is safe on
any thread, the AMQP I/O thread included, and never waits for a job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker_topology.control import (
    ERROR_CHARS,
    ControlOp,
    ControlReply,
    ControlRequest,
    GpuInfo,
    SlotStatus,
    SlotView,
    control_key,
)
from broker_topology.errors import MessageError

from .slots import Slot, SlotState

if TYPE_CHECKING:
    from broker_topology.naming import Names
    from broker_topology.transport import Delivery, Session

log = logging.getLogger(__name__)


class RefusedRequest(Exception):
    """The request names something this worker does not have (one line)."""


def view(slot: Slot, gpus: dict[int, GpuInfo]) -> SlotView:
    job = slot.job
    if slot.state is SlotState.STOPPED:
        state = SlotStatus.STOPPED
    elif slot.state is SlotState.BUSY:
        state = SlotStatus.BUSY
    elif slot.phases and set(slot.held_back) >= {p.value for p in slot.phases}:
        state = SlotStatus.BLOCKED
    else:
        state = SlotStatus.IDLE
    error = slot.last_error
    return SlotView(
        index=slot.index, phases=tuple(sorted(slot.phases)),
        configured_phases=tuple(sorted(slot.configured_phases or slot.phases)),
        temp_dir=str(slot.temp_dir), cores=slot.cores,
        gpu=gpus.get(slot.gpu) if slot.gpu is not None else None, memory=slot.memory,
        state=state, paused=slot.paused, paused_since=slot.paused_since,
        job=job.job_id if job else None,
        sector=f"{job.miner}/{job.sector}" if job else None,
        phase=job.phase if job else None, attempt=job.attempt if job else None,
        started_at=slot.started_at, held_back=dict(slot.held_back),
        held_sizes=dict(slot.held_sizes),
        last_error=error[-ERROR_CHARS:] if error else None)


class Controller:
    def __init__(self, worker: str, slots: list[Slot], gpus: dict[int, GpuInfo],
                 wake: Callable[[], None]) -> None:
        self.worker = worker
        self.slots = slots
        self.gpus = gpus
        #: Called after a resume: run a claim pass now instead of at the next poll.
        self.wake = wake

    def views(self) -> tuple[SlotView, ...]:
        return tuple(view(s, self.gpus) for s in self.slots)

    def handle_bytes(self, body: bytes) -> ControlReply:
        try:
            request = ControlRequest.from_bytes(body)
        except MessageError as exc:
            return ControlReply(worker=self.worker, ok=False, error=f"bad request: {exc}")
        return self.handle(request)

    def handle(self, req: ControlRequest) -> ControlReply:
        try:
            if req.op is ControlOp.INFO:
                message = ""
            elif req.op is ControlOp.PAUSE:
                message = self._pause(self._slot(req.index), req.now)
            else:
                message = self._resume(self._slot(req.index), req.phases)
        except RefusedRequest as exc:
            return ControlReply(worker=self.worker, ok=False, error=str(exc),
                                slots=self.views())
        if message:
            log.info("control: %s", message)
        return ControlReply(worker=self.worker, ok=True, message=message, slots=self.views())

    def _slot(self, index: int | None) -> Slot:
        if index is None or not 0 <= index < len(self.slots):
            raise RefusedRequest(f"worker {self.worker} has no slot {index} "
                                 f"(slots 0-{len(self.slots) - 1})")
        return self.slots[index]

    def _pause(self, slot: Slot, now: bool) -> str:
        if not slot.paused:
            slot.paused, slot.paused_since = True, time.time()
        message = f"slot {slot.index} paused"
        job = slot.job
        if job is not None and slot.state is SlotState.BUSY:
            if now:
                slot.cancel.set()  # the executor stops; the runner hands it back
                message += f"; handing back {job.job_id}"
            else:
                message += f"; {job.job_id} runs to its end first"
        return message

    def _resume(self, slot: Slot, phases: tuple[Any, ...] | None) -> str:
        serves = slot.configured_phases or slot.phases
        if phases is not None:
            extra = sorted(p.value for p in set(phases) - serves)
            if extra:
                raise RefusedRequest(
                    f"slot {slot.index} does not serve {', '.join(extra)} "
                    f"(it serves {', '.join(sorted(p.value for p in serves))})")
        slot.phases = frozenset(phases) if phases is not None else serves
        slot.paused, slot.paused_since = False, None
        self.wake()
        return (f"slot {slot.index} resumed for "
                f"{', '.join(sorted(p.value for p in slot.phases))}")


def consume_control(session: Session, controller: Controller, names: Names,
                    worker: str) -> None:
    """The worker's control consumer (set up again after every reconnect): a private
    queue bound with the worker's name; replies go to `reply_to`."""

    def on_request(delivery: Delivery, body: bytes) -> None:
        reply = controller.handle_bytes(body)
        if delivery.reply_to:
            session.publish("", delivery.reply_to, reply.to_bytes(), persistent=False,
                            confirm=False, correlation_id=delivery.correlation_id)

    session.consume("control", "", on_request, auto_ack=True,
                    bindings=[(names.control, control_key(worker))])
