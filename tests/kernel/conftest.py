"""Kernel test fixtures: a private parent-cache directory and one run per implementation."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import labeler_c
from labeler_c._cache import ENV_CACHE_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

IMPLEMENTATIONS = labeler_c.available_implementations()


@pytest.fixture(scope="session", autouse=True)
def parent_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test generates parent caches here, never in the machine's real cache."""
    path = tmp_path_factory.mktemp("parent-cache")
    old = os.environ.get(ENV_CACHE_DIR)
    os.environ[ENV_CACHE_DIR] = str(path)
    yield path
    if old is None:
        del os.environ[ENV_CACHE_DIR]
    else:
        os.environ[ENV_CACHE_DIR] = old


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Force each implementation this CPU has; restore the previous choice afterwards."""
    before = labeler_c.implementation()
    assert labeler_c.use_implementation(request.param) == request.param
    yield request.param
    labeler_c.use_implementation(before)
