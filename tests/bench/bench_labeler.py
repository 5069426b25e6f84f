"""Labeling throughput next to this CPU's SHA-256 bound, in one run (not a timed test).

    python tests/bench/bench_labeler.py [--rounds 5] [--big] [--json]

The bound: one label is 20 SHA-256 compression blocks on one dependent chain, so a core
labels at most (single-stream SHA-256 bytes/s) / 64 / 20 labels per second. The
single-stream rate is measured with hashlib (OpenSSL, SHA-NI when present) on a 64 MiB
buffer and with `openssl speed` when available. Every configuration runs once per round,
rounds repeat, and medians (with min-max) are reported. A batch labels sectors of one graph
in lockstep on one thread through the 2-stream SHA-NI compression. Rates are per CPU-second of
the process (per core), as `openssl speed` reports them: on a shared machine, time spent
descheduled must not count against the kernel. The exception is "(wall)": a producer thread on
the second core gathers parents for the hashing one, and the rate is per wall-second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import time

import labeler_c
from labeler_c.bench import measure

BLOCKS_PER_LABEL = 20  # SPEC §8 / §13: 1,248-byte message + padding = 20 blocks

# (name, nodes, layers, threads, sectors per thread in lockstep, producer thread)
CONFIGS = [
    ("128 KiB sector (in L2), 11 layers", 1 << 12, 11, 1, 1, False),
    ("128 KiB, batch of 2 on one core", 1 << 12, 11, 1, 2, False),
    ("8 MiB sector, 2 layers", 1 << 18, 2, 1, 1, False),
    ("8 MiB, batch of 2 on one core", 1 << 18, 2, 1, 2, False),
    ("8 MiB, 2 threads x 1 sector", 1 << 18, 2, 2, 1, False),
    ("8 MiB, 2 threads x batch of 2", 1 << 18, 2, 2, 2, False),
    ("8 MiB, + producer thread (wall)", 1 << 18, 2, 1, 1, True),
]
# Only with the best implementation: the portable path would take minutes per run.
BIG = [
    ("512 MiB sector, 2 layers, prefetch", 1 << 24, 2, 1, 1, False),
    ("512 MiB, + producer thread (wall)", 1 << 24, 2, 1, 1, True),
]


_DATA = bytes(range(256)) * (1 << 18)  # 64 MiB, touched: no page faults while timing


def hashlib_bytes_per_s(rounds: int) -> list[float]:
    data = _DATA
    rates = []
    for _ in range(rounds):
        start = time.thread_time()
        hashlib.sha256(data).digest()
        rates.append(len(data) / (time.thread_time() - start))
    return rates


def openssl_bytes_per_s() -> float | None:
    if shutil.which("openssl") is None:
        return None
    out = subprocess.run(
        ["openssl", "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "2"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("sha256"):
            return float(line.split()[-1].rstrip("k")) * 1000
    return None


def fmt_range(values: list[float]) -> str:
    return f"{min(values) / 1e6:.3f}-{max(values) / 1e6:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", action="store_true", help="add a 512 MiB sector (~2 GiB RAM)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    impls = labeler_c.available_implementations()
    plan = [(c, i) for i in impls for c in CONFIGS] + [(c, impls[0]) for c in BIG if args.big]
    runs: dict[tuple[str, str], list[float]] = {(c[0], i): [] for c, i in plan}
    bound_rates: list[float] = []
    for _ in range(args.rounds):
        bound_rates += hashlib_bytes_per_s(1)
        for (name, nodes, layers, threads, batch, producer), impl in plan:
            labeler_c.use_implementation(impl)
            result = measure(nodes, layers, threads, batch=batch, producer=producer)
            # With a producer the hashing core is the one that counts, and the target is
            # per wall-second of it (the producer uses the second core).
            runs[name, impl].append(result.labels_per_s if producer else
                                    result.labels_per_cpu_s)
    labeler_c.use_implementation()
    ssl = openssl_bytes_per_s()

    bound = statistics.median(bound_rates) / 64 / BLOCKS_PER_LABEL
    print(
        f"SHA-256 single stream (hashlib, 64 MiB, median of {args.rounds}): "
        f"{statistics.median(bound_rates) / 1e9:.3f} GB/s "
        f"-> bound R = {bound / 1e6:.3f} M labels/s per core"
    )
    if ssl is not None:
        print(
            f"openssl speed -evp sha256 -bytes 16384: {ssl / 1e9:.3f} GB/s "
            f"-> {ssl / 64 / BLOCKS_PER_LABEL / 1e6:.3f} M labels/s"
        )
    print(f"\n{'configuration':38} {'impl':9} {'M labels/cpu-s':>16} {'min-max':>13} {'vs R':>6}")
    table = []
    for (name, impl), rates in runs.items():
        med = statistics.median(rates)
        table.append(
            {
                "config": name,
                "implementation": impl,
                "median": med,
                "runs": rates,
                "ratio": med / bound,
            }
        )
        print(f"{name:38} {impl:9} {med / 1e6:16.3f} {fmt_range(rates):>13} {med / bound:6.2f}")
    if args.json:
        print(
            json.dumps(
                {"bound_labels_per_s": bound, "openssl_bytes_per_s": ssl, "results": table},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
