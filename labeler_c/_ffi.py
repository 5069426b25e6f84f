"""The compiled module, or an ImportError that says how to build it."""

from __future__ import annotations

try:
    from labeler_c._labeler import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "labeler_c's C extension (labeler_c._labeler) is not built. Build it from the "
        "repository root with `pip install -e . --no-build-isolation` (or "
        "`python setup.py build_ext --inplace`); it needs a C compiler and cffi."
    ) from exc

__all__ = ["ffi", "lib"]
