"""Labeling throughput per core, batches of 1 to 32 sectors, next to this CPU's
multi-stream SHA-256 limit measured in the same run (not a timed test).

    python tests/bench/bench_labeler.py [--rounds 3] [--big] [--json]

The limit: tests/bench/sha256_streams.c (compiled here with -march=native) hashes with
SHA-NI (1 and 2 streams) and 16-lane AVX-512 with the message in L1; its best rate in
blocks per CPU-second over 20 blocks per label is the most labels/s a core can do.
Configurations: one sector on one core (the single-sector path), then lockstep batches of
2, 4, 8, 16 and 32 sectors on one core (node-interleaved layers; 16-lane AVX-512 from 10
sectors, 2-stream SHA-NI below), in cache (128 KiB sectors, 11 layers), at 8 MiB and, with
--big, at 512 MiB (2 layers each; 1 and 16 sectors: 16 need 16 GiB). Every configuration
and the micro-benchmark run once per round, rounds alternate, medians (min-max) are quoted.
Rates are per CPU-second of the process, as `openssl speed` reports them: on a shared
machine, time spent descheduled must not count against the kernel. Memory: the peak of
layer memory (anonymous RSS above the level before labeling) per sector.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import labeler_c
from labeler_c.bench import measure

BLOCKS_PER_LABEL = 20  # SPEC §8: 1,248-byte message + padding = 20 blocks
HERE = Path(__file__).resolve().parent
BATCHES = (1, 2, 4, 8, 16, 32)
# (name, nodes, layers, batches)
SIZES = [("128 KiB", 1 << 12, 11, BATCHES), ("8 MiB", 1 << 18, 2, BATCHES)]
BIG = ("512 MiB", 1 << 24, 2, (1, 16))


def build_streams(tmp: Path) -> Path:
    exe = tmp / "sha256_streams"
    subprocess.run(["cc", "-O3", "-march=native", "-o", str(exe), str(HERE / "sha256_streams.c")],
                   check=True, capture_output=True)
    return exe


def streams_limit(exe: Path) -> dict[str, float]:
    """Blocks per CPU-second of each kernel the CPU has (the program checks them first)."""
    out = subprocess.run([str(exe), "0.5"], check=True, capture_output=True, text=True).stdout
    rates: dict[str, float] = json.loads(out)
    return rates


def hashlib_bytes_per_s(rounds: int) -> list[float]:
    """Single-stream SHA-256 (hashlib, OpenSSL: SHA-NI when present) on 64 MiB; used by
    bench_pool.py for its single-stream bound."""
    import hashlib
    import time

    data = bytes(range(256)) * (1 << 18)
    rates = []
    for _ in range(rounds):
        start = time.thread_time()
        hashlib.sha256(data).digest()
        rates.append(len(data) / (time.thread_time() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="add 512 MiB sectors (~17 GiB RAM)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    labeler_c.use_implementation()
    sizes = SIZES + ([BIG] if args.big else [])
    plan = [(name, nodes, layers, k) for name, nodes, layers, ks in sizes for k in ks]
    rates: dict[tuple[str, int], list[float]] = {(p[0], p[3]): [] for p in plan}
    memory: dict[tuple[str, int], list[float]] = {(p[0], p[3]): [] for p in plan}
    limits: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_streams(Path(tmp))
        for _ in range(args.rounds):
            for kernel, rate in streams_limit(exe).items():
                limits.setdefault(kernel, []).append(rate)
            for name, nodes, layers, k in plan:
                r = measure(nodes, layers, 1, batch=k, lockstep=k > 1)
                rates[name, k].append(r.labels_per_cpu_s)
                memory[name, k].append(r.layer_memory_peak / k)
    best = max(limits, key=lambda kernel: statistics.median(limits[kernel]))
    limit = statistics.median(limits[best]) / BLOCKS_PER_LABEL
    print(f"implementation {labeler_c.implementation()}; multi-stream limit ({args.rounds} "
          f"rounds, median blocks/s per core):")
    for kernel, values in limits.items():
        print(f"  {kernel:11} {statistics.median(values) / 1e6:7.2f} M blocks/s "
              f"-> {statistics.median(values) / BLOCKS_PER_LABEL / 1e6:.3f} M labels/s")
    print(f"\n{'sector':8} {'batch':>5} {'kernel':10} {'M labels/cpu-s':>15} {'min-max':>13} "
          f"{'vs 1 sector':>11} {'vs limit':>8} {'layer MiB/sector':>16}")
    table = []
    for name, _nodes, _layers, k in plan:
        med = statistics.median(rates[name, k])
        one = statistics.median(rates[name, 1])
        mem = statistics.median(memory[name, k]) / 2**20
        kernel = "single" if k == 1 else labeler_c._dispatch.lockstep_kernel(k)
        lo, hi = min(rates[name, k]) / 1e6, max(rates[name, k]) / 1e6
        print(f"{name:8} {k:5} {kernel:10} {med / 1e6:15.3f} {lo:6.3f}-{hi:6.3f} "
              f"{med / one:11.2f} {med / limit:8.2f} {mem:16.1f}")
        table.append({"sector": name, "batch": k, "kernel": kernel, "median": med,
                      "runs": rates[name, k], "vs_single": med / one, "vs_limit": med / limit,
                      "layer_bytes_per_sector": statistics.median(memory[name, k])})
    print("targets: batch of 16 >= 2.0 x one sector in cache, >= 1.7 x at 512 MiB; "
          ">= 0.85 of the limit")
    if args.json:
        print(json.dumps({"limit_labels_per_s": limit, "limits": limits, "results": table}))


if __name__ == "__main__":
    main()
