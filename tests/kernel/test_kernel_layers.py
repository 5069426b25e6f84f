"""Layer files: names, contents, resume after a crash, and progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c import _label

if TYPE_CHECKING:
    from pathlib import Path

REPLICA, POREP, NODES, API = bytes([1] * 32), bytes([2] * 32), 256, "1.1.0"
LAYER_BYTES = NODES * 32


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("sc-02-data-layer-*.dat"))}


def test_every_layer_is_written_under_upstream_names(tmp_path: Path) -> None:
    last = labeler_c.label_layers(REPLICA, POREP, NODES, 4, API, out_dir=tmp_path)
    written = files(tmp_path)
    assert list(written) == [f"sc-02-data-layer-{layer}.dat" for layer in (1, 2, 3, 4)]
    assert all(len(data) == LAYER_BYTES for data in written.values())
    assert written["sc-02-data-layer-4.dat"] == last
    assert not list(tmp_path.glob("*.partial"))


def test_out_dir_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    labeler_c.label_layers(REPLICA, POREP, NODES, 1, API, out_dir=str(out))
    assert (out / "sc-02-data-layer-1.dat").stat().st_size == LAYER_BYTES


def test_finished_layers_are_not_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = labeler_c.label_layers(REPLICA, POREP, NODES, 4, API, out_dir=tmp_path)
    reference_files = files(tmp_path)
    # Crash while layer 3 was being written: layer 3 half-done, layer 4 never started.
    (tmp_path / "sc-02-data-layer-4.dat").unlink()
    (tmp_path / "sc-02-data-layer-3.dat").rename(tmp_path / "sc-02-data-layer-3.dat.partial")
    kept = {
        n: (tmp_path / n).stat().st_ino
        for n in ("sc-02-data-layer-1.dat", "sc-02-data-layer-2.dat")
    }

    computed: list[int] = []
    real = _label._label_layer

    def spy(*args: object, **kwargs: object) -> None:
        computed.append(args[3])  # type: ignore[arg-type]
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_label, "_label_layer", spy)
    assert labeler_c.label_layers(REPLICA, POREP, NODES, 4, API, out_dir=tmp_path) == want
    assert computed == [3, 4]
    assert files(tmp_path) == reference_files
    assert {n: (tmp_path / n).stat().st_ino for n in kept} == kept

    computed.clear()  # everything finished: nothing is hashed, the last layer is read back
    assert labeler_c.label_layers(REPLICA, POREP, NODES, 4, API, out_dir=tmp_path) == want
    assert (
        labeler_c.label_layers(REPLICA, POREP, NODES, 2, API, out_dir=tmp_path)
        == (reference_files["sc-02-data-layer-2.dat"])
    )
    assert computed == []


def test_truncated_layer_is_recomputed(tmp_path: Path) -> None:
    want = labeler_c.label_layers(REPLICA, POREP, NODES, 2, API, out_dir=tmp_path)
    with open(tmp_path / "sc-02-data-layer-2.dat", "r+b") as f:
        f.truncate(100)
    assert labeler_c.label_layers(REPLICA, POREP, NODES, 2, API, out_dir=tmp_path) == want
    assert (tmp_path / "sc-02-data-layer-2.dat").read_bytes() == want


def test_layers_of_other_inputs_are_never_resumed_from(tmp_path: Path) -> None:
    labeler_c.label_layers(REPLICA, POREP, NODES, 3, API, out_dir=tmp_path)
    other = bytes([9] * 32)
    want = labeler_c.label_layers(other, POREP, NODES, 2, API)
    assert labeler_c.label_layers(other, POREP, NODES, 2, API, out_dir=tmp_path) == want
    # The stale third layer of the first replica is gone, not left to be trusted later.
    assert sorted(files(tmp_path)) == ["sc-02-data-layer-1.dat", "sc-02-data-layer-2.dat"]


def test_progress_reports_each_layer_to_the_end() -> None:
    seen: list[tuple[int, int]] = []
    labeler_c.label_layers(
        REPLICA, POREP, NODES, 2, API, progress=lambda layer, done: seen.append((layer, done))
    )
    assert seen == [(1, NODES), (2, NODES)]


def test_label_sector_writes_files_and_returns_their_paths(tmp_path: Path) -> None:
    paths = labeler_c.label_sector(REPLICA, POREP, NODES, 3, API, tmp_path)
    assert paths == [tmp_path / f"sc-02-data-layer-{layer}.dat" for layer in (1, 2, 3)]
    assert paths[-1].read_bytes() == labeler_c.label_layers(REPLICA, POREP, NODES, 3, API)
    assert labeler_c.label_sector(REPLICA, POREP, NODES, 3, API, tmp_path) == paths  # resumed
