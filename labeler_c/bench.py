"""Labeling throughput: ``python -m labeler_c.bench --nodes N --layers L [--sectors K] --json``.

Labels K sectors at once (one thread each; the C calls release the GIL; ``--batch B`` makes
each thread label B sectors in lockstep, 2-stream SHA-NI) after the parent cache is ready,
and reports the median of ``--repeat`` runs. ``labels_per_s_per_core`` divides by the cores
the threads can use; ``labels_per_cpu_s`` by the CPU time spent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time

from labeler_c._cache import ensure_parent_cache
from labeler_c._dispatch import implementation, use_implementation
from labeler_c._graph import API_VERSIONS, default_threads
from labeler_c._label import label_batch

_POREP_ID = bytes([0x7B] * 32)


def run_once(nodes: int, layers: int, sectors: int, batch: int, api: str) -> tuple[float, float]:
    """Wall and process CPU seconds to label ``sectors`` threads x ``batch`` sectors."""
    errors: list[BaseException] = []

    def label(i: int) -> None:
        replicas = [bytes([(i * batch + j + 1) % 256] * 32) for j in range(batch)]
        try:
            label_batch(replicas, _POREP_ID, nodes, layers, api)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=label, args=(i,)) for i in range(sectors)]
    wall, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if errors:
        raise errors[0]
    return wall, cpu


@dataclasses.dataclass(frozen=True)
class BenchResult:
    implementation: str
    nodes: int
    layers: int
    sectors: int  # threads
    batch: int  # sectors per thread, in lockstep
    api_version: str
    repeat: int
    seconds: float  # median wall time of one run
    seconds_all: list[float]
    labels: int  # per run
    labels_per_s: float
    cores: int  # cores the sectors can use at once
    labels_per_s_per_core: float
    labels_per_cpu_s: float


def measure(
    nodes: int,
    layers: int,
    sectors: int = 1,
    repeat: int = 1,
    api: str = "1.1.0",
    batch: int = 1,
) -> BenchResult:
    """Median throughput over ``repeat`` runs."""
    ensure_parent_cache(nodes, _POREP_ID, api)
    runs = [run_once(nodes, layers, sectors, batch, api) for _ in range(repeat)]
    seconds = statistics.median(wall for wall, _ in runs)
    cpu_seconds = statistics.median(cpu for _, cpu in runs)
    labels = nodes * layers * sectors * batch
    cores = min(sectors, default_threads())
    return BenchResult(
        implementation=implementation(),
        nodes=nodes,
        layers=layers,
        sectors=sectors,
        batch=batch,
        api_version=api,
        repeat=repeat,
        seconds=seconds,
        seconds_all=[wall for wall, _ in runs],
        labels=labels,
        labels_per_s=labels / seconds,
        cores=cores,
        labels_per_s_per_core=labels / seconds / cores,
        labels_per_cpu_s=labels / max(cpu_seconds, 1e-9),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labeler_c.bench", description=__doc__)
    parser.add_argument("--nodes", type=int, required=True, help="nodes per sector (2^k >= 64)")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--sectors", type=int, default=1, help="threads labeling at once")
    parser.add_argument("--batch", type=int, default=1, help="sectors per thread, in lockstep")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    parser.add_argument("--api", default="1.1.0", choices=sorted(API_VERSIONS))
    parser.add_argument("--impl", choices=["auto", "shani", "portable"], default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.sectors, args.batch, args.repeat) < 1:
        parser.error("--sectors, --batch and --repeat must be at least 1")
    if args.impl is not None:
        use_implementation(args.impl)
    try:
        result = measure(args.nodes, args.layers, args.sectors, args.repeat, args.api, args.batch)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(
            f"{result.implementation}: {args.sectors} thread(s) x {args.batch} sector(s) x "
            f"{args.layers} layers x "
            f"{args.nodes} nodes in {result.seconds:.3f} s: "
            f"{result.labels_per_s / 1e6:.3f} M labels/s, "
            f"{result.labels_per_s_per_core / 1e6:.3f} M labels/s per core"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
