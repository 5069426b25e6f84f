"""The producer thread: parents gathered ahead into a ring give the same bytes as reading
them in place, for single sectors and batches, on every layer, and corrupt caches stop it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c import reference

if TYPE_CHECKING:
    from pathlib import Path

API = "1.1.0"


@pytest.mark.parametrize("api", ["1.0.0", "1.1.0"])
def test_producer_matches_reference_on_every_layer(impl: str, api: str, tmp_path: Path) -> None:
    porep, replica = bytes([5] * 32), bytes([7] * 32)
    want = reference.label_layers(replica, porep, 128, 3, api)
    labeler_c.label_layers(replica, porep, 128, 3, api, tmp_path, producer=True)
    for layer in range(1, 4):
        assert (tmp_path / f"sc-02-data-layer-{layer}.dat").read_bytes() == want[layer - 1]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_producer_batch_equals_direct(k: int) -> None:
    # 2^14 nodes: far more nodes than the ring holds, so it wraps many times
    porep, replicas = bytes([6] * 32), [bytes([20 + i] * 32) for i in range(k)]
    direct = labeler_c.label_batch(replicas, porep, 1 << 14, 3, API)
    assert labeler_c.label_batch(replicas, porep, 1 << 14, 3, API, producer=True) == direct
    assert labeler_c.label_batch(replicas, porep, 1 << 14, 3, API, lockstep=False) == direct


def test_producer_stops_on_a_corrupt_parent_cache(tmp_path: Path) -> None:
    nodes, porep = 1 << 12, bytes([8] * 32)
    good = labeler_c.ensure_parent_cache(nodes, porep, API).read_bytes()
    bad = bytearray(good)
    row = 3000 * 14 * 4  # node 3000's first base parent: made >= 3000
    bad[row : row + 4] = (4000).to_bytes(4, "little")
    cache = tmp_path / "bad.cache"
    cache.write_bytes(bytes(bad))
    with pytest.raises(labeler_c.CorruptParentCache):
        labeler_c.label_layers(bytes(32), porep, nodes, 2, API, parent_cache=cache,
                               producer=True)


def test_batch_size_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most 16 sectors"):
        labeler_c.label_batch([bytes([i] * 32) for i in range(17)], bytes(32), 64, 1, API,
                              lockstep=False)
    with pytest.raises(ValueError, match="at most 32 sectors"):
        labeler_c.label_batch([bytes([i] * 32) for i in range(33)], bytes(32), 64, 1, API)
    with pytest.raises(ValueError, match="producer thread works with lockstep=False"):
        labeler_c.label_batch([bytes(32)], bytes(32), 64, 1, API, producer=True, lockstep=True)
