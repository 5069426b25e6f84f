"""CommD: the tree-d root of an unsealed, Fr32-padded sector."""

from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor

from labeler_c._errors import check
from labeler_c._ffi import ffi, lib
from labeler_c._graph import as_int, default_threads

# Inputs at least this large are split into subtrees hashed on several cores.
_PARALLEL_BYTES = 64 << 20


def _check_size(size: int, what: str) -> None:
    if size < 64 or size & (size - 1):
        raise ValueError(f"{what} must be a power of two of at least 64 bytes, got {size}")


def _root(data: memoryview) -> bytes:
    out = ffi.new("uint8_t[32]")
    with ffi.from_buffer(data) as c_data:
        check(lib.labeler_commd(c_data, data.nbytes, out), "labeler_commd")
    return bytes(out)


def _tree_root(data: memoryview) -> bytes:
    size = data.nbytes
    parts = 1
    while parts * 2 <= default_threads() and size >= _PARALLEL_BYTES * parts:
        parts *= 2
    if parts == 1:
        return _root(data)
    # Equal power-of-two subtrees; their roots are the leaves of the top of the tree.
    step = size // parts
    with ThreadPoolExecutor(parts, thread_name_prefix="labeler-commd") as pool:
        roots = list(pool.map(lambda i: _root(data[i * step : (i + 1) * step]), range(parts)))
    return _root(memoryview(b"".join(roots)))


def commd(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> bytes:
    """The 32-byte CommD of an already Fr32-padded sector, given as bytes or a file path.

    The size must be a power of two of at least 64 bytes. Files are memory-mapped.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        _check_size(data.nbytes, "sector data")
        return _tree_root(data)
    with open(source, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _check_size(size, f"sector file {os.fsdecode(source)!r}")
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m, memoryview(m) as view:
            return _tree_root(view)


def zero_commd(size: int) -> bytes:
    """CommD of ``size`` zero bytes by the zero-subtree shortcut (any size, no hashing of data)."""
    size = as_int(size, "size")
    _check_size(size, "sector size")
    out = ffi.new("uint8_t[32]")
    check(lib.labeler_zero_commd(size, out), "labeler_zero_commd")
    return bytes(out)
