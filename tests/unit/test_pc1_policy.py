"""When the pc1 executor adds a parent-gathering thread to a sector."""

from __future__ import annotations

from pathlib import Path

import pytest

from pool_worker.executors.base import ExecContext
from pool_worker.executors.labeler import PRODUCER_MIN_BYTES, Pc1Executor

BIG, SMALL = 512 << 20, 2 << 10


def ctx(cores: tuple[int, ...] = ()) -> ExecContext:
    return ExecContext(workdir=Path("/nonexistent"), sealed_dir=Path("/nonexistent"),
                       worker="w", slot=0, cores=cores)


def test_small_sectors_fit_the_caches_and_get_no_producer() -> None:
    assert SMALL < PRODUCER_MIN_BYTES
    assert not Pc1Executor().use_producer(SMALL, ctx((0, 1)))


def test_pinned_slot_needs_a_second_core() -> None:
    assert Pc1Executor().use_producer(BIG, ctx((0, 1)))
    assert not Pc1Executor().use_producer(BIG, ctx((3,)))


@pytest.mark.parametrize(("cpus", "slots", "want"), [(2, 1, True), (2, 2, False), (8, 4, True)])
def test_unpinned_slots_need_two_cores_each(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                            slots: int, want: bool) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert Pc1Executor(slots=slots).use_producer(BIG, ctx()) is want


@pytest.mark.parametrize(("text", "mode"), [("always [madvise] never\n", "madvise"),
                                            ("always madvise [never]\n", "never"),
                                            ("garbage\n", None)])
def test_huge_page_mode_is_read_from_the_kernel_setting(tmp_path: Path, text: str,
                                                        mode: str | None) -> None:
    from labeler_c import huge_page_mode

    setting = tmp_path / "enabled"
    setting.write_text(text)
    assert huge_page_mode(str(setting)) == mode
    assert huge_page_mode(str(tmp_path / "missing")) is None


def test_worker_warns_when_huge_pages_are_off(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("labeler_c.huge_page_mode", lambda: "never")
    Pc1Executor().check_pages()
    assert "transparent huge pages are off" in caplog.text
    caplog.clear()
    monkeypatch.setattr("labeler_c.huge_page_mode", lambda: "madvise")
    Pc1Executor().check_pages()
    assert caplog.text == ""
