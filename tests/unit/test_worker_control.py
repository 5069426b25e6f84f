"""Control of a worker's slots: the messages, the controller, the local socket."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broker_topology import Job, Phase
from broker_topology.control import (
    ControlOp,
    ControlReply,
    ControlRequest,
    GpuInfo,
    SlotStatus,
    WorkerStatus,
)
from broker_topology.errors import ConfigError
from broker_topology.messages import SectorClass
from pool_worker.control import Controller
from pool_worker.control_socket import ControlServer, WorkerNotRunning, request
from pool_worker.slots import Slot, SlotState

PHASES = frozenset({Phase.PC1, Phase.PC2})


def make() -> tuple[Controller, list[Slot], list[int]]:
    slots = [Slot(i, PHASES, [], configured_phases=PHASES, temp_dir=Path(f"/t{i}"),
                  gpu=0 if i else None) for i in range(2)]
    woken: list[int] = []
    gpus = {0: GpuInfo(index=0, name="NVIDIA H100", memory=80 * 2**30)}
    return Controller("w1", slots, gpus, lambda: woken.append(1)), slots, woken


def busy(slot: Slot) -> None:
    job = Job(job_id="t01000/3/pc1", miner="t01000", sector=3, phase=Phase.PC1, attempt=1,
              sector_class=SectorClass.CC, size=2048, deadline=4e9, issued_at=time.time())
    slot.state, slot.job, slot.started_at = SlotState.BUSY, job, time.time()


def test_requests_are_checked_like_every_wire_message() -> None:
    with pytest.raises(ValueError, match="needs a slot index"):
        ControlRequest(op=ControlOp.PAUSE)
    with pytest.raises(ValueError, match="now applies to pause only"):
        ControlRequest(op=ControlOp.RESUME, index=0, now=True)
    with pytest.raises(ValueError, match="extra"):
        ControlRequest.model_validate({"op": "info", "sudo": True})
    req = ControlRequest(op=ControlOp.RESUME, index=1, phases=(Phase.PC2,))
    assert ControlRequest.from_bytes(req.to_bytes()) == req


def test_info_lists_every_slot() -> None:
    controller, slots, _ = make()
    busy(slots[0])
    reply = controller.handle(ControlRequest(op=ControlOp.INFO))
    assert reply.ok and reply.worker == "w1"
    first, second = reply.slots
    assert (first.state, first.sector, first.phase, first.job) == (
        SlotStatus.BUSY, "t01000/3", Phase.PC1, "t01000/3/pc1")
    assert first.temp_dir == "/t0" and first.gpu is None
    assert second.gpu is not None and second.gpu.name == "NVIDIA H100"
    assert ControlReply.from_bytes(reply.to_bytes()) == reply


def test_pause_after_the_job_or_now() -> None:
    controller, slots, _ = make()
    busy(slots[0])
    reply = controller.handle(ControlRequest(op=ControlOp.PAUSE, index=0))
    assert reply.message == "slot 0 paused; t01000/3/pc1 runs to its end first"
    assert slots[0].paused and not slots[0].cancel.is_set() and not slots[0].claimable
    since = slots[0].paused_since
    reply = controller.handle(ControlRequest(op=ControlOp.PAUSE, index=0, now=True))
    assert reply.message == "slot 0 paused; handing back t01000/3/pc1"
    assert slots[0].cancel.is_set() and slots[0].paused_since == since
    assert reply.slots[0].paused and reply.slots[0].paused_since == since


def test_resume_restores_or_narrows_the_phases() -> None:
    controller, slots, woken = make()
    controller.handle(ControlRequest(op=ControlOp.PAUSE, index=1))
    reply = controller.handle(ControlRequest(op=ControlOp.RESUME, index=1,
                                             phases=(Phase.PC2,)))
    assert reply.ok and reply.message == "slot 1 resumed for pc2"
    assert slots[1].phases == {Phase.PC2} and slots[1].claimable and woken == [1]
    assert reply.slots[1].configured_phases == (Phase.PC1, Phase.PC2)
    controller.handle(ControlRequest(op=ControlOp.RESUME, index=1))
    assert slots[1].phases == PHASES


@pytest.mark.parametrize(("req", "needle"), [
    (ControlRequest(op=ControlOp.PAUSE, index=2), "worker w1 has no slot 2 (slots 0-1)"),
    (ControlRequest(op=ControlOp.RESUME, index=0, phases=(Phase.C2,)),
     "slot 0 does not serve c2 (it serves pc1, pc2)"),
])
def test_refusals_are_one_line_answers(req: ControlRequest, needle: str) -> None:
    controller, slots, _ = make()
    reply = controller.handle(req)
    assert not reply.ok and reply.error == needle
    assert not any(s.paused for s in slots)


def test_garbage_gets_an_answer_not_an_exception() -> None:
    controller, _, _ = make()
    reply = controller.handle_bytes(b"{not json")
    assert not reply.ok and reply.error is not None and reply.error.startswith("bad request")


def test_a_slot_with_every_phase_held_back_is_blocked() -> None:
    controller, slots, _ = make()
    slots[0].held_back = {"pc1": "needs disk", "pc2": "needs disk"}
    slots[1].held_back = {"pc1": "needs disk"}
    states = [s.state for s in controller.views()]
    assert states == [SlotStatus.BLOCKED, SlotStatus.IDLE]


def test_registry_entries_mark_staleness() -> None:
    status = WorkerStatus(name="w1", instance="ab", host="h", address="10.0.0.1", pid=1,
                          started_at=1.0, at=100.0, heartbeat_interval=5, phases=(Phase.AP,))
    assert not status.stale(114.0) and status.stale(116.0)


def test_the_socket_answers_and_is_removed_afterwards(tmp_path: Path) -> None:
    controller, _, _ = make()
    path = tmp_path / "control.sock"
    with ControlServer(path, controller):
        assert path.stat().st_mode & 0o077 == 0  # the owner's only
        reply = request(path, ControlRequest(op=ControlOp.PAUSE, index=1))
        assert reply.message == "slot 1 paused"
        with pytest.raises(ConfigError, match="another pool-worker is running here"):
            ControlServer(path, controller).__enter__()
    assert not path.exists()
    with pytest.raises(WorkerNotRunning, match="no pool-worker is running here"):
        request(path, ControlRequest(op=ControlOp.INFO))


def test_a_stale_socket_is_replaced_and_long_paths_work(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(str(path)) > 107
    controller, _, _ = make()
    with ControlServer(path, controller):
        pass
    path.touch()  # left behind by a worker that died
    with pytest.raises(WorkerNotRunning, match="stale control socket"):
        request(path, ControlRequest(op=ControlOp.INFO))
    with ControlServer(path, controller):
        assert request(path, ControlRequest(op=ControlOp.INFO)).ok
