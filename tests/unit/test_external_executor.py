"""The external executor against real child processes: the JSON contract, exit codes and
signals mapped to error classes, stderr in the error, cancellation of the whole group."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from broker_topology import Job, NeedsData, PermanentError, Phase, TemporaryError
from broker_topology.messages import SectorClass
from pool_worker.cpus import pin_current_thread
from pool_worker.executors import Cancelled, ExecContext, ExternalExecutor

EXAMPLE = Path(__file__).parents[2] / "deploy/processors/example.py"


def job(phase: Phase = Phase.AP) -> Job:
    return Job(job_id=f"t01000/4/{phase.value}", miner="t01000", sector=4, phase=phase,
               attempt=2, sector_class=SectorClass.DEAL, size=2048, deadline=4e9,
               issued_at=time.time())


def ctx(tmp_path: Path, **kw: Any) -> ExecContext:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return ExecContext(workdir=work, sealed_dir=tmp_path / "sealed", worker="w1", slot=0,
                       **kw)


def script(code: str, **kw: Any) -> ExternalExecutor:
    return ExternalExecutor((sys.executable, "-c", code), **kw)


def test_the_job_goes_in_on_stdin_and_the_outputs_come_back(tmp_path: Path) -> None:
    echo = script("import json,os,sys; r=json.load(sys.stdin); print('log line'); "
                  "print(json.dumps({'job': r['job']['job_id'], 'attempt': r['job']['attempt'],"
                  " 'cwd': os.getcwd(), 'slot': r['slot'], "
                  "'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), "
                  "'order': os.environ.get('CUDA_DEVICE_ORDER'), 'x': os.environ['X']}))",
                  env={"X": "from-config"})
    out = echo.run(job(), ctx(tmp_path, gpu=1))
    assert out == {"job": "t01000/4/ap", "attempt": 2, "cwd": str(tmp_path / "work"),
                   "slot": 0, "cuda": "1", "order": "PCI_BUS_ID", "x": "from-config"}


def test_the_example_processor_keeps_the_locality_rules(tmp_path: Path) -> None:
    ex = ExternalExecutor((sys.executable, str(EXAMPLE)))
    with pytest.raises(NeedsData, match="has no files here"):
        ex.run(job(Phase.PC1), ctx(tmp_path))
    assert ex.run(job(Phase.AP), ctx(tmp_path))["processor"] == "example"
    assert ex.run(job(Phase.PC1), ctx(tmp_path))["cuda_visible_devices"] is None
    out = ex.run(job(Phase.FIN), ctx(tmp_path))
    assert out["sealed_path"] == str(tmp_path / "sealed/t01000/4")
    assert sorted(p.name for p in (tmp_path / "sealed/t01000/4").iterdir()) == [
        "ap.json", "fin.json", "pc1.json"]


@pytest.mark.parametrize(("code", "error", "needle"), [
    ("import sys; sys.stderr.write('bad proof\\n'); sys.exit(65)", PermanentError,
     "exited with 65: bad proof"),
    ("import sys; sys.stderr.write('no files\\n'); sys.exit(66)", NeedsData, "no files"),
    ("import sys; sys.stderr.write('gpu busy\\n'); sys.exit(75)", TemporaryError, "gpu busy"),
    ("import sys; sys.exit(3)", TemporaryError, "exited with 3"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", TemporaryError,
     "killed by SIGKILL (out of memory?)"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", TemporaryError,
     "killed by SIGSEGV"),
    ("print('no json here')", PermanentError, "without a JSON object on stdout"),
    ("print('[1, 2]')", PermanentError, "without a JSON object"),
])
def test_exit_codes_and_signals_map_to_error_classes(tmp_path: Path, code: str,
                                                      error: type[Exception],
                                                      needle: str) -> None:
    with pytest.raises(error) as exc:
        script("import sys; sys.stdin.read()\n" + code).run(job(), ctx(tmp_path))
    assert type(exc.value) is error and needle in str(exc.value)


def test_large_outputs_are_taken_up_to_the_blob_limit(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs far over a message's 64 KiB are fine (they travel by reference); past the
    limit they are a permanent error, never a result that cannot be delivered."""
    big = script("import sys, json; sys.stdin.read(); print(json.dumps({'x': 'y' * 100000}))")
    assert len(big.run(job(), ctx(tmp_path))["x"]) == 100000
    monkeypatch.setattr("pool_worker.executors.external.MAX_STDOUT_BYTES", 50000)
    with pytest.raises(PermanentError, match="outputs are limited"):
        big.run(job(), ctx(tmp_path))


def test_stderr_is_kept_as_its_last_lines(tmp_path: Path) -> None:
    noisy = script("import sys\nfor i in range(5000): print('line', i, file=sys.stderr)\n"
                   "sys.exit(75)")
    with pytest.raises(TemporaryError) as exc:
        noisy.run(job(), ctx(tmp_path))
    message = str(exc.value)
    assert message.endswith("line 4999") and len(message) < 2100


def test_a_program_that_cannot_start_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(TemporaryError, match="cannot start /nonexistent"):
        ExternalExecutor(("/nonexistent",)).run(job(), ctx(tmp_path))


def _hang(tmp_path: Path) -> ExternalExecutor:
    """A processor that ignores SIGTERM, with a grandchild in its group."""
    code = ("import os, signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "c = subprocess.Popen([sys.executable, '-c', "
            "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "time.sleep(60)'])\n"
            f"open({str(tmp_path / 'pids')!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}')\n"
            "time.sleep(60)\n")
    return script(code, kill_grace_s=0.5)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # reaped later by its parent: a zombie is gone
        return f.read().split(")")[1].split()[0] == "Z"


def test_cancel_kills_the_whole_group(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    threading.Timer(1.0, c.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        _hang(tmp_path).run(job(), c)
    assert time.monotonic() - started < 5
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids), pids


def test_a_timeout_is_temporary_and_kills_the_group(tmp_path: Path) -> None:
    ex = _hang(tmp_path)
    ex.timeout_s = 1.0
    with pytest.raises(TemporaryError, match="timed out after 1s"):
        ex.run(job(), ctx(tmp_path))


def test_the_processor_runs_on_the_slot_cores(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    out: dict[str, object] = {}

    def slot_thread() -> None:  # what the runtime does on each slot thread
        pin_current_thread((cpus[-1],))
        out.update(ExternalExecutor((sys.executable, str(EXAMPLE))).run(
            job(), ctx(tmp_path, cores=(cpus[-1],))))

    t = threading.Thread(target=slot_thread)
    t.start()
    t.join()
    assert out["cpus"] == [cpus[-1]]
    assert sorted(os.sched_getaffinity(0)) == cpus  # other threads keep every CPU
    assert json.loads((tmp_path / "work/ap.json").read_text())["worker"] == "w1"
