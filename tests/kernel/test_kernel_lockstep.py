"""Lockstep batches in the node-interleaved layout: every lane count, full or partial
(5 sectors in a 16-lane kernel), every implementation and api version, bit-exact with the
single-sector path, the reference and the upstream vectors."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labeler_c
from labeler_c import LayerPool, reference
from labeler_c._dispatch import lockstep_kernel

from .vectors import LAST_LABELS

if TYPE_CHECKING:
    from pathlib import Path

POREP, API = bytes([3] * 32), "1.1.0"


def rids(k: int, seed: int = 10) -> list[bytes]:
    return [bytes([(seed + 7 * i) % 256] * 31 + [i]) for i in range(k)]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9, 10, 16, 17, 32])
def test_lockstep_equals_sectors_labeled_alone(impl: str, k: int) -> None:
    got = labeler_c.label_batch(rids(k), POREP, 256, 3, API, lockstep=True)
    assert got == [labeler_c.label_layers(r, POREP, 256, 3, API) for r in rids(k)]


@pytest.mark.parametrize(("replica", "porep", "nodes", "layers", "api", "want"), LAST_LABELS)
@pytest.mark.parametrize(("k", "at"), [(5, 3), (16, 15), (32, 20)])
def test_upstream_vectors_in_any_lane(impl: str, replica: bytes, porep: bytes, nodes: int,
                                      layers: int, api: str, want: str, k: int, at: int) -> None:
    batch = rids(k)
    batch[at] = replica
    last = labeler_c.label_batch(batch, porep, nodes, layers, api)[at]
    assert last[-32:].hex() == want


@pytest.mark.parametrize("api", ["1.0.0", "1.1.0", "1.2.0"])
def test_every_layer_matches_reference(impl: str, api: str, tmp_path: Path) -> None:
    batch = rids(11)
    dirs = [tmp_path / str(s) for s in range(11)]
    labeler_c.label_batch(batch, POREP, 128, 3, api, dirs)
    for s in (0, 5, 10):
        want = reference.label_layers(batch[s], POREP, 128, 3, api)
        for layer in (1, 2, 3):
            assert (dirs[s] / labeler_c.layer_file_name(layer)).read_bytes() == want[layer - 1]


def test_resume_from_layer_files(tmp_path: Path) -> None:
    dirs = [tmp_path / str(s) for s in range(6)]
    want = labeler_c.label_batch(rids(6), POREP, 1 << 10, 4, API, dirs)
    for d in dirs[::2]:
        (d / "sc-02-data-layer-4.dat").unlink()
    (dirs[1] / "sc-02-data-layer-3.dat").unlink()
    (dirs[1] / "sc-02-data-layer-4.dat").unlink()
    assert labeler_c.label_batch(rids(6), POREP, 1 << 10, 4, API, dirs) == want


def test_batches_share_a_pool_with_blocks_that_split_nodes_unevenly() -> None:
    # 5 sectors: 160-byte nodes, 12 to a 2 KiB block; a 3-sector batch and a single sector
    # label beside it on their own threads, waiting for memory.
    nodes, layer = 1 << 10, (1 << 10) * 32
    jobs = [rids(5, 1), rids(3, 2), rids(1, 3)]
    results: list[list[bytes]] = [[] for _ in jobs]

    def run(i: int, pool: LayerPool) -> None:
        results[i] = labeler_c.label_batch(jobs[i], POREP, nodes, 3, API, pool=pool)

    with LayerPool(14 * layer, block_bytes=2048, idle_bytes=0) as pool:
        threads = [threading.Thread(target=run, args=(i, pool)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert pool.free_blocks() == pool.blocks
    for job, got in zip(jobs, results, strict=True):
        assert got == [labeler_c.label_layers(r, POREP, nodes, 3, API) for r in job]


def test_pool_blocks_smaller_than_a_batch_node_are_refused() -> None:
    with LayerPool(1 << 16, block_bytes=256) as pool, pytest.raises(ValueError, match="cannot"):
        labeler_c.label_batch(rids(16), POREP, 64, 1, API, pool=pool)


def test_the_wide_kernel_is_named_and_only_for_full_enough_batches() -> None:
    names = {lockstep_kernel(k) for k in range(1, 33)}
    if "avx512" in labeler_c.available_implementations():
        labeler_c.use_implementation("avx512")
        assert lockstep_kernel(16) == "avx512x16" and lockstep_kernel(2) == "shani-x2"
        labeler_c.use_implementation()
    labeler_c.use_implementation("portable")
    assert {lockstep_kernel(k) for k in range(1, 33)} == {"portable"}
    labeler_c.use_implementation()
    assert names <= {"avx512x16", "shani-x2", "portable"}


@settings(max_examples=15, deadline=None)
@given(
    k=st.integers(1, 20),
    seed=st.integers(0, 255),
    porep=st.binary(min_size=32, max_size=32),
    nodes=st.sampled_from([64, 128, 256]),
    layers=st.integers(1, 3),
    api=st.sampled_from(["1.0.0", "1.1.0", "1.2.0"]),
)
def test_any_batch_equals_the_single_sector_path(
    k: int, seed: int, porep: bytes, nodes: int, layers: int, api: str
) -> None:
    batch = rids(k, seed)
    want = [labeler_c.label_layers(r, porep, nodes, layers, api) for r in batch]
    for name in labeler_c.available_implementations():
        labeler_c.use_implementation(name)
        assert labeler_c.label_batch(batch, porep, nodes, layers, api) == want, name
    labeler_c.use_implementation()
