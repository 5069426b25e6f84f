"""Graph and labeling properties over random graphs (hypothesis)."""

from __future__ import annotations

import array

from hypothesis import given, settings
from hypothesis import strategies as st

import labeler_c
from labeler_c import reference
from labeler_c._ffi import ffi, lib
from labeler_c._graph import Graph

node_counts = st.sampled_from([64, 128, 256, 1024, 4096, 1 << 14])
porep_ids = st.binary(min_size=32, max_size=32)
versions = st.sampled_from(["1.0.0", "1.1.0", "1.2.0"])


def rows(table: bytes) -> list[tuple[int, ...]]:
    words = array.array("I", table)
    return [tuple(words[i : i + 14]) for i in range(0, len(words), 14)]


@settings(max_examples=25, deadline=None)
@given(nodes=node_counts, porep=porep_ids, api=versions)
def test_parents_are_in_range(nodes: int, porep: bytes, api: str) -> None:
    table = labeler_c.parents(nodes, porep, api)
    assert len(table) == nodes * 14 * 4
    for v, row in enumerate(rows(table)):
        base, expander = row[:6], row[6:]
        if v < 2:
            assert base == (0,) * 6
        else:
            assert all(p < v for p in base), (v, row)
            # The predecessor's slot is where the version puts it.
            assert base[5 if api == "1.0.0" else 0] == v - 1
        assert all(p < nodes for p in expander), (v, row)


@settings(max_examples=25, deadline=None)
@given(nodes=node_counts, porep=porep_ids)
def test_versions_share_random_parents_and_differ_only_in_order(nodes: int, porep: bytes) -> None:
    old, new, newest = (labeler_c.parents(nodes, porep, api) for api in ("1.0.0", "1.1.0", "1.2.0"))
    assert new == newest
    for v, (a, b) in enumerate(zip(rows(old), rows(new), strict=True)):
        if v >= 2:
            assert a[:5] == b[1:6] and a[5] == b[0] == v - 1
        assert a[6:] == b[6:]  # below 2^29 nodes the 1.0.0 truncation never bites


@settings(max_examples=10, deadline=None)
@given(nodes=node_counts, porep=porep_ids, api=versions)
def test_parents_are_deterministic(nodes: int, porep: bytes, api: str) -> None:
    assert labeler_c.parents(nodes, porep, api) == labeler_c.parents(nodes, porep, api)


@settings(max_examples=10, deadline=None)
@given(porep=porep_ids, api=versions)
def test_parents_match_reference(porep: bytes, api: str) -> None:
    want = reference.parent_cache_bytes(reference.parents(64, porep, api))
    assert labeler_c.parents(64, porep, api) == want


@settings(max_examples=15, deadline=None)
@given(
    replica=st.binary(min_size=32, max_size=32),
    porep=porep_ids,
    nodes=st.sampled_from([64, 128]),
    layers=st.integers(1, 3),
    api=versions,
)
def test_labels_match_reference_for_every_implementation(
    replica: bytes, porep: bytes, nodes: int, layers: int, api: str
) -> None:
    want = reference.label_layers(replica, porep, nodes, layers, api)[-1]
    for name in labeler_c.available_implementations():
        labeler_c.use_implementation(name)
        got = labeler_c.label_layers(replica, porep, nodes, layers, api)
        assert got == want, name
        assert all(got[i] < 0x40 for i in range(31, len(got), 32))  # Fr-safe
    labeler_c.use_implementation()


@settings(max_examples=30, deadline=None)
@given(
    nodes=st.sampled_from([1 << 20, 1 << 29, 1 << 30, 1 << 31]),
    porep=porep_ids,
    api=versions,
    fraction=st.floats(0, 1, exclude_max=True),
)
def test_single_rows_of_huge_graphs_match_reference(
    nodes: int, porep: bytes, api: str, fraction: float
) -> None:
    """Production-size graphs, row by row: big metagraph nodes and the 1.0.0 truncation."""
    v = int(fraction * nodes)
    graph = Graph(nodes, porep, api)
    row = ffi.new("uint32_t[14]")
    assert lib.labeler_parents(graph._g, v, 1, row) == 0
    want = reference.base_parents(v, reference.drg_seed(porep), api) + (
        reference.expander_parents(v, nodes, reference.feistel_keys(porep), api)
    )
    assert list(row) == want
    if api == "1.0.0" and nodes >= 1 << 30:
        assert all(p < 1 << 29 for p in want[6:])  # upstream's "pathology" test
