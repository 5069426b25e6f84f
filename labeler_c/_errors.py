"""Exceptions, and the one place where C return codes become them.

Exception
├── ValueError            bad argument (lengths, node counts, api versions, cache sizes,
│                         a pool job handed to a pool that did not admit it)
├── OSError               files: unwritable out_dir, unreadable cache or sector
├── MemoryError           the C side could not allocate
└── RuntimeError
    └── LabelerError                the C kernel failed
        ├── LabelerUnavailable      the requested implementation cannot run here
        ├── SelfTestFailed          an implementation gave a wrong known answer
        └── CorruptParentCache      a parent index was out of range
"""

from __future__ import annotations

from labeler_c._ffi import lib


class LabelerError(RuntimeError):
    """The C kernel reported a failure."""


class LabelerUnavailable(LabelerError):
    """The requested SHA-256 implementation cannot run on this CPU (no silent fallback)."""


class SelfTestFailed(LabelerError):
    """An implementation failed its known-answer test, so it was not selected."""


class CorruptParentCache(LabelerError):
    """The parent cache holds a parent index out of range for its node."""


def check(rc: int, what: str) -> None:
    """Raise the exception for a LABELER_E_* code; ``what`` says which call failed."""
    if rc >= 0:
        return
    if rc == lib.LABELER_E_ARG:
        raise ValueError(f"{what}: invalid argument")
    if rc == lib.LABELER_E_UNAVAILABLE:
        raise LabelerUnavailable(f"{what}: no allowed implementation runs on this CPU")
    if rc == lib.LABELER_E_SELFTEST:
        raise SelfTestFailed(f"{what}: the implementation failed its self-test")
    if rc == lib.LABELER_E_CORRUPT:
        raise CorruptParentCache(f"{what}: parent index out of range (corrupt parent cache)")
    if rc == lib.LABELER_E_FOREIGN:
        raise ValueError(f"{what}: the job belongs to another layer pool")
    if rc == lib.LABELER_E_NOMEM:
        raise MemoryError(f"{what}: out of memory")
    raise LabelerError(f"{what}: unknown error code {rc}")
