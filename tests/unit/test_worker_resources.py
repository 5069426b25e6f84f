"""Admission before a claim: a slot claims only phases whose disk and memory it has now."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from broker_topology import Job, Names, Phase
from broker_topology.messages import SectorClass
from broker_topology.units import GiB, KiB, MiB
from pool_worker.claimer import candidate_queues
from pool_worker.executors.simulated import SimulatedExecutor
from pool_worker.resources import Admission, Machine, Need, machine_sizes, need
from pool_worker.slots import Slot

NAMES = Names("t")
REAL = object()  # any executor that is not simulated gets the table


def slot(index: int, phases: set[Phase], temp: str = "/nvme0", **kw: Any) -> Slot:
    return Slot(index, frozenset(phases), candidate_queues(NAMES, "w1", phases, ["t01000"]),
                configured_phases=frozenset(phases), temp_dir=Path(temp),
                **kw)


def machine(disk: dict[str, int], memory: int = 512 * GiB) -> Machine:
    return Machine(free_disk=lambda p: disk[str(p)], free_memory=lambda: memory,
                   device=lambda p: hash(str(p).split("/")[1]))


def admission(m: Machine, sizes: tuple[int, ...] = (32 * GiB,),
              executors: dict[Phase, object] | None = None) -> Admission:
    return Admission(executors or {p: REAL for p in Phase}, sizes, Path("/sealed"), NAMES,
                     machine=m)


def test_the_table_scales_with_the_sector_size() -> None:
    assert need(Phase.PC1, 32 * GiB) == Need(disk=416 * GiB, sealed=0, memory=48 * GiB)
    assert need(Phase.FIN, 32 * GiB).sealed == 48 * GiB
    assert need(Phase.PC1, 2 * KiB).disk == 26 * KiB


def test_a_slot_without_disk_for_pc1_claims_only_what_fits_and_says_why() -> None:
    s = slot(0, {Phase.PC1, Phase.C1})
    ready = admission(machine({"/nvme0": 100 * GiB})).admit([s], [s])
    assert ready == [s]
    assert set(s.held_back) == {"pc1"}
    assert "needs 416GiB free disk in /nvme0 for 32GiB sectors; 100GiB usable" in \
        s.held_back["pc1"]
    assert s.candidates == ["t.w.w1.c1", "t.q.c1.urgent", "t.q.c1.deal.t01000",
                            "t.q.c1.cc.t01000"]


def test_nothing_fits_means_no_claim() -> None:
    s = slot(0, {Phase.PC1}, keep_free=10 * GiB)
    assert admission(machine({"/nvme0": 420 * GiB})).admit([s], [s]) == []
    assert "after keep_free 10GiB" in s.held_back["pc1"]


def test_each_job_is_checked_for_its_own_size_not_the_largest() -> None:
    # Given a 24 GiB machine that takes 2KiB and 32GiB: pc1 of 32GiB needs 48GiB memory
    s = slot(0, {Phase.PC1})
    a = admission(machine({"/nvme0": 500 * GiB}, memory=24 * GiB), sizes=(2 * KiB, 32 * GiB))
    # Then the slot still claims pc1 (2KiB fits), and says why 32GiB does not
    assert a.admit([s], [s]) == [s] and s.held_back == {}
    assert a.fits(s, Phase.PC1, 2 * KiB) is None
    why = a.fits(s, Phase.PC1, 32 * GiB)
    assert why is not None and "needs 48GiB memory for 32GiB sectors" in why
    assert a.fits(s, Phase.PC1, 8 * MiB) == "this worker does not take 8MiB sectors"


def test_without_size_settings_a_worker_takes_what_the_machine_can_hold() -> None:
    real = {p: REAL for p in Phase}
    small = machine_sizes(real, set(Phase), [Path("/t")], memory_total=24 * GiB,
                          disk_total=lambda _p: 2000 * GiB)
    assert small == (2 * KiB, 8 * MiB, 512 * MiB)  # pc1 of 32GiB needs 48GiB memory
    big = machine_sizes(real, {Phase.PC1}, [Path("/t")], memory_total=256 * GiB,
                        disk_total=lambda _p: 500 * GiB)
    assert big == (2 * KiB, 8 * MiB, 512 * MiB, 32 * GiB)  # 64GiB pc1 needs 832GiB disk
    simulated = {p: SimulatedExecutor(1.0) for p in Phase}
    assert machine_sizes(simulated, set(Phase), [], memory_total=0) == (
        2 * KiB, 8 * MiB, 512 * MiB, 32 * GiB, 64 * GiB)


def test_running_jobs_on_the_same_disk_count_against_it() -> None:
    busy, free = slot(0, {Phase.PC1}), slot(1, {Phase.PC1})
    other_disk = slot(2, {Phase.PC1}, temp="/nvme1")
    busy.job = Job(job_id="t01000/1/pc1", miner="t01000", sector=1, phase=Phase.PC1,
                   attempt=1, sector_class=SectorClass.CC, size=32 * GiB, deadline=4e9,
                   issued_at=time.time())
    m = machine({"/nvme0": 600 * GiB, "/nvme1": 600 * GiB})
    ready = admission(m).admit([free, other_disk], [busy, free, other_disk])
    assert ready == [other_disk]
    assert "184GiB usable" in free.held_back["pc1"]


def test_memory_budget_and_available_memory() -> None:
    small = slot(0, {Phase.C2}, memory=16 * GiB)
    big = slot(1, {Phase.C2})
    ready = admission(machine({"/nvme0": GiB}, memory=32 * GiB)).admit([small, big],
                                                                      [small, big])
    assert ready == []
    assert "the slot's budget is 16GiB" in small.held_back["c2"]
    assert "needs 64GiB memory for 32GiB sectors; 32GiB available" in big.held_back["c2"]


def test_fin_needs_room_in_the_sealed_directory() -> None:
    s = slot(0, {Phase.FIN})
    admission(machine({"/nvme0": 0, "/sealed": GiB})).admit([s], [s])
    assert "in /sealed" in s.held_back["fin"]


def test_simulated_executors_need_nothing() -> None:
    s = slot(0, {Phase.PC1})
    a = admission(machine({"/nvme0": 0}, memory=0),
                  executors={Phase.PC1: SimulatedExecutor(0.1)})
    assert a.admit([s], [s]) == [s]
