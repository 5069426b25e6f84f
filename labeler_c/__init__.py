"""labeler_c: bit-exact Filecoin SDR labeling (PC1) in C, behind a small typed API.

The C kernel hashes with SHA-NI when the CPU has it (chosen once at import, self-tested),
otherwise with portable C; ``LABELER_IMPL=portable|shani`` or ``use_implementation()``
forces one. Long C calls release the GIL.
"""

from __future__ import annotations

from labeler_c._cache import (
    ParentCache,
    cache_dir,
    ensure_parent_cache,
    parent_cache_path,
)
from labeler_c._commd import commd, zero_commd
from labeler_c._dispatch import (
    available_implementations,
    implementation,
    init_from_env,
    use_implementation,
)
from labeler_c._errors import (
    CorruptParentCache,
    LabelerError,
    LabelerUnavailable,
    SelfTestFailed,
)
from labeler_c._graph import API_VERSIONS, parents, porep_id, registered_seal_proof
from labeler_c._label import (
    label_batch,
    label_layers,
    label_sector,
    layer_file_name,
    replica_id,
)
from labeler_c._pool import (
    LayerPool,
    PoolWaitCancelled,
    huge_page_mode,
    pool_capacity,
    pool_size_from_env,
    pool_sizes,
)

__all__ = [
    "API_VERSIONS",
    "CorruptParentCache",
    "LabelerError",
    "LabelerUnavailable",
    "LayerPool",
    "ParentCache",
    "PoolWaitCancelled",
    "SelfTestFailed",
    "available_implementations",
    "cache_dir",
    "commd",
    "ensure_parent_cache",
    "huge_page_mode",
    "implementation",
    "label_batch",
    "label_layers",
    "label_sector",
    "layer_file_name",
    "parent_cache_path",
    "parents",
    "pool_capacity",
    "pool_size_from_env",
    "pool_sizes",
    "porep_id",
    "registered_seal_proof",
    "replica_id",
    "use_implementation",
    "zero_commd",
]

init_from_env()
