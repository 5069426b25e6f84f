"""SHA-256 dispatch: every implementation against hashlib, forcing, and naming."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labeler_c
from labeler_c import _dispatch
from labeler_c._ffi import ffi, lib


def c_sha256(data: bytes) -> bytes:
    out = ffi.new("uint8_t[32]")
    lib.labeler_sha256(data, len(data), out)
    return bytes(out)


@pytest.mark.parametrize("length", [0, 1, 3, 55, 56, 63, 64, 65, 119, 120, 128, 1248, 100_003])
def test_matches_hashlib_at_block_boundaries(impl: str, length: int) -> None:
    data = bytes((7 * i + 1) & 0xFF for i in range(length))
    assert c_sha256(data) == hashlib.sha256(data).digest()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_matches_hashlib_on_random_messages(data: bytes) -> None:
    for name in labeler_c.available_implementations():
        labeler_c.use_implementation(name)
        assert c_sha256(data) == hashlib.sha256(data).digest(), name
    labeler_c.use_implementation()


def test_forcing_reports_the_forced_name(impl: str) -> None:
    assert labeler_c.implementation() == impl


def test_portable_is_always_available() -> None:
    assert "portable" in labeler_c.available_implementations()


def test_auto_picks_the_best_available() -> None:
    assert labeler_c.use_implementation() == labeler_c.available_implementations()[0]
    assert labeler_c.use_implementation("auto") == labeler_c.available_implementations()[0]


def test_unknown_implementation_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown implementation 'avx9'"):
        labeler_c.use_implementation("avx9")


def test_unavailable_implementation_is_refused_not_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pretend the CPU has no SHA extensions: asking for them must fail, not fall back.
    monkeypatch.setattr(_dispatch, "available_implementations", lambda: ("portable",))
    before = labeler_c.implementation()
    with pytest.raises(labeler_c.LabelerUnavailable, match="shani"):
        labeler_c.use_implementation("shani")
    assert labeler_c.implementation() == before


def test_c_refuses_an_empty_allow_mask() -> None:
    assert lib.labeler_init(0) == lib.LABELER_E_UNAVAILABLE


@pytest.mark.parametrize("name", labeler_c.available_implementations())
def test_environment_variable_forces_the_implementation(name: str) -> None:
    env = {**os.environ, "LABELER_IMPL": name}
    out = subprocess.run(
        [sys.executable, "-c", "import labeler_c; print(labeler_c.implementation())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == name


def test_environment_variable_with_unknown_name_fails_at_import() -> None:
    env = {**os.environ, "LABELER_IMPL": "fastest"}
    out = subprocess.run(
        [sys.executable, "-c", "import labeler_c"], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "unknown implementation 'fastest'" in out.stderr
