"""PC1 memory pool benchmark: N sectors labeling at once (one thread each) with the layer
pool at (N+1)·S, (3N+1)/2·S and 2N·S. Prints throughput and peak RSS of each, each run in
a fresh process so peak RSS is its own. Not a test.

    .venv/bin/python tests/bench/bench_pool.py [--sectors 2] [--nodes 4194304] [--layers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time


def one(sectors: int, nodes: int, layers: int, capacity: int) -> dict[str, float]:
    import labeler_c

    size = nodes * 32
    porep = labeler_c.porep_id(512 << 20, "1.1.0")  # graph parameters do not depend on it
    labeler_c.ensure_parent_cache(nodes, porep, "1.1.0")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pool = labeler_c.LayerPool(capacity, min(64 << 20, size))
    rids = [bytes([i + 1]) * 31 + b"\x00" for i in range(sectors)]
    t0 = time.monotonic()
    threads = [threading.Thread(target=labeler_c.label_layers,
                                args=(rid, porep, nodes, layers, "1.1.0"),
                                kwargs={"pool": pool}) for rid in rids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "labels_per_s": sectors * nodes * layers / seconds,
            "peak_rss": peak, "rss_before": base, "pool": pool.capacity}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sectors", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=1 << 22)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.sectors, args.nodes, args.layers, args.child)))
        return
    n, s = args.sectors, args.nodes * 32
    sizes = {"(N+1)·S": (n + 1) * s, "(3N+1)/2·S": (3 * n + 1) * s // 2, "2N·S": 2 * n * s}
    rows = {}
    for label, capacity in sizes.items():
        out = subprocess.run([sys.executable, __file__, "--sectors", str(n), "--nodes",
                              str(args.nodes), "--layers", str(args.layers), "--child",
                              str(capacity)], capture_output=True, text=True, check=True,
                             env=os.environ)
        rows[label] = json.loads(out.stdout)
    ref = rows["2N·S"]["labels_per_s"]
    print(f"{n} sectors of {s >> 20} MiB, {args.layers} layers, {os.cpu_count()} cores")
    print(f"{'pool':12} {'bytes':>13} {'labels/s':>12} {'vs 2N·S':>8} {'peak RSS':>13} "
          f"{'RSS-base / pool':>16}")
    for label, r in rows.items():
        used = r["peak_rss"] - r["rss_before"]
        print(f"{label:12} {r['pool']:13d} {r['labels_per_s']:12.0f} "
              f"{r['labels_per_s'] / ref:8.2f} {r['peak_rss']:13d} {used / r['pool']:16.2f}")
    print("targets: (3N+1)/2·S >= 0.95 x the throughput of 2N·S; peak RSS <= pool + 5 %")


if __name__ == "__main__":
    main()
