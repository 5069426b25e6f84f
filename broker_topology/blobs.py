"""Phase outputs by reference: large outputs live in Redis, messages carry a small ref.

Each accepted phase's outputs travel in every later job of the sector (`params[<phase>]`),
and a real processor's outputs can be far larger than a message may be (64 KiB). So a
worker stores outputs whose JSON exceeds `INLINE_BYTES` under `blob:<sha256>` and puts
`{"$blob": <sha256>, "bytes": <n>}` in the Result instead; the miner carries that ref in
later jobs as it is, and the worker that runs one resolves it before the executor sees
the job. Content-addressed, so a retried or duplicated write is harmless."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Final

from .errors import PermanentError

if TYPE_CHECKING:
    import redis

    from .naming import Names

#: Outputs larger than this (as JSON) go by reference.
INLINE_BYTES: Final = 8 * 1024
#: The largest outputs a phase may return; more is a permanent error of that sector.
MAX_BLOB_BYTES: Final = 64 * 1024 * 1024
#: Blobs outlive any sector that needs them (the slowest pipeline plus retries).
BLOB_TTL_S: Final = 60 * 86400
REF: Final = "$blob"


def is_ref(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {REF, "bytes"} \
        and isinstance(value[REF], str)


class Blobs:
    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.r = client
        self.names = names

    def outbound(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """`outputs` itself when small, else a reference to it (stored now)."""
        text = json.dumps(outputs, separators=(",", ":"), sort_keys=True)
        size = len(text.encode())
        if size <= INLINE_BYTES:
            return outputs
        if size > MAX_BLOB_BYTES:
            raise PermanentError(f"outputs of {size} bytes exceed the {MAX_BLOB_BYTES}-byte "
                                 "limit")
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.r.set(self.names.blob_key(digest), text, ex=BLOB_TTL_S)
        return {REF: digest, "bytes": size}

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with every top-level reference replaced by the outputs it names."""
        if not any(is_ref(v) for v in params.values()):
            return params
        resolved = dict(params)
        for key, value in params.items():
            if is_ref(value):
                text = self.r.get(self.names.blob_key(value[REF]))
                if text is None:
                    raise PermanentError(f"outputs of {key} ({value[REF][:12]}…) are gone "
                                         "from Redis; replay the sector from that phase")
                resolved[key] = json.loads(text)
        return resolved
