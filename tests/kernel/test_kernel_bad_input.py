"""Bad input is a ValueError or OSError that says what was wrong, never a crash."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c._ffi import ffi, lib

if TYPE_CHECKING:
    from pathlib import Path

GOOD = {"replica_id": bytes(32), "porep_id": bytes(32), "nodes": 64, "layers": 1}


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_replica_id_of_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match=f"replica_id must be 32 bytes, got {length}"):
        labeler_c.label_layers(bytes(length), bytes(32), 64, 1, "1.1.0")


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_porep_id_of_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match=f"porep_id must be 32 bytes, got {length}"):
        labeler_c.label_layers(bytes(32), bytes(length), 64, 1, "1.1.0")
    with pytest.raises(ValueError, match="porep_id must be 32 bytes"):
        labeler_c.parents(64, bytes(length), "1.1.0")


def test_ids_that_are_not_bytes() -> None:
    with pytest.raises(ValueError, match="replica_id must be 32 bytes"):
        labeler_c.label_layers("0" * 32, bytes(32), 64, 1, "1.1.0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="porep_id must be 32 bytes, got NoneType"):
        labeler_c.parents(64, None, "1.1.0")  # type: ignore[arg-type]


@pytest.mark.parametrize("nodes", [0, 1, 32, 63, 65, 96, 1000, 2**32, -64, 64.0, True, "64", None])
def test_node_counts_that_are_not_powers_of_two_from_64(nodes: int) -> None:
    with pytest.raises(ValueError, match="nodes must be a power of two"):
        labeler_c.parents(nodes, bytes(32), "1.1.0")
    with pytest.raises(ValueError, match="nodes must be a power of two"):
        labeler_c.label_layers(bytes(32), bytes(32), nodes, 1, "1.1.0")


@pytest.mark.parametrize("api", ["1.3.0", "1.0", "v1.1.0", "", None, 1])
def test_unknown_api_version(api: str) -> None:
    with pytest.raises(ValueError, match="unknown api version"):
        labeler_c.parents(64, bytes(32), api)
    with pytest.raises(ValueError, match="unknown api version"):
        labeler_c.label_layers(bytes(32), bytes(32), 64, 1, api)


@pytest.mark.parametrize("layers", [0, -1, 1.5, True, "2", None])
def test_layer_counts(layers: int) -> None:
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        labeler_c.label_layers(bytes(32), bytes(32), 64, layers, "1.1.0")


def test_unwritable_out_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="a-file"):
        labeler_c.label_layers(bytes(32), bytes(32), 64, 1, "1.1.0", out_dir=blocker / "sub")
    with pytest.raises(OSError, match="a-file"):
        labeler_c.label_layers(bytes(32), bytes(32), 64, 1, "1.1.0", out_dir=blocker)


def test_unwritable_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SEALPOOL_PARENT_CACHE", str(blocker / "cache"))
    with pytest.raises(OSError, match="a-file"):
        labeler_c.label_layers(bytes(32), bytes([77] * 32), 64, 1, "1.1.0")


def test_unknown_sector_size_for_porep_id() -> None:
    with pytest.raises(ValueError, match="no registered seal proof for sector size 4096"):
        labeler_c.porep_id(4096, "1.1.0")
    with pytest.raises(ValueError, match="unknown api version"):
        labeler_c.porep_id(2048, "2.0.0")


def test_replica_id_arguments() -> None:
    with pytest.raises(ValueError, match="ticket must be 32 bytes, got 5"):
        labeler_c.replica_id(bytes(32), 1, bytes(5), bytes(32), bytes(32))
    with pytest.raises(ValueError, match="sector_id must be an integer"):
        labeler_c.replica_id(bytes(32), -1, bytes(32), bytes(32), bytes(32))
    with pytest.raises(ValueError, match="sector_id must be an integer"):
        labeler_c.replica_id(bytes(32), 2**64, bytes(32), bytes(32), bytes(32))


def test_c_entry_points_reject_bad_arguments_without_crashing() -> None:
    graph = ffi.new("labeler_graph *")
    assert lib.labeler_graph_init(graph, 100, bytes(32), 1) == lib.LABELER_E_ARG
    assert lib.labeler_graph_init(graph, 64, bytes(32), 7) == lib.LABELER_E_ARG
    assert lib.labeler_graph_init(ffi.NULL, 64, bytes(32), 1) == lib.LABELER_E_ARG
    assert lib.labeler_parents(graph, 0, 1, ffi.new("uint32_t[14]")) == lib.LABELER_E_ARG
    assert lib.labeler_graph_init(graph, 64, bytes(32), 1) == lib.LABELER_OK
    assert lib.labeler_parents(graph, 60, 5, ffi.new("uint32_t[70]")) == lib.LABELER_E_ARG
    args = ffi.new("labeler_layer_args *")
    assert lib.labeler_label_layer(args) == lib.LABELER_E_ARG  # NULL pointers
    assert lib.labeler_label_layer(ffi.NULL) == lib.LABELER_E_ARG
    out = ffi.new("uint8_t[32]")
    assert lib.labeler_commd(bytes(96), 96, out) == lib.LABELER_E_ARG
    assert lib.labeler_zero_commd(32, out) == lib.LABELER_E_ARG


@pytest.mark.parametrize("value", [32, None, "x" * 32, [0] * 32])
def test_ids_must_be_bytes_like(value: object) -> None:
    with pytest.raises(ValueError, match="porep_id must be 32 bytes"):
        labeler_c.parents(64, value, "1.1.0")  # type: ignore[arg-type]


def test_bytes_like_ids_and_index_integers_are_accepted() -> None:
    class Index:
        def __index__(self) -> int:
            return 64

    want = labeler_c.parents(64, bytes(32), "1.1.0")
    assert labeler_c.parents(Index(), bytearray(32), "1.1.0") == want  # type: ignore[arg-type]
    assert labeler_c.parents(64, memoryview(bytes(32)), "1.1.0") == want  # type: ignore[arg-type]
