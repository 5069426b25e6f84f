"""The parent cache on disk: generated once, reused, and regenerated when damaged."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c import _cache

if TYPE_CHECKING:
    from pathlib import Path

POREP = bytes([42] * 32)


def fresh_graph_args(tag: int) -> tuple[int, bytes, str]:
    """A graph no other test uses, so its cache file starts absent."""
    return 256, bytes([tag]) * 32, "1.1.0"


def test_cache_is_generated_once_and_reused(parent_cache_dir: Path) -> None:
    args = fresh_graph_args(1)
    path = labeler_c.ensure_parent_cache(*args)
    assert path.parent == parent_cache_dir
    assert path.read_bytes() == labeler_c.parents(*args)
    before = path.stat()
    assert labeler_c.ensure_parent_cache(*args) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_digest_is_written_beside_the_cache() -> None:
    path = labeler_c.ensure_parent_cache(*fresh_graph_args(2))
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_truncated_cache_is_regenerated() -> None:
    args = fresh_graph_args(3)
    path = labeler_c.ensure_parent_cache(*args)
    good = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(len(good) // 2)
    assert labeler_c.ensure_parent_cache(*args) == path
    assert path.read_bytes() == good


def test_corrupt_cache_is_regenerated_even_after_it_was_verified() -> None:
    args = fresh_graph_args(4)
    path = labeler_c.ensure_parent_cache(*args)
    good = path.read_bytes()
    with open(path, "r+b") as f:  # same size, same inode: only the content check sees it
        f.seek(1000)
        f.write(b"\xff\xff\xff\xff")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    labeler_c.ensure_parent_cache(*args)
    assert path.read_bytes() == good


def test_labeling_survives_a_damaged_cache() -> None:
    nodes, porep, api = fresh_graph_args(5)
    replica = bytes(32)
    want = labeler_c.label_layers(replica, porep, nodes, 2, api)
    path = labeler_c.parent_cache_path(nodes, porep, api)
    path.write_bytes(b"\xff" * path.stat().st_size)  # out-of-range parents everywhere
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert labeler_c.label_layers(replica, porep, nodes, 2, api) == want


def test_cache_without_a_known_digest_is_regenerated() -> None:
    args = fresh_graph_args(6)
    path = labeler_c.ensure_parent_cache(*args)
    path.with_name(path.name + ".sha256").unlink()
    _cache._verified.clear()
    labeler_c.ensure_parent_cache(*args)
    assert path.with_name(path.name + ".sha256").exists()


def test_published_graph_is_checked_against_the_published_digest(parent_cache_dir: Path) -> None:
    porep = labeler_c.porep_id(2048, "1.0.0")
    path = labeler_c.ensure_parent_cache(64, porep, "1.0.0")
    assert path.stem in _cache.PUBLISHED_DIGESTS
    assert hashlib.sha256(path.read_bytes()).hexdigest() == _cache.PUBLISHED_DIGESTS[path.stem]


def test_a_version_the_porep_id_does_not_imply_gets_its_own_file() -> None:
    porep = labeler_c.porep_id(2048, "1.1.0")
    upstream = labeler_c.parent_cache_path(64, porep, "1.1.0")
    assert labeler_c.parent_cache_path(64, porep, "1.2.0") == upstream
    other = labeler_c.parent_cache_path(64, porep, "1.0.0")
    assert other != upstream and other.name.endswith("-api1.0.0.cache")


def test_cache_directory_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_cache.ENV_CACHE_DIR, str(tmp_path / "elsewhere"))
    path = labeler_c.ensure_parent_cache(64, POREP, "1.1.0")
    assert path.parent == tmp_path / "elsewhere"
    assert labeler_c.cache_dir() == tmp_path / "elsewhere"


def test_explicit_cache_of_wrong_size_is_a_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "parents.cache"
    bad.write_bytes(bytes(100))
    with pytest.raises(ValueError, match=r"has 100 bytes, expected 14336 \(256 nodes x 56\)"):
        labeler_c.label_layers(bytes(32), POREP, 256, 1, "1.1.0", parent_cache=bad)
    with pytest.raises(ValueError, match="has 100 bytes"):
        labeler_c.ParentCache(bad, 256)


def test_explicit_cache_with_out_of_range_parents_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "parents.cache"
    bad.write_bytes(b"\xff" * 256 * 56)
    with pytest.raises(labeler_c.CorruptParentCache, match="layer 1"):
        labeler_c.label_layers(bytes(32), POREP, 256, 1, "1.1.0", parent_cache=bad)


def test_explicit_cache_is_used_as_given(tmp_path: Path) -> None:
    path = tmp_path / "mine.cache"
    path.write_bytes(labeler_c.parents(128, POREP, "1.0.0"))
    got = labeler_c.label_layers(bytes(32), POREP, 128, 2, "1.0.0", parent_cache=path)
    assert got == labeler_c.label_layers(bytes(32), POREP, 128, 2, "1.0.0")
