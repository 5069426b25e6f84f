"""CommD: published zero-sector constants, the zero shortcut, files, and the reference."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c import reference

from .vectors import ZERO_COMMD

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(("size", "want"), list(ZERO_COMMD.items()))
def test_zero_commd_matches_published_constant(impl: str, size: int, want: str) -> None:
    assert labeler_c.zero_commd(size).hex() == want


@pytest.mark.parametrize("size", [64, 128, 2048, 1 << 16])
def test_zero_shortcut_equals_hashing_zero_bytes(impl: str, size: int) -> None:
    assert labeler_c.commd(bytes(size)) == labeler_c.zero_commd(size)


def test_commd_of_zero_8mib_sector_hashes_to_the_constant(impl: str) -> None:
    assert labeler_c.commd(bytearray(8 << 20)).hex() == ZERO_COMMD[8 << 20]


@pytest.mark.parametrize("size", [64, 128, 4096, 1 << 20])
def test_commd_matches_reference_on_random_data(impl: str, size: int) -> None:
    data = os.urandom(size)
    assert labeler_c.commd(data) == reference.commd(data)


def test_commd_splits_large_inputs_without_changing_the_root() -> None:
    data = os.urandom(64 << 20)  # at the parallel threshold
    assert labeler_c.commd(data) == labeler_c.commd(memoryview(data))
    top = reference.commd(
        b"".join(labeler_c.commd(data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20))
    )
    assert labeler_c.commd(data) == top


def test_commd_reads_a_file_by_path(tmp_path: Path) -> None:
    data = os.urandom(1 << 16)
    path = tmp_path / "unsealed"
    path.write_bytes(data)
    assert labeler_c.commd(str(path)) == labeler_c.commd(path) == reference.commd(data)


@pytest.mark.parametrize("size", [0, 32, 48, 100, 3 << 10])
def test_commd_rejects_sizes_that_are_not_powers_of_two_from_64(size: int) -> None:
    with pytest.raises(ValueError, match="power of two of at least 64 bytes"):
        labeler_c.commd(bytes(size))
    with pytest.raises(ValueError, match="power of two of at least 64 bytes"):
        labeler_c.zero_commd(size)


def test_commd_rejects_a_file_of_bad_size(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(bytes(100))
    with pytest.raises(ValueError, match="short"):
        labeler_c.commd(path)
    with pytest.raises(FileNotFoundError):
        labeler_c.commd(tmp_path / "missing")
