"""Batches: sectors labeled in lockstep (2-stream SHA-NI) give the same bytes as alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c import reference

if TYPE_CHECKING:
    from pathlib import Path

POREP, NODES, API = bytes([3] * 32), 256, "1.1.0"


def rids(k: int) -> list[bytes]:
    return [bytes([10 + i] * 32) for i in range(k)]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_batch_equals_sectors_labeled_alone(impl: str, k: int) -> None:
    alone = [labeler_c.label_layers(r, POREP, NODES, 3, API) for r in rids(k)]
    assert labeler_c.label_batch(rids(k), POREP, NODES, 3, API) == alone


@pytest.mark.parametrize("api", ["1.0.0", "1.1.0"])
def test_batch_matches_reference_and_upstream_vectors(impl: str, api: str) -> None:
    porep = bytes(32) if api == "1.0.0" else bytes([123] * 32)
    replicas = [bytes([9] * 32), bytes([1] * 32)]
    got = labeler_c.label_batch(replicas, porep, 64, 11, api)
    assert got[0] == reference.label_layers(replicas[0], porep, 64, 11, api)[-1]
    assert got[1] == reference.label_layers(replicas[1], porep, 64, 11, api)[-1]


def test_batch_writes_and_resumes_each_sector(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    want = labeler_c.label_batch(rids(2), POREP, NODES, 4, API, out_dirs=dirs)
    # Different crash points per sector: the batch resumes from the earliest.
    (dirs[0] / "sc-02-data-layer-4.dat").unlink()
    (dirs[1] / "sc-02-data-layer-3.dat").unlink()
    (dirs[1] / "sc-02-data-layer-4.dat").unlink()
    assert labeler_c.label_batch(rids(2), POREP, NODES, 4, API, out_dirs=dirs) == want
    for d, last in zip(dirs, want, strict=True):
        assert (d / "sc-02-data-layer-4.dat").read_bytes() == last


def test_batch_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty sequence"):
        labeler_c.label_batch([], POREP, NODES, 1, API)
    with pytest.raises(ValueError, match="non-empty sequence"):
        labeler_c.label_batch(bytes(32), POREP, NODES, 1, API)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replica_id must be 32 bytes, got 3"):
        labeler_c.label_batch([bytes(32), bytes(3)], POREP, NODES, 1, API)
    with pytest.raises(ValueError, match="2 replica ids but 1 output directories"):
        labeler_c.label_batch(rids(2), POREP, NODES, 1, API, out_dirs=["x"])
