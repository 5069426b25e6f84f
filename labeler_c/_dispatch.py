"""Which SHA-256 compression the kernel uses: chosen once, forceable, named.

``LABELER_IMPL=portable|shani|auto`` in the environment forces the choice at import;
``use_implementation()`` changes it at run time (tests use both).
"""

from __future__ import annotations

import os

from labeler_c._errors import LabelerUnavailable, check
from labeler_c._ffi import ffi, lib

_BITS = {"shani": lib.LABELER_IMPL_SHANI, "portable": lib.LABELER_IMPL_PORTABLE}
ENV_IMPL = "LABELER_IMPL"


def available_implementations() -> tuple[str, ...]:
    """The implementations this CPU can run, best first."""
    mask = lib.labeler_available()
    return tuple(name for name, bit in _BITS.items() if mask & bit)


def implementation() -> str:
    """The implementation in use: ``"shani"`` or ``"portable"``."""
    return str(ffi.string(lib.labeler_implementation()).decode())


def use_implementation(name: str | None = None) -> str:
    """Select ``name`` (``None`` or ``"auto"``: the best available), self-test it, return it.

    Asking for an implementation this CPU cannot run raises LabelerUnavailable; there is
    no silent fallback.
    """
    if name is None or name == "auto":
        mask = lib.LABELER_IMPL_SHANI | lib.LABELER_IMPL_PORTABLE
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
