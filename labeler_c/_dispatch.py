"""Which SHA-256 compression the kernel uses: chosen once, forceable, named.

``LABELER_IMPL=portable|shani|avx512|auto`` in the environment forces the choice at import;
``use_implementation()`` changes it at run time (tests use both). ``avx512`` adds the
16-lane lockstep kernel for batches to SHA-NI (or portable C) for single streams.
"""

from __future__ import annotations

import os

from labeler_c._errors import LabelerUnavailable, check
from labeler_c._ffi import ffi, lib

# Best first.
_BITS = {"avx512": lib.LABELER_IMPL_AVX512, "shani": lib.LABELER_IMPL_SHANI,
         "portable": lib.LABELER_IMPL_PORTABLE}
ENV_IMPL = "LABELER_IMPL"


def available_implementations() -> tuple[str, ...]:
    """The implementations this CPU can run, best first."""
    mask = lib.labeler_available()
    return tuple(name for name, bit in _BITS.items() if mask & bit)


def implementation() -> str:
    """The implementation in use: ``"avx512"``, ``"shani"`` or ``"portable"``."""
    return str(ffi.string(lib.labeler_implementation()).decode())


def lockstep_kernel(sectors: int) -> str:
    """The lockstep kernel a batch of ``sectors`` uses now: ``"avx512x16"``, ``"shani-x2"``
    or ``"portable"`` (the 16-lane one only for batches that fill enough of it)."""
    return str(ffi.string(lib.labeler_lanes_implementation(sectors)).decode())


def use_implementation(name: str | None = None) -> str:
    """Select ``name`` (``None`` or ``"auto"``: the best available), self-test it, return it.

    Asking for an implementation this CPU cannot run raises LabelerUnavailable; there is
    no silent fallback.
    """
    if name is None or name == "auto":
        mask = sum(_BITS.values())
    elif name in _BITS:
        mask = _BITS[name]
        if name not in available_implementations():
            raise LabelerUnavailable(f"implementation {name!r} cannot run on this CPU")
    else:
        raise ValueError(f"unknown implementation {name!r}; expected one of {sorted(_BITS)}")
    check(lib.labeler_init(mask), f"selecting implementation {name or 'auto'!r}")
    return implementation()


def init_from_env() -> str:
    """Apply ``LABELER_IMPL`` (default: auto); called once at import."""
    return use_implementation(os.environ.get(ENV_IMPL) or None)
