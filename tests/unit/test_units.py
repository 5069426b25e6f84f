from __future__ import annotations

import pytest

from broker_topology.units import GiB, parse_bytes, parse_duration, parse_sector_size


@pytest.mark.parametrize(("text", "size"), [("2KiB", 2048), ("8mib", 8 << 20),
                                            ("32GiB", 32 * GiB), ("68719476736", 64 * GiB)])
def test_sector_sizes(text: str, size: int) -> None:
    assert parse_sector_size(text) == size


def test_unknown_sector_size_names_the_choices() -> None:
    with pytest.raises(ValueError, match="2KiB, 8MiB"):
        parse_sector_size("3KiB")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("6h", 21600),
                                               ("2d", 172800), ("1.5", 1.5), ("250ms", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_bytes() -> None:
    assert parse_bytes("1.5GiB") == 3 * GiB // 2
    with pytest.raises(ValueError, match="size"):
        parse_bytes("lots")
