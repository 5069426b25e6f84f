"""The worker's job protocol on the in-memory broker twin and the real local Redis (the
Lua scripts run where they run in production): fencing, lease takeover, one running copy,
hand-back, crash loops, poison triage and outputs by reference. Each test takes a second
or less: no processes, no real broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from broker_topology.blobs import INLINE_BYTES, is_ref
from broker_topology.memory import MemoryBroker
from broker_topology.messages import Job, Lane, Phase, Result, SectorClass, job_id
from broker_topology.naming import POOL_ORIGIN, Names, routing_key
from broker_topology.poison import REASON
from broker_topology.settings import PoolSettings
from broker_topology.topology import miner_topology, pool_topology
from pool_worker.config import WorkerSettings
from pool_worker.executors.base import ExecContext
from pool_worker.leases import Done, Grant, Held, Leases
from pool_worker.runtime import Worker

from .test_miner_fixtures import rds

__all__ = ["rds"]
MINER = "t01000"


class Gate:
    """An executor that runs until released (or cancelled), recording what it saw."""

    name = "gate"

    def __init__(self, outputs: dict[str, Any] | None = None, hold: bool = False,
                 seconds: float = 0.0) -> None:
        self.outputs = outputs or {"ok": True}
        self.seconds = seconds
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.seen: list[Job] = []

    def run(self, job: Job, ctx: ExecContext) -> dict[str, Any]:
        self.seen.append(job)
        while not self.release.wait(0.01):
            ctx.check_cancelled()
        ctx.check_cancelled()
        time.sleep(self.seconds)
        return self.outputs


def ap_job(sector: int, miner: str = MINER, klass: SectorClass = SectorClass.CC,
           **params: Any) -> Job:
    return Job(job_id=job_id(miner, sector, Phase.AP), miner=miner, sector=sector,
               phase=Phase.AP, attempt=1, sector_class=klass, size=2048,
               deadline=time.time() + 3600, issued_at=time.time(), params=params)


def until(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Rig:
    """A twin broker with the pool declared, and workers on it."""

    def __init__(self, client: redis.Redis, names: Names, tmp: Path) -> None:
        self.client = client
        self.names = names
        self.tmp = tmp
        self.pool = PoolSettings(namespace=names.namespace, delay_buckets=(5,))
        self.broker = MemoryBroker()
        self.broker.declare(pool_topology(self.pool) + miner_topology(self.pool, MINER))
        client.hset(names.miners_key, MINER, 1)  # what `miner-publisher run` registers
        self.workers: list[Worker] = []

    def worker(self, executor: Gate, *, name: str = "w", slots: int = 2,
               **cfg: Any) -> Worker:
        settings = WorkerSettings.model_validate(
            {"name": name, "slots": slots, "phases": frozenset({Phase.AP}),
             "data_dir": self.tmp / f"d{len(self.workers)}", "heartbeat_interval": 0.2,
             "idle_poll": 0.05, **cfg})
        w = Worker(self.pool, settings, {Phase.AP: executor}, self.client,
                   transport=lambda n, c, t: self.broker.transport(n, on_connect=c, on_tick=t))
        w.start(ready_timeout=5)
        self.workers.append(w)
        return w

    def job(self, sector: int = 1, **params: Any) -> Job:
        return ap_job(sector, **params)

    def publish(self, body: bytes | Job) -> None:
        raw = body.to_bytes() if isinstance(body, Job) else body
        self.broker.publish(self.names.jobs, routing_key(POOL_ORIGIN, Phase.AP, Lane.CC, MINER),
                            raw, mandatory=True)

    def results(self) -> list[Result]:
        return [Result.from_bytes(b) for b, _ in self.broker.ready(
            self.names.results_queue(MINER))]

    def poison(self) -> list[tuple[bytes, dict[str, Any]]]:
        return self.broker.ready(self.names.poison_queue)

    def delayed(self) -> list[tuple[bytes, dict[str, Any]]]:
        return self.broker.ready(self.names.delay_queue(5))

    def stop(self) -> None:
        for w in self.workers:
            w.stop(drain_timeout=0)


@pytest.fixture
def rig(rds: tuple[redis.Redis, Names], tmp_path: Path) -> Iterator[Rig]:
    r = Rig(*rds, tmp_path)
    try:
        yield r
    finally:
        r.stop()


def test_a_result_carries_its_epoch_and_is_recorded_first(rig: Rig) -> None:
    rig.worker(Gate({"commd": "x"}))
    job = rig.job()
    rig.publish(job)
    until("a result", lambda: len(rig.results()) == 1)
    [result] = rig.results()
    assert (result.epoch, result.outputs, result.outcome.value) == (1, {"commd": "x"}, "ok")
    done = rig.client.get(rig.names.done_key(job.job_id, 1))
    assert done is not None and Result.from_bytes(str(done).encode()) == result
    assert rig.broker.unacked_count(rig.names.miner_queue(Phase.AP, Lane.CC, MINER)) == 0


def test_a_copy_of_a_job_running_in_this_process_is_deferred_not_run_nor_counted(
        rig: Rig) -> None:
    gate = Gate(hold=True)
    rig.worker(gate, slots=2)
    job = rig.job()
    rig.publish(job)
    until("the job running", lambda: len(gate.seen) == 1)
    rig.publish(job)  # a redelivered or duplicated copy
    until("the copy deferred", lambda: len(rig.delayed()) == 1)
    assert len(gate.seen) == 1
    assert rig.client.get(rig.names.starts_key(job.job_id, 1)) == "1"
    gate.release.set()
    until("the result", lambda: len(rig.results()) == 1)


def test_a_copy_held_by_another_live_process_of_the_same_name_is_deferred(rig: Rig) -> None:
    first, second = Gate(hold=True), Gate()
    rig.worker(first, name="same", slots=1)
    job = rig.job()
    rig.publish(job)
    until("the first process running it", lambda: len(first.seen) == 1)
    rig.worker(second, name="same", slots=1)
    rig.publish(job)
    until("the copy deferred", lambda: len(rig.delayed()) == 1)
    assert second.seen == []
    first.release.set()
    until("one result", lambda: len(rig.results()) == 1)


def test_leases_are_taken_over_only_from_a_gone_instance_and_fence_the_old_holder(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    job = ap_job(4)
    old, new = (Leases(client, names, "w", i, ttl_s=30) for i in ("i-old", "i-new"))
    old.alive(30)
    new.alive(30)
    granted = old.acquire(job, 0)
    assert isinstance(granted, Grant) and granted.epoch == 1
    assert new.acquire(job, 0) == Held("w/i-old/0")  # same name, live instance: hands off
    client.delete(names.instance_key("i-old"))  # that process is gone (or frozen past beats)
    taken = new.acquire(job, 1)
    assert isinstance(taken, Grant) and (taken.epoch, taken.starts) == (2, 2)
    assert old.renew() == {names.lease_key(job.job_id, 1)}
    assert old.finish(granted, b'{"late": true}') is False  # fenced: no done marker
    assert client.get(names.done_key(job.job_id, 1)) is None
    assert new.finish(taken, b'{"ok": true}') is True
    assert new.acquire(job, 0) == Done(b'{"ok": true}')


def test_an_expired_lease_is_taken_back_by_renew_only_if_nobody_was_granted_since(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    job = ap_job(5)
    leases = Leases(client, names, "w", "i1", ttl_s=30)
    grant = leases.acquire(job, 0)
    assert isinstance(grant, Grant)
    client.delete(names.lease_key(job.job_id, 1))  # expired while Redis was away
    assert leases.renew() == set()
    assert client.get(names.lease_key(job.job_id, 1)) == grant.value
    assert leases.finish(grant, b"{}") is True


def test_a_hand_back_is_a_fresh_copy_through_the_delay_queue_and_not_a_start(
        rig: Rig) -> None:
    gate = Gate(hold=True)
    w = rig.worker(gate, slots=1)
    job = rig.job()
    rig.publish(job)
    until("the job running", lambda: len(gate.seen) == 1)
    w.control.handle_bytes(b'{"op": "pause", "index": 0, "now": true}')
    until("the copy in the delay queue", lambda: len(rig.delayed()) == 1)
    [(body, headers)] = rig.delayed()
    assert Job.from_bytes(body) == job and headers.get("x-delivery-count", 0) == 0
    assert rig.broker.unacked_count(rig.names.miner_queue(Phase.AP, Lane.CC, MINER)) == 0
    until("the lease released", lambda: rig.client.get(
        rig.names.lease_key(job.job_id, 1)) is None)
    assert rig.client.get(rig.names.starts_key(job.job_id, 1)) == "0"
    assert rig.results() == [] and rig.poison() == []


def test_an_attempt_that_keeps_dying_is_parked_as_a_crash_loop(rig: Rig) -> None:
    job = rig.job(sector=9)
    rig.client.set(rig.names.starts_key(job.job_id, 1), 3)  # three workers died on it
    gate = Gate()
    rig.worker(gate, max_starts=3)
    rig.publish(job)
    until("the job parked", lambda: len(rig.poison()) == 1)
    [(body, headers)] = rig.poison()
    assert headers[REASON] == "crash_loop" and Job.from_bytes(body) == job
    assert gate.seen == [] and rig.results() == []


@pytest.mark.parametrize("body", [
    b"[" * 60_000,
    b'{"n": ' + b"9" * 5000 + b"}",
    b"\xff\xfe not utf-8",
    b'{"schema_version": 1, "job_id": "x"}',
])
def test_a_message_that_does_not_decode_is_parked_and_the_worker_keeps_serving(
        rig: Rig, body: bytes) -> None:
    rig.worker(Gate())
    rig.publish(body)
    rig.publish(rig.job(sector=2))
    until("the bad message parked and the good job done",
          lambda: len(rig.poison()) == 1 and len(rig.results()) == 1)
    [(parked, headers)] = rig.poison()
    assert parked == body and headers[REASON] in ("not_json", "schema")
    assert all(w.transport.connected.is_set() for w in rig.workers)


def test_any_failure_in_triage_parks_that_message_only(rig: Rig,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    w = rig.worker(Gate())
    calls = {"n": 0}
    real = w.consumer._triage

    def flaky(*args: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in triage")
        return real(*args)

    monkeypatch.setattr(w.consumer, "_triage", flaky)
    rig.publish(rig.job(sector=1))
    rig.publish(rig.job(sector=2))
    until("one parked, one done", lambda: len(rig.poison()) == 1 and len(rig.results()) == 1)
    assert rig.poison()[0][1][REASON] == "unknown"


def test_large_outputs_travel_by_reference_and_are_resolved_for_the_next_phase(
        rig: Rig) -> None:
    big = {"proof": "ab" * 50_000}
    gate = Gate(big)
    rig.worker(gate)
    rig.publish(rig.job(sector=3))
    until("the result", lambda: len(rig.results()) == 1)
    [result] = rig.results()
    assert is_ref(result.outputs) and len(result.to_bytes()) < INLINE_BYTES
    # a later job carries the reference as the miner stored it; the executor sees the data
    rig.publish(rig.job(sector=4, ap=result.outputs))
    until("the next job ran", lambda: len(gate.seen) == 2)
    assert gate.seen[1].params["ap"] == big
    assert json.loads(rig.client.get(rig.names.blob_key(result.outputs["$blob"])) or "{}") == big


def test_the_charge_script_and_the_policy_compute_the_same_tags(
        rds: tuple[redis.Redis, Names]) -> None:
    """charge.lua is what workers run; policy.charged is what the simulation runs."""
    from pool_worker.policy import charged, claim_cost
    from pool_worker.shares import Shares

    client, names = rds
    client.hset(names.miners_key, mapping={MINER: 2.0, "t01001": 1.0})
    shares = Shares(client, names)
    shares.refresh()
    model: dict[str, float] = {}
    for miner, sector in [(MINER, 1), ("t01001", 2), (MINER, 3), ("t01001", 4), (MINER, 5)]:
        job = ap_job(sector, miner)
        charge = shares.charge(job)
        charged(model, miner, claim_cost(job.phase, job.size, shares.expected), charge.weight)
    shares.refresh()
    assert shares.vtimes == pytest.approx(model)


def test_free_slots_take_the_miner_behind_on_slot_time_and_its_deals_first(
        rig: Rig) -> None:
    """Two miners with backlogs, weights 3:1, one slot: claims follow the weights, and each
    miner's deal jobs go before its CC jobs."""
    other = "t01001"
    rig.broker.declare(miner_topology(rig.pool, other))
    rig.client.hset(rig.names.miners_key, mapping={MINER: 3.0, other: 1.0})
    for sector in range(1, 13):
        for miner in (MINER, other):
            klass = SectorClass.DEAL if sector > 9 else SectorClass.CC
            job = ap_job(sector, miner, klass)
            rig.broker.publish(rig.names.jobs, routing_key(POOL_ORIGIN, Phase.AP,
                                                           Lane(klass.value), miner),
                               job.to_bytes(), mandatory=True)
    gate = Gate(seconds=0.03)  # equal jobs: slot time is proportional to the count
    rig.worker(gate, slots=1)
    until("16 jobs run", lambda: len(gate.seen) >= 16, timeout=10)
    first = gate.seen[:16]
    assert 11 <= sum(j.miner == MINER for j in first) <= 13  # 3:1, within one job
    for miner in (MINER, other):
        mine = [j for j in gate.seen if j.miner == miner]
        deals = [i for i, j in enumerate(mine) if j.sector_class is SectorClass.DEAL]
        assert deals == list(range(len(deals)))  # its deals before any of its CC


def test_workers_charge_the_durations_miners_observe(rds: tuple[redis.Redis, Names]) -> None:
    from miner_publisher.deadlines import Durations
    from pool_worker.shares import Shares

    client, names = rds
    Durations(client, names).observe(Phase.PC1, 2048, 42.0)
    shares = Shares(client, names)
    shares.refresh()
    assert shares.expected(Phase.PC1, 2048) == 42.0
