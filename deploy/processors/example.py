#!/usr/bin/env python3
"""A tiny external processor for sealpool (stdlib only): the contract of the `external`
executor, end to end. It does what the simulated executor does: each phase leaves a marker
in the sector's directory, a follow-up phase without the sector's files answers "needs
data", and fin moves the sector to the sealed directory. A real processor (a
rust-fil-proofs tool) does the phase's work where this sleeps.

    stdin   {"schema_version": 1, "job": {...}, "workdir": ..., "sealed_dir": ...,
             "worker": ..., "slot": N, "gpu": N | null, "cores": [...]}
    stdout  one JSON object: the phase's outputs
    exit    0 ok, 75 temporary, 65 permanent, 66 needs data (see executors/external.py)

Configure it per phase in the worker config:

    [executors.pc2]
    kind = "external"
    command = ["python3", "deploy/processors/example.py"]
    env = { EXAMPLE_SECONDS = "2" }
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

EXIT_PERMANENT, EXIT_NEEDS_DATA, EXIT_TEMPORARY = 65, 66, 75
DATA_BOUND = {"pc1", "pc2", "c1", "fin"}


def main() -> int:
    request = json.load(sys.stdin)
    job, workdir = request["job"], Path(request["workdir"])
    phase = job["phase"]
    if phase in DATA_BOUND and not (workdir / "ap.json").exists():
        print(f"sector {job['miner']}/{job['sector']} has no files here", file=sys.stderr)
        return EXIT_NEEDS_DATA
    # Stop cleanly on SIGTERM (the worker handing the job back); SIGKILL follows anyway.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_TEMPORARY))
    time.sleep(float(os.environ.get("EXAMPLE_SECONDS", "0")))
    marker = {"job_id": job["job_id"], "attempt": job["attempt"],
              "worker": request["worker"], "at": time.time()}
    (workdir / f"{phase}.json").write_text(json.dumps(marker))
    outputs = {"processor": "example", "pid": os.getpid(),
               "cpus": sorted(os.sched_getaffinity(0)),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if phase == "fin":
        dest = Path(request["sealed_dir"]) / job["miner"] / str(job["sector"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(workdir), dest)
        outputs["sealed_path"] = str(dest)
    print(json.dumps(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
