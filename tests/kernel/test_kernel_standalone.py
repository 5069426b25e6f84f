"""labeler_c stands alone: importing it loads no other sealpool package (nor their
dependencies), and it reads sizes with its own parser."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labeler_c._units import parse_size


def test_import_loads_no_broker_or_worker_package() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import labeler_c"],
                         capture_output=True, text=True, check=True).stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.splitlines()
               if line.startswith("import time:")}
    assert "labeler_c" in modules
    for foreign in ("broker_topology", "pool_worker", "miner_publisher", "pika", "pydantic",
                    "pydantic_settings", "tenacity", "redis"):
        assert foreign not in modules, foreign


@pytest.mark.parametrize(("text", "want"), [
    ("1000", 1000), ("64GiB", 64 << 30), ("1.5GB", 1_500_000_000), (" 512 MiB ", 512 << 20),
    ("2kib", 2048), ("3TB", 3 * 10**12), ("7b", 7)])
def test_sizes(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["12G", "1Gi", "x", "", "-5", "1e400GiB", "9" * 400, "2 EiB"])
def test_sizes_that_do_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match=r"as a size|too large"):
        parse_size(text)
