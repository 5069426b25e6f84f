"""cffi build of ``labeler_c._labeler`` (API mode, out of line).

setuptools execs this through ``setup.py``'s ``cffi_modules``; it imports nothing from the
project. Paths are taken relative to this file, so it works from any working directory.
Build switch: ``LABELER_DISABLE_SHANI=1`` leaves the SHA-NI path out (compilers without it).
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

_HERE = Path(__file__).resolve().parent


def _rel(path: Path) -> str:
    # setuptools wants source paths relative to the setup.py directory (the cwd).
    return os.path.relpath(path)


ffibuilder = FFI()
ffibuilder.cdef((_HERE / "_labeler.cdef").read_text())
ffibuilder.set_source(
    "labeler_c._labeler",
    '#include "labeler.h"',
    sources=[_rel(p) for p in sorted((_HERE / "src").glob("*.c"))],
    include_dirs=[_rel(_HERE / "include")],
    define_macros=[("LABELER_NO_SHANI", "1")] if os.environ.get("LABELER_DISABLE_SHANI") else [],
    extra_compile_args=["-O3", "-fvisibility=hidden", "-std=gnu11", "-Wall", "-Wextra", "-pthread"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(_HERE.parent), verbose=True)
