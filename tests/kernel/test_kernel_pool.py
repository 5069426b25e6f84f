"""The layer pool: sectors share less than 2 x N layers of memory and never deadlock."""

from __future__ import annotations

import threading

import pytest

import labeler_c
from labeler_c import LayerPool
from labeler_c._pool import ENV_POOL_BYTES, PoolJob

POREP, API = bytes([4] * 32), "1.1.0"
NODES = 1 << 12  # 128 KiB layers
LAYER = NODES * 32


def label_all(pool: LayerPool, jobs: list[tuple[list[bytes], int]]) -> list[list[bytes]]:
    """Run every (replica ids, layers) job on its own thread against ``pool``."""
    results: list[list[bytes]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        replicas, layers = jobs[i]
        try:
            results[i] = labeler_c.label_batch(replicas, POREP, NODES, layers, API, pool=pool)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock: a job never finished"
    assert not errors, errors
    return results


def test_concurrent_sectors_in_the_smallest_pool_finish_with_correct_labels() -> None:
    # 4 sectors, (N + 1) x S of memory, small blocks: jobs must wait for each other.
    jobs = [([bytes([i + 1] * 32)], 2 + i) for i in range(4)]
    with LayerPool(5 * LAYER, block_bytes=LAYER // 8) as pool:
        got = label_all(pool, jobs)
        assert pool.free_blocks() == pool.blocks
    for (replicas, layers), last in zip(jobs, got, strict=True):
        assert last == [labeler_c.label_layers(replicas[0], POREP, NODES, layers, API)]


def test_batches_and_single_sectors_share_a_pool() -> None:
    jobs = [([bytes([1] * 32), bytes([2] * 32)], 3), ([bytes([3] * 32)], 2)]
    with LayerPool(4 * LAYER, block_bytes=LAYER // 4) as pool:
        got = label_all(pool, jobs)
    assert got[0] == labeler_c.label_batch(jobs[0][0], POREP, NODES, 3, API)


def test_pool_lends_the_current_layer_block_by_block() -> None:
    with LayerPool(4 * LAYER, block_bytes=LAYER // 4) as pool:
        job = pool.join(1, LAYER)
        pool.grow(job, 1)
        assert (len(job.cur), pool.free_blocks()) == (1, 15)
        pool.grow(job, 3)
        pool.finish_layer(job)
        assert (len(job.prev), len(job.cur), pool.free_blocks()) == (4, 0, 12)
        pool.grow(job, 4)
        pool.finish_layer(job)  # the previous layer goes back
        assert pool.free_blocks() == 12
        pool.leave(job)
        assert pool.free_blocks() == 16


def two_sectors_one_block_free() -> tuple[LayerPool, PoolJob, PoolJob]:
    """(N + 1) x S for two sectors, layers of 2 blocks. Both hold a previous layer and a
    holds half of its current one: one block is free, and only a may take it."""
    pool = LayerPool(3 * LAYER, block_bytes=LAYER // 2)
    a, b = pool.join(1, LAYER), pool.join(1, LAYER)
    for job in (a, b):
        pool.grow(job, 2)
        pool.finish_layer(job)
    pool.grow(a, 1)
    return pool, a, b


def test_banker_refuses_the_block_that_would_deadlock() -> None:
    pool, a, b = two_sectors_one_block_free()
    with pool:
        # a needs 1 (then frees 2), b needs 2: given to b, neither could ever finish.
        assert pool._safe_to_grant(a)
        assert not pool._safe_to_grant(b)
        pool.grow(a, 1)
        pool.finish_layer(a)
        assert pool.free_blocks() == 2
        pool.leave(a)
        pool.leave(b)


def test_jobs_beyond_capacity_wait_for_admission() -> None:
    with LayerPool(2 * LAYER, block_bytes=LAYER) as pool:
        first = pool.join(1, LAYER)
        admitted = threading.Event()

        def second() -> None:
            pool.leave(pool.join(1, LAYER))
            admitted.set()

        t = threading.Thread(target=second)
        t.start()
        assert not admitted.wait(0.2)  # two sectors need (N + 1) x S = 3 layers
        pool.leave(first)
        assert admitted.wait(5)
        t.join()


def test_pool_sizes() -> None:
    with pytest.raises(ValueError, match="power of two"):
        LayerPool(1 << 20, block_bytes=3000)
    with pytest.raises(ValueError, match="below two blocks"):
        LayerPool(1 << 20, block_bytes=1 << 20)
    with LayerPool(2 * LAYER, block_bytes=LAYER) as pool, pytest.raises(ValueError, match="need"):
        pool.join(2, LAYER)


def test_pool_for_sectors_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_POOL_BYTES, raising=False)
    with LayerPool.for_sectors(3, LAYER) as pool:
        assert pool.capacity == 5 * LAYER  # (3N + 1) / 2 x S
        assert pool.block_bytes == LAYER // 64  # fine enough to keep the half layer
    monkeypatch.setenv(ENV_POOL_BYTES, str(6 * LAYER))
    with LayerPool.for_sectors(3, LAYER) as pool:
        assert pool.capacity == 6 * LAYER
    monkeypatch.setenv(ENV_POOL_BYTES, str(3 * LAYER))
    with pytest.raises(ValueError, match="needs at least"):
        LayerPool.for_sectors(3, LAYER)


def test_a_waiting_job_can_be_cancelled() -> None:
    from labeler_c import PoolWaitCancelled

    pool, a, b = two_sectors_one_block_free()
    with pool:
        stop = threading.Event()
        outcome: list[BaseException] = []

        def wait_for_memory() -> None:
            try:
                pool.grow(b, 1, cancelled=stop.is_set)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=wait_for_memory)
        t.start()
        t.join(0.5)
        assert t.is_alive()  # b waits in C on the condition variable
        stop.set()
        t.join(5)
        assert not t.is_alive() and isinstance(outcome[0], PoolWaitCancelled)
        assert len(b.cur) == 0 and pool.free_blocks() == 1  # nothing lent to b
        pool.leave(a)
        pool.leave(b)
        assert pool.free_blocks() == pool.blocks


def test_waiting_job_gets_memory_when_another_finishes_its_layer() -> None:
    pool, a, b = two_sectors_one_block_free()
    with pool:
        t = threading.Thread(target=pool.grow, args=(b, 2))
        t.start()
        t.join(0.3)
        assert t.is_alive()
        pool.grow(a, 1)
        pool.finish_layer(a)  # a's previous layer (2 blocks) goes back: b can finish
        t.join(5)
        assert not t.is_alive() and len(b.cur) == 2
        pool.leave(a)
        pool.leave(b)


def test_closing_a_pool_that_still_lends_memory_is_refused() -> None:
    pool = LayerPool(2 * LAYER, block_bytes=LAYER)
    job = pool.join(1, LAYER)
    with pytest.raises(RuntimeError, match="still lends"):
        pool.close()
    pool.leave(job)
    pool.close()


def test_banker_orders_jobs_that_return_nothing_last() -> None:
    # Three jobs past layer 1 (each holds a previous layer), one still in layer 1: finishing
    # that one takes 8 blocks and gives none back, so it must come last in the banker's
    # sequence. Trying it first made every grant look unsafe and deadlocked 4 sectors.
    with LayerPool(40 * 64, block_bytes=64) as pool:
        jobs = [pool.join(1, 8 * 64) for _ in range(4)]
        for job in jobs[:3]:
            pool.grow(job, 8)
            pool.finish_layer(job)
        pool.grow(jobs[0], 4)
        assert [pool._safe_to_grant(j) for j in jobs] == [True, True, True, True]
        for job in jobs:
            pool.leave(job)


def test_many_mixed_jobs_never_deadlock() -> None:
    # Different layer counts, so jobs in layer 1 meet jobs holding previous layers.
    jobs = [([bytes([i + 1] * 32)], 2 + i % 4) for i in range(6)]
    with LayerPool(7 * LAYER, block_bytes=LAYER // 8) as pool:
        for _ in range(3):
            got = label_all(pool, jobs)
            assert pool.free_blocks() == pool.blocks
    assert got[5] == [labeler_c.label_layers(jobs[5][0][0], POREP, NODES, 3, API)]
