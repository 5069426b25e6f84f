"""PC1 memory pool and interleaving benchmark, in one run (not a test).

    .venv/bin/python tests/bench/bench_pool.py [--sectors 2] [--nodes 1048576] [--layers 11]
                                               [--queue 3] [--rounds 3]

1. N slots labeling at once (one thread each, `--queue` sectors one after another, as a
   worker's pc1 slots do) sharing one layer pool of (N+1)·S, (3N+1)/2·S and 2N·S: labels/s,
   and peak layer memory against the pool size. Every run is a fresh `python -m
   labeler_c.bench` process, so its peaks are its own; rounds alternate the sizes and
   medians are quoted. A queue matters: sectors that start together fall into step half a
   layer apart once, and at the very end one slot runs alone for that half layer.
2. Single-stream against two interleaved streams (a batch of 2 sectors on one thread) per
   core, in cache (128 KiB) and at the pool's sector size, next to the SHA-256 bound of this
   CPU (one label = 20 compressions in a chain).

Targets: (3N+1)/2·S >= 0.95 x the throughput of
2N·S with layer memory <= pool + 5 %; interleaved >= 1.6 x single-stream per core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from bench_labeler import BLOCKS_PER_LABEL, hashlib_bytes_per_s  # same directory


def bench(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "labeler_c.bench", "--json", *args],
                         capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def sha_bound(rounds: int) -> float:
    """Labels/s one core can do at most: single-stream SHA-256 (hashlib, SHA-NI) / 1280 B."""
    return float(statistics.median(hashlib_bytes_per_s(rounds)) / 64 / BLOCKS_PER_LABEL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sectors", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=1 << 20, help="per sector (32 MiB)")
    ap.add_argument("--layers", type=int, default=11)
    ap.add_argument("--queue", type=int, default=3, help="sectors per slot, in a row")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n, s = args.sectors, args.nodes * 32
    common = ["--nodes", str(args.nodes), "--layers", str(args.layers)]
    bench(*common[:2], "--layers", "1")  # the parent cache, generated once, outside timing

    sizes = {"(N+1)·S": "min", "(3N+1)/2·S": "default", "2N·S": "max"}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in sizes}
    for _ in range(args.rounds):
        for label, name in sizes.items():
            runs[label].append(bench(*common, "--sectors", str(n), "--queue", str(args.queue),
                                     "--pool", name))

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    ref = med("2N·S", "labels_per_s")
    print(f"{n} slots x {args.queue} sectors of {s >> 20} MiB, {args.layers} layers; "
          f"median of {args.rounds}")
    print(f"{'pool':12} {'MiB':>7} {'M labels/s':>11} {'vs 2N·S':>8} {'layer mem MiB':>14} "
          f"{'mem / pool':>11} {'peak RSS MiB':>13}")
    for label in sizes:
        pool = med(label, "pool_bytes")
        mem = med(label, "layer_memory_peak")
        print(f"{label:12} {pool / 2**20:7.0f} {med(label, 'labels_per_s') / 1e6:11.3f} "
              f"{med(label, 'labels_per_s') / ref:8.3f} {mem / 2**20:14.0f} {mem / pool:11.3f} "
              f"{med(label, 'peak_rss') / 2**20:13.0f}")
    cache_mib = runs["2N·S"][0]["parent_cache_bytes"] / 2**20
    print(f"(peak RSS includes the parent cache, a {cache_mib:.0f} MiB file mapping, "
          "and the interpreter)")

    # single vs interleaved streams on one core; rates per CPU-second, as the bound is
    bound = sha_bound(5)
    print(f"\nper core, SHA-256 bound {bound / 1e6:.3f} M labels/s")
    for nodes, layers in ((1 << 12, 11), (args.nodes, args.layers)):
        shape = ["--nodes", str(nodes), "--layers", str(layers), "--sectors", "1"]
        one = statistics.median(bench(*shape)["labels_per_cpu_s"] for _ in range(args.rounds))
        two = statistics.median(bench(*shape, "--batch", "2")["labels_per_cpu_s"]
                                for _ in range(args.rounds))
        size = f"{nodes * 32 >> 10} KiB" if nodes < 1 << 15 else f"{nodes * 32 >> 20} MiB"
        print(f"  {size:>8} single stream          {one / 1e6:.3f} M labels/s  "
              f"{one / bound:.2f} x bound")
        print(f"  {size:>8} 2 sectors interleaved  {two / 1e6:.3f} M labels/s  "
              f"{two / bound:.2f} x bound, {two / one:.2f} x single")
    print("targets: (3N+1)/2·S >= 0.95 x 2N·S; layer memory <= pool + 5 %; "
          "interleaved >= 1.6 x single")


if __name__ == "__main__":
    main()
