"""`sealpool-sim --real`: the scenario's [real] scale on the real RabbitMQ and Redis.

Real `pool-worker run` processes (one per machine, simulated executors timed as the
scenario says, storage groups as configured) and one `miner-publisher run` per miner, in a
fresh namespace; the sectors are enqueued with `miner-publisher enqueue`. When every sector
is done (or the time is up) the histories are read back from Redis into a Trace, measured
as the simulation is. Whatever happens, the processes started here are stopped (by pid)
and the namespace is deleted: its queues and exchanges, and its Redis keys by prefix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from broker_topology.declare import delete
from broker_topology.errors import SealpoolError
from broker_topology.link import connect_blocking
from broker_topology.messages import LOCAL_PHASES, PIPELINE, Phase, SectorClass
from broker_topology.naming import Names
from broker_topology.settings import PoolSettings
from broker_topology.topology import Topology, miner_topology, pool_topology, worker_topology
from miner_publisher.pipeline import State
from miner_publisher.store import SectorStore
from miner_publisher.workers import registry

from .engine import split
from .scenario import Machines, Scenario
from .trace import Run, SectorFate, SlotInfo, Trace

BIN = Path(sys.executable).parent
#: How long a process may take to stop on SIGTERM before it is killed.
STOP_GRACE_S = 20.0


class RealRunFailed(SealpoolError):
    """The real run could not start or finish (one line; logs are named)."""


@dataclass
class Fleet:
    """What this run started: processes by name (their pids are stopped, nothing else)."""

    settings: PoolSettings
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def names(self) -> Names:
        return Names(self.settings.namespace)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "SEALPOOL_AMQP_URL": s.amqp_url, "SEALPOOL_REDIS_URL": s.redis_url,
                "SEALPOOL_NAMESPACE": s.namespace,
                # a throwaway pool: Redis may persist nothing; host state stays in tmp
                "SEALPOOL_MINER_ALLOW_VOLATILE_REDIS": "1",
                "SEALPOOL_MINER_STATE_DIR": str(self.tmp / "miner-state"),
                "PYTHONUNBUFFERED": "1", **(extra or {})}

    def start(self, key: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.tmp / f"{key}.log", "ab") as log:
            self.procs[key] = subprocess.Popen(argv, env=self.env(env), stdout=log,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True)

    def check_alive(self) -> None:
        for key, proc in self.procs.items():
            if proc.poll() is not None:
                raise RealRunFailed(f"{key} exited with {proc.returncode}; see "
                                    f"{self.tmp / (key + '.log')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        limit = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, limit - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()


def _scenario_env(s: Scenario) -> dict[str, str]:
    p = s.policy
    return {"SEALPOOL_AGING_DEAL": repr(p.aging_deal), "SEALPOOL_AGING_CC": repr(p.aging_cc),
            "SEALPOOL_LOCALITY_WAIT": repr(p.locality_wait),
            "SEALPOOL_WORKER_QUEUE_EXPIRES": repr(max(7 * 86400.0, 4 * p.locality_wait)),
            "SEALPOOL_DEALS_FIRST": "true" if p.deals_first else "false",
            "SEALPOOL_MINER_POOL_DEPTH": str(p.pool_depth),
            "SEALPOOL_MINER_LOCALITY_RECOVERY": p.locality_recovery,
            "SEALPOOL_MINER_HOME_WAIT": repr(p.home_wait),
            "SEALPOOL_MINER_ESCALATE_SLACK": repr(p.escalate_slack),
            "SEALPOOL_MINER_CHAIN_PRECOMMIT": repr(s.chain.precommit),
            "SEALPOOL_MINER_CHAIN_SEED": repr(s.chain.seed),
            "SEALPOOL_MINER_CHAIN_COMMIT": repr(s.chain.commit)}


def worker_config(s: Scenario, group: Machines, name: str, data_dir: Path) -> str:
    """A worker's TOML: its slots, the scenario's durations as simulated executors."""
    phases = sorted({p for spec in group.slots for p in spec.phases}, key=PIPELINE.index)
    lines = [f'name = "{name}"', f'data_dir = "{data_dir}"',
             f'phases = "{",".join(p.value for p in phases)}"',
             f'sector_sizes = "{s.sector_size}"', "heartbeat_interval = 1.0",
             "idle_poll = 1.0"]
    if group.storage != "machine":
        lines.append(f'storage_group = "{group.storage}"')
    for spec in group.slots:
        lines += [f'[[slots]]\nphases = "{",".join(p.value for p in spec.phases)}"'] * spec.count
    for p in phases:
        lines.append(f'[executors.{p.value}]\nkind = "simulated"\n'
                     f"duration = {s.durations[p].mean!r}")
    return "\n".join(lines) + "\n"


def _slots(s: Scenario) -> tuple[list[SlotInfo], dict[str, tuple[Machines, str]]]:
    slots: list[SlotInfo] = []
    workers: dict[str, tuple[Machines, str]] = {}
    for group in s.machines:
        for i in range(1, group.count + 1):
            name = f"{group.name}-{i:02d}"
            locality = name if group.storage == "machine" else group.storage
            workers[name] = (group, locality)
            index = 0
            for spec in group.slots:
                for _ in range(spec.count):
                    slots.append(SlotInfo(f"{name}/{index}", name, group.name, spec.phases,
                                          locality))
                    index += 1
    return slots, workers


def _wait(what: str, fleet: Fleet, ok: object, timeout: float) -> None:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        fleet.check_alive()
        if callable(ok) and ok():
            return
        time.sleep(0.2)
    raise RealRunFailed(f"timed out after {timeout:.0f}s waiting for {what}; logs in {fleet.tmp}")


def run_real(s: Scenario, console: Console, *, timeout: float = 300.0, quiet: bool = False,
             keep_logs: bool = False) -> Trace:
    """Run `s` (already scaled) on the real broker; the trace of what happened."""
    settings = PoolSettings(namespace=f"simreal-{uuid.uuid4().hex[:8]}")
    tmp = Path(tempfile.mkdtemp(prefix="sealpool-sim-real-"))
    fleet = Fleet(settings, tmp)
    slots, workers = _slots(s)
    client = redis.Redis.from_url(settings.redis_url)
    env = _scenario_env(s)
    ok = False
    try:
        (tmp / "miner-state").mkdir()
        for name, (group, _) in workers.items():
            path = tmp / f"{name}.toml"
            path.write_text(worker_config(s, group, name, tmp / "data"))
            fleet.start(name, [str(BIN / "pool-worker"), "run", "--config", str(path),
                               "--simulate", repr(min(d.mean for d in s.durations.values()))],
                        env)
        _wait("the workers to register", fleet, lambda: {
            w.name for w in registry(client, fleet.names)} >= set(workers), 60)
        for m in s.miners:
            fleet.start(f"miner-{m.id}", [str(BIN / "miner-publisher"), "run", "--miner", m.id],
                        {**env, "SEALPOOL_MINER_WEIGHT": repr(m.pool_weight)})
        _wait("the miners to join", fleet, lambda: {
            k.decode() if isinstance(k, bytes) else k
            for k in client.hkeys(fleet.names.miners_key)} >= {
            m.id for m in s.miners}, 60)
        _enqueue(s, fleet)
        _wait_done(s, fleet, client, timeout, console, quiet)
        trace = read_trace(s, client, fleet.names, slots, workers)
        ok = True
        return trace
    finally:
        fleet.stop()
        _delete_namespace(s, settings, client, workers)
        if ok and not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def _enqueue(s: Scenario, fleet: Fleet) -> None:
    """Every miner's sectors at once (deals and CC: one enqueue each, run side by side)."""
    procs = []
    for m, n in zip(s.miners, split(s.real.sectors, [m.share for m in s.miners]),
                    strict=True):
        deals = round(n * m.deals)
        for klass, count, ttl in ((SectorClass.DEAL, deals, m.deal_deadline),
                                  (SectorClass.CC, n - deals, m.cc_deadline)):
            if count:
                procs.append(subprocess.Popen(
                    [str(BIN / "miner-publisher"), "enqueue", "--miner", m.id, "--count",
                     str(count), f"--{klass.value}", "--size", s.sector_size, "--deadline",
                     repr(ttl), "--json"], env=fleet.env(_scenario_env(s)),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RealRunFailed(f"enqueue failed: {err.decode(errors='replace').strip()}")


def _wait_done(s: Scenario, fleet: Fleet, client: redis.Redis, timeout: float,
               console: Console, quiet: bool) -> None:
    stores = [SectorStore(client, fleet.names, m.id) for m in s.miners]
    total = s.real.sectors
    limit = time.monotonic() + timeout
    with Progress(TextColumn("real broker"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} sectors"), TimeElapsedColumn(), console=console,
                  disable=quiet) as progress:
        task = progress.add_task("sectors", total=total)
        while True:
            fleet.check_alive()
            records = [r for st in stores for r in st.all()]
            finished = sum(r.sector.state in (State.DONE, State.FAILED) for r in records)
            progress.update(task, completed=finished)
            if len(records) >= total and finished == len(records):
                return
            if time.monotonic() > limit:
                raise RealRunFailed(f"{finished} of {total} sectors finished within "
                                    f"{timeout:.0f}s; logs in {fleet.tmp}")
            time.sleep(0.5)


def read_trace(s: Scenario, client: redis.Redis, names: Names, slots: list[SlotInfo],
               workers: dict[str, tuple[Machines, str]]) -> Trace:
    """The sectors' histories as a Trace. A run's ready time is when its predecessor
    finished (plus the chain wait after pc2 and c2); ap's is the sector's creation."""
    chain_after = {Phase.PC2: s.chain.precommit + s.chain.seed, Phase.C2: s.chain.commit}
    trace = Trace(slots, weights={m.id: m.pool_weight for m in s.miners})
    free: dict[str, float] = {}  # slot key -> when its last run ended
    raw: list[tuple[float, Run]] = []  # runs whose `slot` is still the worker's name
    for m in s.miners:
        store = SectorStore(client, names, m.id)
        records = store.all()
        histories = store.histories([r.sector.number for r in records])
        for rec in records:
            deal = rec.sector_class is SectorClass.DEAL
            done_at: float | None = None
            ready = rec.created_at
            for e in histories[rec.sector.number]:
                phase = Phase(e["phase"])
                outcome = "ok" if e["outcome"] == "ok" else str(e["error_class"])
                run = Run(m.id, rec.sector.number, deal, phase, int(e["attempt"]), e["worker"],
                          min(ready, float(e["started_at"])), float(e["started_at"]),
                          float(e["finished_at"]), outcome,
                          rec.sector.home if phase in LOCAL_PHASES else None)
                raw.append((run.started_at, run))
                ready = run.finished_at + (chain_after.get(phase, 0.0) if outcome == "ok"
                                           else 0.0)
                if phase is Phase.FIN and outcome == "ok":
                    done_at = run.finished_at
            trace.sectors.append(SectorFate(
                m.id, rec.sector.number, deal, rec.created_at, rec.deadline,
                done_at if rec.sector.state is State.DONE else None,
                rec.sector.state is State.FAILED))
    # Histories name the worker, not the slot: give each run the slot of that worker that
    # serves its phase and was free first (interval partitioning).
    for _, run in sorted(raw, key=lambda x: x[0]):
        mine = [x for x in slots if x.worker == run.slot and run.phase in x.phases]
        if not mine:
            continue
        slot = min(mine, key=lambda x: (free.get(x.key, 0.0) > run.started_at + 1e-3,
                                        free.get(x.key, 0.0)))
        free[slot.key] = run.finished_at
        trace.runs.append(Run(run.miner, run.sector, run.deal, run.phase, run.attempt,
                              slot.key, run.ready_at, run.started_at, run.finished_at,
                              run.outcome, run.home))
    means: dict[Phase, list[float]] = {}
    for r in trace.runs:
        if r.outcome == "ok":
            means.setdefault(r.phase, []).append(r.finished_at - r.started_at)
    trace.durations = {p: sum(v) / len(v) for p, v in means.items()}
    trace.end = max((r.finished_at for r in trace.runs), default=0.0)
    return trace


def _delete_namespace(s: Scenario, settings: PoolSettings, client: redis.Redis,
                      workers: dict[str, tuple[Machines, str]]) -> None:
    """Queues and exchanges of the namespace, then its Redis keys; best effort, each."""
    topo: Topology = pool_topology(settings)
    served: dict[str, set[Phase]] = {}
    for group, locality in workers.values():
        served.setdefault(locality, set()).update(p for spec in group.slots
                                                  for p in spec.phases)
    for locality, phases in served.items():
        topo += worker_topology(settings, locality, frozenset(phases))
    for m in s.miners:
        topo += miner_topology(settings, m.id)
    try:
        conn = connect_blocking(settings.amqp_url, "sealpool-sim/cleanup")
        try:
            delete(conn, topo)
        finally:
            if conn.is_open:
                conn.close()
    except Exception as exc:  # never hide the run's own error behind the cleanup's
        print(f"warning: queues of {settings.namespace} not deleted: {exc}", file=sys.stderr)
    keys = list(client.scan_iter(match=f"{settings.namespace}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])

