"""The Python surface: exports, porep ids, the build, and the GIL during C calls."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

import labeler_c
from labeler_c._ffi import ffi, lib


def test_public_api_is_deliberate() -> None:
    assert sorted(labeler_c.__all__) == labeler_c.__all__
    assert all(hasattr(labeler_c, name) for name in labeler_c.__all__)
    for name in ("implementation", "parents", "label_layers", "commd", "zero_commd"):
        assert name in labeler_c.__all__


@pytest.mark.parametrize(
    ("size", "api", "proof"),
    [
        (2 << 10, "1.0.0", 0),
        (8 << 20, "1.0.0", 1),
        (512 << 20, "1.0.0", 2),
        (32 << 30, "1.0.0", 3),
        (64 << 30, "1.0.0", 4),
        (2 << 10, "1.1.0", 5),
        (32 << 30, "1.1.0", 8),
        (64 << 30, "1.1.0", 9),
        (2 << 10, "1.2.0", 10),
        (64 << 30, "1.2.0", 14),
    ],
)
def test_porep_id_encodes_the_registered_proof(size: int, api: str, proof: int) -> None:
    assert labeler_c.registered_seal_proof(size, api) == proof
    assert labeler_c.porep_id(size, api) == proof.to_bytes(8, "little") + bytes(24)


def test_ni_porep_ids() -> None:
    assert labeler_c.registered_seal_proof(2 << 10, "1.2.0", ni_porep=True) == 15
    assert labeler_c.porep_id(64 << 30, "1.2.0", ni_porep=True)[0] == 19
    with pytest.raises(ValueError, match="NI-PoRep"):
        labeler_c.porep_id(2 << 10, "1.1.0", ni_porep=True)


def test_2kib_v1_porep_id_is_all_zero() -> None:
    assert labeler_c.porep_id(2048, "1.0.0") == bytes(32)


def test_missing_extension_names_the_build_step() -> None:
    code = (
        "import sys; sys.modules['labeler_c._labeler'] = None\n"
        "try:\n    import labeler_c\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "not built" in out.stdout and "pip install -e ." in out.stdout


def test_build_script_defines_the_private_module() -> None:
    from labeler_c import _build

    assert _build.ffibuilder._assigned_source[0] == "labeler_c._labeler"


def test_gil_is_released_during_a_long_c_call() -> None:
    """Another thread keeps running while one C call hashes for a while."""
    graph = ffi.new("labeler_graph *")
    assert lib.labeler_graph_init(graph, 1 << 14, bytes(32), 1) == 0
    out = ffi.new("uint32_t[]", (1 << 14) * 14)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    try:
        start_ticks = ticks
        begin = time.perf_counter()
        rc = lib.labeler_parents(graph, 0, 1 << 14, out)  # one call, ~0.1 s
        elapsed = time.perf_counter() - begin
        during = ticks - start_ticks
    finally:
        stop.set()
        counter.join()
    assert rc == 0
    assert elapsed > 0.02
    # With the GIL held the counter could not advance at all during the call.
    assert during > 1000


def test_labeling_runs_in_parallel_threads() -> None:
    def work() -> None:
        labeler_c.label_layers(bytes(32), bytes([5] * 32), 1 << 12, 2, "1.1.0")

    work()  # generate the cache outside the threads
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_bench_cli_prints_one_json_object() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "labeler_c.bench", "--nodes", "64", "--layers", "2", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["implementation"] == labeler_c.implementation()
    assert result["labels"] == 128
    for key in ("labels_per_s", "seconds", "labels_per_s_per_core", "labels_per_cpu_s"):
        assert result[key] > 0


def test_bench_cli_prints_a_readable_line() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "labeler_c.bench",
            "--nodes",
            "64",
            "--layers",
            "1",
            "--sectors",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        "2 thread(s) x 1 sector(s) x 1 layers x 64 nodes" in out.stdout
        and "M labels/s per core" in out.stdout
    )


def test_bench_cli_shares_a_pool_and_refuses_one_too_small() -> None:
    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "labeler_c.bench", "--nodes", "4096",
                               "--layers", "2", "--sectors", "2", *args],
                              capture_output=True, text=True, check=False)

    out = bench("--pool", "default", "--queue", "2", "--producer", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    sector = 4096 * 32
    assert result["pool_bytes"] == 7 * sector // 2  # (3N + 1) / 2 x S, N = 2
    assert result["labels"] == 2 * 2 * 4096 * 2 and result["producer"] is True
    assert result["peak_rss"] > 0 and result["parent_cache_bytes"] == 4096 * 14 * 4
    small = bench("--pool", str(2 * sector))
    assert small.returncode == 2 and "needs at least (N+1)·S" in small.stderr
