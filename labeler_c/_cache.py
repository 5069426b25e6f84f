"""The parent cache on disk: upstream's file format and name, generated once, verified.

File: ``<dir>/v28-sdr-parent-<hex>.cache`` (SPEC §7) holding N x 14 LE u32. ``<dir>`` is
``$SEALPOOL_PARENT_CACHE`` or ``/var/tmp/sealpool-parents``. A file is trusted after its
size and its SHA-256 match: the published digest for production graphs (upstream's
``parent_cache.json``), otherwise the ``.sha256`` file written beside it at generation. A
missing, truncated or corrupt file is regenerated under an exclusive lock and atomically
renamed into place, so concurrent processes never see a partial file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from labeler_c._errors import LabelerError
from labeler_c._ffi import ffi, lib
from labeler_c._graph import PARENT_ROW_BYTES, Graph, check_nodes, is_legacy_porep_id

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

ENV_CACHE_DIR = "SEALPOOL_PARENT_CACHE"
DEFAULT_CACHE_DIR = Path("/var/tmp/sealpool-parents")
_PARAMETER_CACHE_VERSION = 28

# rust-fil-proofs storage-proofs-porep/parent_cache.json: file stem -> SHA-256 of the file.
# Proof ids 0-4 were generated with api 1.0.0, 5-9 with 1.1.0.
PUBLISHED_DIGESTS = {
    "v28-sdr-parent-3f0eef38bb48af1f48ad65e14eb85b4ebfc167cec18cd81764f6d998836c9899": (
        "3da49221e2ed55371b86d0bf3d6526fcf128af61bed904f966428db1b531750d"
    ),
    "v28-sdr-parent-494d91dc80f2df5272c4b9e129bc7ade9405225993af9fe34e6542a39a47554b": (
        "840057702eea7652cf97e04306c30fe57174714d90de156a25eddd6075c25b97"
    ),
    "v28-sdr-parent-dcdabb0fbe4364bf0ac28b6a18c66de246409fa1a9020a00f33fb3e3053da6dc": (
        "a76604f2f59f2744c7151653bbb1d8596b6b57d295e6fa6c1f0c41d725b502ce"
    ),
    "v28-sdr-parent-5eed212119fd91aa6220a27f31a8966444a9381842bceb3a1ea61525bd47a5b5": (
        "03cd13565ded97c240a5f52e54295ad127bd0461b57904cb3a4d79b097bbecab"
    ),
    "v28-sdr-parent-7ba215a1d2345774ab90b8cb1158d296e409d6068819d7b8c7baf0b25d63dc34": (
        "b5877d1963793efebc261fd8fde4dd6bc59e6b5c7abf52617a4ee023b8dc173a"
    ),
    "v28-sdr-parent-2aa9c77c3e58259481351cc4be2079cc71e1c9af39700866545c043bfa30fb42": (
        "3adcc092423aa76d6a7184016893406da44dd974b219a89cd3ece25e4e3018f5"
    ),
    "v28-sdr-parent-21981246c370f9d76c7a77ab273d94bde0ceb4e938292334960bce05585dc117": (
        "93deeac5e3052b6927467d4b2641bb782f05491de18d510147c93eeedd8672da"
    ),
    "v28-sdr-parent-e1fa5d5b811ddbd118be3412c4a8c329156b8b8acc72632bca459455b5a05a13": (
        "3c4f9841fcc75aed8c695800e58d08480629f25af3a2aefd81904181d75cc0b6"
    ),
    "v28-sdr-parent-4905486b7af19558ac3649bc6261411858b6add534438878c4ee3b29d8b9de0b": (
        "2698b74eb2606b55b98d8b095e18b6320b47f46e00075956d48640ccd1641b03"
    ),
    "v28-sdr-parent-8a99e8d6b6be7ab87a56b632e6739ff201c23ea14e99737c74690f0e265574d6": (
        "2778a732ad46a7dc18e0564dfdf59fd321dcde74ab476fd6d3c4e6735d7cd89c"
    ),
}

# (path, inode, size, mtime_ns) of files this process has hashed and found good.
_verified: set[tuple[str, int, int, int]] = set()
_verified_lock = threading.Lock()


def cache_dir() -> Path:
    """Where parent caches live: ``$SEALPOOL_PARENT_CACHE`` or /var/tmp/sealpool-parents."""
    return Path(os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR)


def cache_stem(graph: Graph) -> str:
    """Upstream's name: SHA-256 over hasher name, graph identifier, Feistel keys and N.

    Upstream's name does not include the api version; a graph built with the version its
    porep id does not imply (a test combination) gets a suffix so the two never share a file.
    """
    identifier = (
        "stacked_graph::StackedGraph{expansion_degree: 8 base_graph: "
        f"drgraph::BucketGraph{{size: {graph.nodes}; degree: 6; hasher: poseidon_hasher}} }}"
    )
    h = hashlib.sha256(b"poseidon_hasher" + identifier.encode())
    for key in graph.feistel_keys:
        h.update(key.to_bytes(8, "little"))
    h.update(graph.nodes.to_bytes(4, "little"))
    stem = f"v{_PARAMETER_CACHE_VERSION}-sdr-parent-{h.hexdigest()}"
    if graph.legacy_graph != is_legacy_porep_id(graph.porep_id):
        stem += f"-api{graph.api_version}"
    return stem


def parent_cache_path(
    nodes: int, porep_id: bytes, api_version: str, directory: str | os.PathLike[str] | None = None
) -> Path:
    """The cache file a graph uses (it may not exist yet)."""
    graph = Graph(nodes, porep_id, api_version)
    return Path(directory or cache_dir()) / f"{cache_stem(graph)}.cache"


class ParentCache:
    """A parent cache file memory-mapped read-only; checks only the size."""

    def __init__(self, path: str | os.PathLike[str], nodes: int) -> None:
        self.path = Path(path)
        self.nodes = nodes = check_nodes(nodes)
        expected = nodes * PARENT_ROW_BYTES
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != expected:
                raise ValueError(
                    f"parent cache {self.path} has {size} bytes, expected {expected} "
                    f"({nodes} nodes x {PARENT_ROW_BYTES})"
                )
            self._map = mmap.mmap(f.fileno(), expected, access=mmap.ACCESS_READ)
        self.rows = ffi.from_buffer("uint32_t[]", self._map)

    def close(self) -> None:
        ffi.release(self.rows)
        self._map.close()

    def __enter__(self) -> ParentCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, hashed in C (SHA-NI when chosen) with the GIL released."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m:
            out = ffi.new("uint8_t[32]")
            with ffi.from_buffer(m) as data:
                lib.labeler_sha256(data, size, out)
    return bytes(out).hex()


def _identity(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _expected_digest(path: Path) -> str | None:
    published = PUBLISHED_DIGESTS.get(path.stem)
    if published is not None:
        return published
    try:
        return path.with_name(path.name + ".sha256").read_text().strip()
    except FileNotFoundError:
        return None


def _is_valid(path: Path, graph: Graph) -> bool:
    try:
        identity = _identity(path)
    except FileNotFoundError:
        return False
    if identity[2] != graph.nodes * PARENT_ROW_BYTES:
        return False
    with _verified_lock:
        if identity in _verified:
            return True
    expected = _expected_digest(path)
    if expected is None or sha256_file(path) != expected:
        return False
    with _verified_lock:
        _verified.add(identity)
    return True


def forget(path: Path) -> None:
    """Drop a file from the verified set, so its next use hashes it again."""
    with _verified_lock:
        _verified.difference_update({k for k in _verified if k[0] == str(path)})


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Serialise generation of one file across processes and threads (flock per open)."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _replace_durably(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _generate(path: Path, graph: Graph) -> None:
    size = graph.nodes * PARENT_ROW_BYTES
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    try:
        with open(tmp, "w+b") as f:
            f.truncate(size)
            with mmap.mmap(f.fileno(), size) as m:
                graph.fill_parents(m)
                m.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        published = PUBLISHED_DIGESTS.get(path.stem)
        if published is not None and digest != published:
            raise LabelerError(
                f"generated parent cache {path.name} has digest {digest}, but upstream "
                f"publishes {published}: the graph code is wrong"
            )
        sidecar = path.with_name(path.name + ".sha256")
        sidecar_tmp = tmp.with_name(tmp.name + ".sha256")
        sidecar_tmp.write_text(digest + "\n")
        _replace_durably(sidecar_tmp, sidecar)
        _replace_durably(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".sha256")):
            leftover.unlink(missing_ok=True)
    with _verified_lock:
        _verified.add(_identity(path))


def ensure_parent_cache(
    nodes: int, porep_id: bytes, api_version: str, directory: str | os.PathLike[str] | None = None
) -> Path:
    """Path of a verified cache file for this graph, generating it if missing or bad."""
    graph = Graph(nodes, porep_id, api_version)
    path = Path(directory or cache_dir()) / f"{cache_stem(graph)}.cache"
    if _is_valid(path, graph):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path):
        if not _is_valid(path, graph):  # another process may have generated it meanwhile
            _generate(path, graph)
    return path
