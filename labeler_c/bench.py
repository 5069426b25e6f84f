"""Labeling throughput and memory: ``python -m labeler_c.bench --nodes N --layers L
[--sectors K] [--batch B] [--queue Q] [--pool SIZE] [--producer] [--json]``.

Labels K sectors at once (one thread each; the C calls release the GIL; ``--batch B`` makes
each thread label B sectors together, 2-stream SHA-NI, or with ``--lockstep`` in the
node-interleaved layout through the lockstep kernel; ``--queue Q`` makes it label Q
such in a row, as a worker slot does) after the parent cache is ready,
and reports the median of ``--repeat`` runs. ``labels_per_s_per_core`` divides by the cores
the threads can use; ``labels_per_cpu_s`` by the CPU time spent.

``--pool SIZE`` makes the threads share one layer pool of SIZE bytes (units allowed, or
``min``, ``default``, ``max`` for (N+1)·S, (3N+1)/2·S, 2N·S with N = K·B sectors); without
it each thread has its own 2·B·S. Memory: peak RSS of the process, the parent cache's
share of it (a file mapping), and the peak of the layer memory (anonymous RSS above what
the process held before labeling, sampled every 50 ms).
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
from labeler_c._graph import API_VERSIONS, NODE_BYTES, PARENT_ROW_BYTES, Graph, default_threads
from labeler_c._label import _label
from labeler_c._pool import LayerPool, block_bytes_for, pool_capacity, pool_sizes
from labeler_c._units import parse_size

_POREP_ID = bytes([0x7B] * 32)


def _status_kib(field: str) -> int:
    """A ``kB`` line of /proc/self/status (0 where there is none: not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _AnonPeak:
    """Samples the process's anonymous RSS (heap, pool arena; not the mapped parent cache)
    on a thread, keeping the peak. Arena pages stay resident once touched, so the peak is
    mostly the last sample; sampling is sparse because the sampler's CPU time counts in
    ``labels_per_cpu_s`` (every 2 ms it cost about 3 %)."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.peak = _status_kib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.peak = max(self.peak, _status_kib("RssAnon"))

    def __enter__(self) -> _AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib("RssAnon"))


def pool_size(text: str, sectors: int, sector_bytes: int) -> int:
    """``min``/``default``/``max`` for N sectors, or a size; refused below (N+1)·S."""
    named = pool_sizes(sectors, sector_bytes)
    return pool_capacity(sectors, sector_bytes, named.get(text) or parse_size(text))


def run_once(nodes: int, layers: int, sectors: int, batch: int, api: str,
             pool: LayerPool | None = None, producer: bool = False, queue: int = 1,
             lockstep: bool = False) -> tuple[float, float]:
    """Wall and process CPU seconds to label ``sectors`` threads x ``batch`` sectors, each
    thread ``queue`` times in a row (as a worker slot takes its next job)."""
    errors: list[BaseException] = []
    graph = Graph(nodes, _POREP_ID, api)

    def label(i: int) -> None:
        try:  # nothing written, nothing returned: labeling and its memory only
            for q in range(queue):
                replicas = [bytes([(q * 7 + i * batch + j + 1) % 256] * 32)
                            for j in range(batch)]
                _label(replicas, graph, layers, None, pool, None, None, False,
                       producer=producer, lockstep=lockstep)
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
    queue: int  # batches per thread, one after another
    producer: bool  # a second thread per sector gathers parents
    lockstep: bool  # node-interleaved batch kernel (16-lane AVX-512 where it runs)
    api_version: str
    repeat: int
    seconds: float  # median wall time of one run
    seconds_all: list[float]
    labels: int  # per run
    labels_per_s: float
    cores: int  # cores the sectors can use at once
    labels_per_s_per_core: float
    labels_per_cpu_s: float
    pool_bytes: int | None  # the shared pool; None: 2·batch·S per thread
    peak_rss: int  # bytes, the whole process (VmHWM), parent cache pages included
    parent_cache_bytes: int
    layer_memory_peak: int  # bytes of anonymous RSS above the pre-labeling level


def measure(
    nodes: int,
    layers: int,
    sectors: int = 1,
    repeat: int = 1,
    api: str = "1.1.0",
    batch: int = 1,
    pool_bytes: int | None = None,
    producer: bool = False,
    queue: int = 1,
    lockstep: bool = False,
) -> BenchResult:
    """Median throughput over ``repeat`` runs (and the memory peaks over all of them)."""
    ensure_parent_cache(nodes, _POREP_ID, api)
    sector_bytes = nodes * NODE_BYTES
    pool = None if pool_bytes is None else LayerPool(pool_bytes, block_bytes_for(sector_bytes))
    base = _status_kib("RssAnon")
    try:
        with _AnonPeak() as anon:
            runs = [run_once(nodes, layers, sectors, batch, api, pool, producer, queue,
                             lockstep) for _ in range(repeat)]
    finally:
        if pool is not None:
            pool.close()
    seconds = statistics.median(wall for wall, _ in runs)
    cpu_seconds = statistics.median(cpu for _, cpu in runs)
    labels = nodes * layers * sectors * batch * queue
    cores = min(sectors, default_threads())
    return BenchResult(
        implementation=implementation(),
        nodes=nodes,
        layers=layers,
        sectors=sectors,
        batch=batch,
        queue=queue,
        producer=producer,
        lockstep=lockstep,
        api_version=api,
        repeat=repeat,
        seconds=seconds,
        seconds_all=[wall for wall, _ in runs],
        labels=labels,
        labels_per_s=labels / seconds,
        cores=cores,
        labels_per_s_per_core=labels / seconds / cores,
        labels_per_cpu_s=labels / max(cpu_seconds, 1e-9),
        pool_bytes=None if pool is None else pool.capacity,
        peak_rss=_status_kib("VmHWM") * 1024,
        parent_cache_bytes=nodes * PARENT_ROW_BYTES,
        layer_memory_peak=(anon.peak - base) * 1024,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labeler_c.bench", description=__doc__)
    parser.add_argument("--nodes", type=int, required=True, help="nodes per sector (2^k >= 64)")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--sectors", type=int, default=1, help="threads labeling at once")
    parser.add_argument("--batch", type=int, default=1, help="sectors per thread, in lockstep")
    parser.add_argument("--queue", type=int, default=1,
                        help="sectors (batches) each thread labels one after another")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    parser.add_argument("--api", default="1.1.0", choices=sorted(API_VERSIONS))
    parser.add_argument("--impl", choices=["auto", "shani", "portable"], default=None)
    parser.add_argument("--producer", action="store_true",
                        help="a second thread per sector gathers parents ahead of the hashing")
    parser.add_argument("--lockstep", action="store_true",
                        help="node-interleaved batches (16-lane AVX-512 where it runs)")
    parser.add_argument("--pool", metavar="SIZE", default=None,
                        help="share one layer pool: bytes (96GiB) or min, default, max")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.sectors, args.batch, args.repeat, args.queue) < 1:
        parser.error("--sectors, --batch, --queue and --repeat must be at least 1")
    if args.impl is not None:
        use_implementation(args.impl)
    try:
        pool = None if args.pool is None else pool_size(
            args.pool, args.sectors * args.batch, args.nodes * NODE_BYTES)
        result = measure(args.nodes, args.layers, args.sectors, args.repeat, args.api, args.batch,
                         pool, args.producer, args.queue, args.lockstep)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(
            f"{result.implementation}: {args.sectors} thread(s) x {args.batch} sector(s) x "
            f"{f'{args.queue} in a row x ' if args.queue > 1 else ''}"
            f"{'(+ producer) x ' if args.producer else ''}"
            f"{args.layers} layers x "
            f"{args.nodes} nodes in {result.seconds:.3f} s: "
            f"{result.labels_per_s / 1e6:.3f} M labels/s, "
            f"{result.labels_per_s_per_core / 1e6:.3f} M labels/s per core"
        )
        pool_text = "own 2·S per sector" if result.pool_bytes is None else \
            f"pool {result.pool_bytes >> 20} MiB"
        print(f"memory: {pool_text}; layer memory peak {result.layer_memory_peak >> 20} MiB; "
              f"peak RSS {result.peak_rss >> 20} MiB (parent cache "
              f"{result.parent_cache_bytes >> 20} MiB of it, mapped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
