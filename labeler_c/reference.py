"""Pure-Python SDR labeling, written from SPEC.md for readability: the test oracle.

Never used in production (it labels about 10^4 nodes per second). Every C path is
compared against it, and it is checked against the upstream vectors itself.
"""

from __future__ import annotations

import hashlib
import struct

MASK32 = 0xFFFFFFFF


def fr_safe(digest: bytes) -> bytes:
    """Clear the top two bits of byte 31, making the digest a canonical Fr repr."""
    return digest[:31] + bytes([digest[31] & 0x3F])


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---- graph seeds (SPEC §3) ----


def drg_seed(porep_id: bytes) -> bytes:
    return sha256(b"Filecoin_DRSample" + porep_id)[:28]


def feistel_keys(porep_id: bytes) -> list[int]:
    digest = sha256(b"Filecoin_Feistel" + porep_id)
    return list(struct.unpack("<4Q", digest))


# ---- ChaCha8Rng (SPEC §4) ----


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & MASK32


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & MASK32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & MASK32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & MASK32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & MASK32
    s[b] = _rotl(s[b] ^ s[c], 7)


def chacha8_words(seed: bytes, blocks: int) -> list[int]:
    """The first ``16 * blocks`` u32 outputs of ChaCha8Rng::from_seed(seed)."""
    key = list(struct.unpack("<8I", seed))
    out: list[int] = []
    for counter in range(blocks):
        state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *key, counter, 0, 0, 0]
        x = state[:]
        for _ in range(4):
            _quarter(x, 0, 4, 8, 12)
            _quarter(x, 1, 5, 9, 13)
            _quarter(x, 2, 6, 10, 14)
            _quarter(x, 3, 7, 11, 15)
            _quarter(x, 0, 5, 10, 15)
            _quarter(x, 1, 6, 11, 12)
            _quarter(x, 2, 7, 8, 13)
            _quarter(x, 3, 4, 9, 14)
        out += [(a + b) & MASK32 for a, b in zip(x, state, strict=True)]
    return out


# ---- parents (SPEC §5, §6) ----


def base_parents(v: int, seed: bytes, api_version: str) -> list[int]:
    if v < 2:
        return [0] * 6
    words = chacha8_words(seed + struct.pack("<I", v), 2)
    draws = iter(words[2 * i] | words[2 * i + 1] << 32 for i in range(10))
    m = v * 5
    n_buckets = (m - 1).bit_length()
    r = []
    for _ in range(5):
        bucket = next(draws) % n_buckets + 1
        largest = min(m, 1 << bucket)
        smallest = max(2, largest >> 1)
        dist = smallest + next(draws) % (largest - smallest + 1)
        p = (m - dist) // 5
        r.append(v - 1 if p == v else p)
    return [*r, v - 1] if api_version == "1.0.0" else [v - 1, *r]


def feistel_half_bits(nodes: int) -> int:
    h = 1
    while 4**h < 8 * nodes:
        h += 1
    return h


def _feistel_encode(x: int, keys: list[int], h: int) -> int:
    mask = (1 << h) - 1
    left, right = (x >> h) & mask, x & mask
    for key in keys[:3]:
        digest = hashlib.blake2b(struct.pack(">QQ", right, key), digest_size=64).digest()
        left, right = right, left ^ (struct.unpack(">Q", digest[:8])[0] & mask)
    return (left << h) | right


def expander_parents(v: int, nodes: int, keys: list[int], api_version: str) -> list[int]:
    h = feistel_half_bits(nodes)
    out = []
    for i in range(8):
        t = _feistel_encode(8 * v + i, keys, h)
        while t >= 8 * nodes:
            t = _feistel_encode(t, keys, h)
        out.append((t & MASK32) // 8 if api_version == "1.0.0" else t // 8)
    return out


def parents(nodes: int, porep_id: bytes, api_version: str) -> list[list[int]]:
    """The 14 parents of every node: 6 base, then 8 expander."""
    seed, keys = drg_seed(porep_id), feistel_keys(porep_id)
    return [
        base_parents(v, seed, api_version) + expander_parents(v, nodes, keys, api_version)
        for v in range(nodes)
    ]


def parent_cache_bytes(table: list[list[int]]) -> bytes:
    return b"".join(struct.pack("<14I", *row) for row in table)


# ---- labeling (SPEC §8) ----


def label_layers(
    replica_id: bytes, porep_id: bytes, nodes: int, layers: int, api_version: str
) -> list[bytes]:
    """All layers, each as N x 32 bytes."""
    table = parents(nodes, porep_id, api_version)
    out: list[bytes] = []
    prev: list[bytes] = []
    for layer in range(1, layers + 1):
        cur: list[bytes] = []
        for v in range(nodes):
            prefix = replica_id + struct.pack(">IQ", layer, v) + bytes(20)
            if v == 0:
                cur.append(fr_safe(sha256(prefix)))
                continue
            base = [cur[p] for p in table[v][:6]]
            data = base if layer == 1 else base + [prev[p] for p in table[v][6:]]
            msg = prefix + b"".join(data[k % len(data)] for k in range(37))
            cur.append(fr_safe(sha256(msg)))
        out.append(b"".join(cur))
        prev = cur
    return out


def replica_id(
    prover_id: bytes, sector_id: int, ticket: bytes, comm_d: bytes, porep_id: bytes
) -> bytes:
    return fr_safe(sha256(prover_id + struct.pack(">Q", sector_id) + ticket + comm_d + porep_id))


# ---- CommD ----


def commd(data: bytes) -> bytes:
    level = [data[i : i + 32] for i in range(0, len(data), 32)]
    while len(level) > 1:
        level = [fr_safe(sha256(level[i] + level[i + 1])) for i in range(0, len(level), 2)]
    return level[0]
