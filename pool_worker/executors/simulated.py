"""The simulated executor: takes the phase's time, keeps the data-locality rules real.

Each phase writes a marker into the sector's directory; a data-bound phase on a worker
without the sector's files answers needs_data, as a real executor would. fin moves the
markers to the sealed directory. Faults can be injected per phase and sector (a crash
ends the whole worker process, as a segfaulting kernel would). Used by the demo, tests and
load simulation."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from broker_topology.errors import NeedsData, PermanentError, TemporaryError
from broker_topology.messages import LOCAL_PHASES, Job, Phase

from .base import ExecContext

_STEP_S = 0.05
FAULT_KINDS = ("temporary", "permanent", "needs_data", "crash")
#: Exit status of a worker killed by an injected crash.
CRASH_EXIT = 70


@dataclass(frozen=True)
class Fault:
    kind: str
    #: None: every sector.
    sectors: frozenset[int] | None = None

    def applies(self, job: Job) -> bool:
        return self.sectors is None or job.sector in self.sectors


def parse_faults(spec: str) -> dict[Phase, tuple[Fault, ...]]:
    """"pc2=temporary@3,4;c2=crash" -> {PC2: (Fault(temporary, {3, 4}),), C2: (...)}."""
    faults: dict[Phase, list[Fault]] = {}
    for rule in filter(None, (r.strip() for r in spec.split(";"))):
        try:
            phase_s, rest = rule.split("=", 1)
            kind, _, sectors_s = rest.partition("@")
            phase = Phase(phase_s.strip())
            if kind not in FAULT_KINDS:
                raise ValueError(kind)
            sectors = (frozenset(int(s) for s in sectors_s.split(",")) if sectors_s else None)
        except ValueError:
            raise ValueError(f"simulate_fail: cannot read {rule!r}; expected "
                             f"<phase>=<{'|'.join(FAULT_KINDS)}>[@sector,...]") from None
        faults.setdefault(phase, []).append(Fault(kind, sectors))
    return {p: tuple(f) for p, f in faults.items()}


@dataclass
class SimulatedExecutor:
    duration_s: float = 0.0
    faults: tuple[Fault, ...] = ()
    name: str = "simulated"

    def run(self, job: Job, ctx: ExecContext) -> dict[str, Any]:
        if job.phase in LOCAL_PHASES and not (ctx.workdir / "ap.json").exists():
            raise NeedsData(f"sector {job.miner}/{job.sector} has no files on {ctx.worker}")
        fault = next((f for f in self.faults if f.applies(job)), None)
        deadline = time.monotonic() + self.duration_s
        while (left := deadline - time.monotonic()) > 0:
            ctx.check_cancelled()
            if fault is not None and fault.kind == "crash" and left < self.duration_s / 2:
                os._exit(CRASH_EXIT)  # mid-phase, like a kernel segfault
            time.sleep(min(_STEP_S, left))
        ctx.check_cancelled()
        if fault is not None:
            if fault.kind == "crash":
                os._exit(CRASH_EXIT)
            error = {"temporary": TemporaryError, "permanent": PermanentError,
                     "needs_data": NeedsData}[fault.kind]
            raise error(f"injected {fault.kind} fault in {job.phase} of sector {job.sector}")
        marker = {"job_id": job.job_id, "attempt": job.attempt, "worker": ctx.worker,
                  "at": time.time()}
        (ctx.workdir / f"{job.phase.value}.json").write_text(json.dumps(marker))
        if job.phase is Phase.FIN:
            dest = ctx.sealed_dir / job.miner / str(job.sector)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(ctx.workdir), dest)
            return {"sealed_path": str(dest)}
        return {"simulated": True}
