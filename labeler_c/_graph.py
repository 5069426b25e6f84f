"""The SDR graph: versions, porep ids, and parent generation (SPEC §2-§6)."""

from __future__ import annotations

import operator
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from labeler_c._errors import check
from labeler_c._ffi import ffi, lib

if TYPE_CHECKING:
    import mmap

NODE_BYTES = 32
DEGREE = 14
PARENT_ROW_BYTES = 4 * DEGREE

API_VERSIONS: dict[str, int] = {
    "1.0.0": lib.LABELER_API_1_0_0,
    "1.1.0": lib.LABELER_API_1_1_0,
    "1.2.0": lib.LABELER_API_1_2_0,
}

# Registered seal proof ids for V1 (api 1.0.0); V1_1 adds 5, V1_1_Feat_SyntheticPoRep 10,
# V1_2_Feat_NiPoRep 15 (rust-filecoin-proofs-api registry.rs).
_SECTOR_PROOF_BASE = {2 << 10: 0, 8 << 20: 1, 512 << 20: 2, 32 << 30: 3, 64 << 30: 4}
_VERSION_OFFSET = {"1.0.0": 0, "1.1.0": 5, "1.2.0": 10}
_NI_POREP_OFFSET = 15

# Rows per C call when generating: small enough to spread over threads.
_PARENTS_CHUNK = 1 << 16


def api_version_code(api_version: str) -> int:
    """The C code of an api version string ("1.0.0", "1.1.0" or "1.2.0")."""
    try:
        return API_VERSIONS[api_version]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown api version {api_version!r}; expected one of {sorted(API_VERSIONS)}"
        ) from None


def as_int(value: object, name: str) -> int:
    """An integer argument (anything with ``__index__`` but bool), or a ValueError naming it."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def check_nodes(nodes: int) -> int:
    """Nodes must be a power of two from 64 to 2^31 (node indices are u32)."""
    try:
        n = as_int(nodes, "nodes")
    except ValueError:
        n = 0
    if n < lib.LABELER_MIN_NODES or n > lib.LABELER_MAX_NODES or n & (n - 1):
        raise ValueError(f"nodes must be a power of two between 64 and 2^31, got {nodes!r}")
    return n


def check_bytes32(value: bytes, name: str) -> bytes:
    """A 32-byte value (bytes, bytearray or memoryview) as bytes, or a ValueError naming it."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(f"{name} must be 32 bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(data)}")
    return data


def registered_seal_proof(sector_size: int, api_version: str, *, ni_porep: bool = False) -> int:
    """The registered seal proof id of a sector size and api version.

    Api 1.2.0 has two proofs per size; the synthetic-PoRep one is the default,
    ``ni_porep=True`` selects the non-interactive one.
    """
    api_version_code(api_version)
    if sector_size not in _SECTOR_PROOF_BASE:
        sizes = ", ".join(str(s) for s in _SECTOR_PROOF_BASE)
        raise ValueError(f"no registered seal proof for sector size {sector_size}; known: {sizes}")
    if ni_porep and api_version != "1.2.0":
        raise ValueError(f"NI-PoRep proofs use api version 1.2.0, not {api_version}")
    offset = _NI_POREP_OFFSET if ni_porep else _VERSION_OFFSET[api_version]
    return _SECTOR_PROOF_BASE[sector_size] + offset


def porep_id(sector_size: int, api_version: str, *, ni_porep: bool = False) -> bytes:
    """``LE64(registered proof id) || LE64(nonce = 0) || 16 zero bytes`` (SPEC §2)."""
    proof = registered_seal_proof(sector_size, api_version, ni_porep=ni_porep)
    return proof.to_bytes(8, "little") + bytes(24)


def is_legacy_porep_id(porep: bytes) -> bool:
    """True for proof ids 0-4, whose production graphs are built with api 1.0.0."""
    return int.from_bytes(porep[:8], "little") <= 4


class Graph:
    """A graph's seeds and keys, derived once in C from the porep id."""

    def __init__(self, nodes: int, porep: bytes, api_version: str) -> None:
        self.nodes = check_nodes(nodes)
        self.porep_id = check_bytes32(porep, "porep_id")
        self.api_version = api_version
        self._g = ffi.new("labeler_graph *")
        code = api_version_code(api_version)
        rc = lib.labeler_graph_init(self._g, self.nodes, self.porep_id, code)
        check(rc, "labeler_graph_init")

    @property
    def feistel_keys(self) -> tuple[int, int, int, int]:
        k = self._g.feistel_keys
        return (int(k[0]), int(k[1]), int(k[2]), int(k[3]))

    @property
    def legacy_graph(self) -> bool:
        """Built the 1.0.0 way (predecessor last, truncating expander)."""
        return self.api_version == "1.0.0"

    def fill_parents(self, out: bytearray | mmap.mmap, threads: int | None = None) -> None:
        """Write all N x 14 LE u32 parent rows into ``out`` (writable, N x 56 bytes).

        The C calls release the GIL, so chunks run on ``threads`` cores in parallel.
        """
        view = memoryview(out)
        if view.nbytes != self.nodes * PARENT_ROW_BYTES:
            raise ValueError(
                f"parent buffer has {view.nbytes} bytes, expected {self.nodes * PARENT_ROW_BYTES}"
            )
        rows = ffi.from_buffer("uint32_t[]", out, require_writable=True)

        def fill(start: int) -> None:
            count = min(_PARENTS_CHUNK, self.nodes - start)
            rc = lib.labeler_parents(self._g, start, count, rows + start * DEGREE)
            check(rc, "labeler_parents")

        starts = range(0, self.nodes, _PARENTS_CHUNK)
        workers = min(threads or default_threads(), len(starts))
        try:
            if workers <= 1:
                for start in starts:
                    fill(start)
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="labeler-parents") as pool:
                    list(pool.map(fill, starts))
        finally:
            ffi.release(rows)


def default_threads() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def parents(nodes: int, porep_id: bytes, api_version: str) -> bytes:
    """The parent cache content, computed in memory: N x 14 LE u32, base then expander."""
    graph = Graph(nodes, porep_id, api_version)
    out = bytearray(graph.nodes * PARENT_ROW_BYTES)
    graph.fill_parents(out)
    return bytes(out)
