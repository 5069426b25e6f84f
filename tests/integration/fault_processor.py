"""An external processor that fails on purpose, for the external executor's tests.
FAULT (environment): permanent | temporary | signal | hang | garbage | big | ok.
`big` prints 100 KB of outputs (a real c1 prints far more).
`hang` starts a grandchild in its process group, writes both pids to PIDFILE, then sleeps
and ignores SIGTERM: only the group SIGKILL ends it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

request = json.load(sys.stdin)
fault = os.environ.get("FAULT", "ok")
print(f"fault processor: {fault} for {request['job']['job_id']}", file=sys.stderr)
if fault == "permanent":
    print("proof mismatch: replica does not verify", file=sys.stderr)
    sys.exit(65)
if fault == "temporary":
    print("GPU busy, try later", file=sys.stderr)
    sys.exit(75)
if fault == "signal":
    os.kill(os.getpid(), signal.SIGKILL)
if fault == "garbage":
    print("not json")
    sys.exit(0)
if fault == "hang":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["PIDFILE"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    time.sleep(600)
if fault == "big":
    print(json.dumps({"fault": fault, "proof": "ab" * 50_000}))
    sys.exit(0)
print(json.dumps({"fault": fault, "cpus": sorted(os.sched_getaffinity(0))}))
