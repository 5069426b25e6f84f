"""The external executor: any program runs a phase (how rust-fil-proofs tools plug in).

Contract with the program (the processor):

- argv: `command` from `[executors.<phase>]`; working directory: the sector's directory.
- stdin: one JSON object, then EOF:
  `{"schema_version": 1, "job": <the Job>, "workdir": ..., "sealed_dir": ...,
    "worker": ..., "slot": N, "gpu": N | null, "cores": [...]}`
- environment: the worker's, plus `env` from the config, plus `CUDA_VISIBLE_DEVICES` and
  `CUDA_DEVICE_ORDER=PCI_BUS_ID` when the slot has a GPU. It runs on the slot's cores
  (the affinity is inherited from the slot thread).
- stdout: one JSON object, the phase's outputs (small: they travel in the result). A
  program that logs to stdout may put the object on the last line instead.
- exit status: 0 ok; 75 (EX_TEMPFAIL) temporary: retry; 65 (EX_DATAERR) permanent: the
  sector fails; 66 (EX_NOINPUT) needs data: this worker lacks the sector's files. Any
  other status, or death by a signal (SIGKILL is most often the OOM killer), is temporary:
  the miner's per-phase attempt limit caps the damage. The last lines of stderr go into
  the error, and so into the slot's last error and the sector's history.

It runs in its own process group (a new session). To stop it (pause --now, drain, the
`timeout`) the group gets SIGTERM, then SIGKILL after `kill_grace`; whatever the program
leaves behind in its group is killed when it exits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from broker_topology.blobs import MAX_BLOB_BYTES
from broker_topology.errors import JobError, NeedsData, PermanentError, TemporaryError
from broker_topology.messages import Job

from ..gpu import executor_env
from .base import Cancelled, ExecContext

EXIT_PERMANENT = 65  # EX_DATAERR: the input is wrong; retrying cannot help
EXIT_NEEDS_DATA = 66  # EX_NOINPUT: the sector's files are not on this worker
EXIT_TEMPORARY = 75  # EX_TEMPFAIL: try again later
EXIT_CLASSES: dict[int, type[JobError]] = {
    EXIT_PERMANENT: PermanentError, EXIT_NEEDS_DATA: NeedsData, EXIT_TEMPORARY: TemporaryError}
#: Outputs over a few KiB travel by reference (broker_topology.blobs), up to its limit.
MAX_STDOUT_BYTES = MAX_BLOB_BYTES
STDERR_CHARS = 2000
_POLL_S = 0.1
#: Process groups of processors running now, so a stopping worker can kill them all:
#: a processor must never outlive its worker (its job is requeued and would run twice).
_groups: set[int] = set()
_groups_lock = threading.Lock()


def kill_all_groups() -> int:
    """SIGKILL every processor group still running; returns how many there were."""
    with _groups_lock:
        groups = list(_groups)
    for pgid in groups:
        _kill_group(pgid, signal.SIGKILL)
    return len(groups)


@dataclass
class ExternalExecutor:
    command: tuple[str, ...]
    timeout_s: float | None = None
    kill_grace_s: float = 10.0
    env: dict[str, str] = field(default_factory=dict)
    name: str = "external"

    def run(self, job: Job, ctx: ExecContext) -> dict[str, Any]:
        request = json.dumps({
            "schema_version": 1, "job": job.model_dump(mode="json"),
            "workdir": str(ctx.workdir), "sealed_dir": str(ctx.sealed_dir),
            "worker": ctx.worker, "slot": ctx.slot, "gpu": ctx.gpu, "cores": list(ctx.cores),
        }).encode()
        env = {**os.environ, **self.env, **executor_env(ctx.gpu)}
        try:
            proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=ctx.workdir, env=env, start_new_session=True)
        except OSError as exc:  # this worker's setup, not the sector: another may run it
            raise TemporaryError(f"cannot start {self.command[0]}: {exc}") from None
        with _groups_lock:
            _groups.add(proc.pid)
        limit = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            out, err = self._wait(proc, request, ctx, limit)
        finally:
            _kill_group(proc.pid, signal.SIGKILL)  # leftovers of a finished or stopped run
            with _groups_lock:
                _groups.discard(proc.pid)
        return self._outcome(proc.returncode, out, err)

    def _wait(self, proc: subprocess.Popen[bytes], request: bytes, ctx: ExecContext,
              limit: float | None) -> tuple[bytes, bytes]:
        pending: bytes | None = request  # communicate() takes input on its first call only
        while True:
            try:
                return proc.communicate(pending, timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                pending = None
            if ctx.cancelled.is_set():
                self._stop(proc)
                raise Cancelled(f"{self.command[0]} stopped: job handed back")
            if limit is not None and time.monotonic() > limit:
                _, err = self._stop(proc)
                raise TemporaryError(f"{self.command[0]} timed out after {self.timeout_s:.0f}s"
                                     f"{_tail(err)}")

    def _stop(self, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        """SIGTERM to the group, SIGKILL after the grace period."""
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            return proc.communicate(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            return proc.communicate()

    def _outcome(self, code: int, out: bytes, err: bytes) -> dict[str, Any]:
        program = os.path.basename(self.command[0])
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            raise TemporaryError(f"{program} killed by {name}{hint}{_tail(err)}")
        if code != 0:
            error = EXIT_CLASSES.get(code, TemporaryError)
            raise error(f"{program} exited with {code}{_tail(err)}")
        if len(out) > MAX_STDOUT_BYTES:
            raise PermanentError(f"{program} printed {len(out)} bytes; outputs are limited to "
                                 f"{MAX_STDOUT_BYTES}")
        outputs = _json_object(out)
        if outputs is None:
            raise PermanentError(f"{program} exited 0 without a JSON object on stdout"
                                 f"{_tail(err)}")
        return outputs


def _json_object(out: bytes) -> dict[str, Any] | None:
    text = out.decode(errors="replace").strip()
    lines = text.splitlines()
    for candidate in (text, lines[-1] if lines else ""):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _tail(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    text = " | ".join(lines)[-STDERR_CHARS:]
    return f": {text}" if text else ""


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
