"""Upstream vectors and SPEC worked examples, for every implementation."""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c import reference
from labeler_c._graph import Graph

if TYPE_CHECKING:
    from pathlib import Path

from .vectors import (
    EXAMPLE_DRG_SEED,
    EXAMPLE_FEISTEL_KEYS,
    EXAMPLE_FIRST_DRAWS,
    EXAMPLE_NODE3_PARENTS,
    EXAMPLE_POREP_ID,
    LAST_LABELS,
    PUBLISHED_CACHES,
)


@pytest.mark.parametrize(("replica", "porep", "nodes", "layers", "api", "want"), LAST_LABELS)
def test_last_label_matches_upstream(
    impl: str, replica: bytes, porep: bytes, nodes: int, layers: int, api: str, want: str
) -> None:
    last = labeler_c.label_layers(replica, porep, nodes, layers, api)
    assert len(last) == nodes * 32
    assert last[-32:].hex() == want


@pytest.mark.parametrize(("replica", "porep", "nodes", "layers", "api", "want"), LAST_LABELS)
def test_reference_matches_upstream(
    replica: bytes, porep: bytes, nodes: int, layers: int, api: str, want: str
) -> None:
    assert reference.label_layers(replica, porep, nodes, layers, api)[-1][-32:].hex() == want


def test_worked_example_seeds() -> None:
    graph = Graph(64, EXAMPLE_POREP_ID, "1.1.0")
    assert bytes(graph._g.drg_seed).hex() == EXAMPLE_DRG_SEED
    assert graph.feistel_keys == EXAMPLE_FEISTEL_KEYS
    assert graph._g.feistel_half_bits == 5
    assert reference.drg_seed(EXAMPLE_POREP_ID).hex() == EXAMPLE_DRG_SEED
    assert tuple(reference.feistel_keys(EXAMPLE_POREP_ID)) == EXAMPLE_FEISTEL_KEYS


def test_worked_example_rng_draws() -> None:
    words = reference.chacha8_words(bytes.fromhex(EXAMPLE_DRG_SEED) + struct.pack("<I", 3), 1)
    assert (words[0] | words[1] << 32, words[2] | words[3] << 32) == EXAMPLE_FIRST_DRAWS


@pytest.mark.parametrize("api", ["1.1.0", "1.2.0"])
def test_worked_example_parents_of_node_3(impl: str, api: str) -> None:
    table = labeler_c.parents(64, EXAMPLE_POREP_ID, api)
    assert struct.unpack_from("<14I", table, 3 * 56) == EXAMPLE_NODE3_PARENTS


def test_worked_example_under_1_0_0_moves_the_predecessor_last() -> None:
    row = struct.unpack_from("<14I", labeler_c.parents(64, EXAMPLE_POREP_ID, "1.0.0"), 3 * 56)
    assert row[:6] == (1, 1, 2, 2, 2, 2)
    assert row[6:] == EXAMPLE_NODE3_PARENTS[6:]  # N <= 2^29: no expander truncation


@pytest.mark.parametrize(("sector_size", "api"), [k for k in PUBLISHED_CACHES if k[0] <= 8 << 20])
def test_parent_cache_matches_published_digest(impl: str, sector_size: int, api: str) -> None:
    porep = labeler_c.porep_id(sector_size, api)
    table = labeler_c.parents(sector_size // 32, porep, api)
    assert hashlib.sha256(table).hexdigest() == PUBLISHED_CACHES[sector_size, api][1]


@pytest.mark.parametrize(("sector_size", "api"), list(PUBLISHED_CACHES))
def test_parent_cache_file_names_match_upstream(sector_size: int, api: str) -> None:
    porep = labeler_c.porep_id(sector_size, api)
    path = labeler_c.parent_cache_path(sector_size // 32, porep, api)
    assert path.name == PUBLISHED_CACHES[sector_size, api][0] + ".cache"


def test_parents_match_reference_for_both_versions(impl: str) -> None:
    porep = bytes(range(32))
    for api in ("1.0.0", "1.1.0"):
        want = reference.parent_cache_bytes(reference.parents(256, porep, api))
        assert labeler_c.parents(256, porep, api) == want


@pytest.mark.parametrize("api", ["1.0.0", "1.1.0", "1.2.0"])
def test_every_layer_matches_reference(impl: str, api: str, tmp_path: Path) -> None:
    replica, porep = bytes(range(1, 33)), bytes(range(100, 132))
    want = reference.label_layers(replica, porep, 128, 3, api)
    assert labeler_c.label_layers(replica, porep, 128, 3, api, out_dir=str(tmp_path)) == want[-1]
    for layer, data in enumerate(want, start=1):
        assert (tmp_path / labeler_c.layer_file_name(layer)).read_bytes() == data


def test_replica_id_matches_reference(impl: str) -> None:
    args = (bytes(range(32)), 0x0102030405060708, bytes([7] * 32), bytes([3] * 32), bytes(32))
    rid = labeler_c.replica_id(*args)
    assert rid == reference.replica_id(*args)
    assert rid[31] < 0x40
    # The sector id is big-endian in the message: changing its last byte changes the id.
    assert labeler_c.replica_id(args[0], args[1] + 1, *args[2:]) != rid
