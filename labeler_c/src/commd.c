/*
 * CommD: the root of the binary SHA-256 tree over an unsealed sector's 32-byte nodes, each
 * parent Fr-safe truncated, as Filecoin's tree-d. Hashed chunk by chunk so the scratch space
 * stays small whatever the sector size.
 */
#include <stdlib.h>
#include <string.h>

#include "labeler_internal.h"

#define CHUNK_BYTES (1u << 20)

static inline void hash_pair(labeler_compress_fn f, const uint8_t *left, const uint8_t *right,
                             uint8_t out[32]) {
    const uint8_t *pieces[4] = {left, right, labeler_pad_64, labeler_pad_64 + 32};
    uint32_t st[8];
    memcpy(st, labeler_sha256_iv, sizeof st);
    f(st, pieces, 2);
    labeler_state_bytes(st, out, 1);
}

static int pow2_at_least_64(uint64_t len) { return len >= 64 && !(len & (len - 1)); }

/* n parents from 2n nodes (in place allowed: parent i is written after nodes 2i, 2i+1 are
 * read), two at a time through the 2-stream compression. */
static void hash_level(labeler_compress_fn f, labeler_compress2_fn f2, const uint8_t *nodes,
                       uint64_t n, uint8_t *out) {
    uint64_t i = 0;
    for (; i + 1 < n; i += 2) {
        const uint8_t *a = nodes + 64 * i, *b = a + 64;
        const uint8_t *pa[4] = {a, a + 32, labeler_pad_64, labeler_pad_64 + 32};
        const uint8_t *pb[4] = {b, b + 32, labeler_pad_64, labeler_pad_64 + 32};
        uint32_t sa[8], sb[8];
        memcpy(sa, labeler_sha256_iv, sizeof sa);
        memcpy(sb, labeler_sha256_iv, sizeof sb);
        f2(sa, sb, pa, pb, 2);
        labeler_state_bytes(sa, out + 32 * i, 1);
        labeler_state_bytes(sb, out + 32 * (i + 1), 1);
    }
    if (i < n) hash_pair(f, nodes + 64 * i, nodes + 64 * i + 32, out + 32 * i);
}

/* Root over len bytes (a power of two >= 64); scratch holds len / 2 bytes. */
static void subtree_root(labeler_compress_fn f, labeler_compress2_fn f2, const uint8_t *data,
                         uint64_t len, uint8_t *scratch, uint8_t out[32]) {
    hash_level(f, f2, data, len / 64, scratch);
    for (uint64_t n = len / 128; n >= 1; n /= 2) hash_level(f, f2, scratch, n, scratch);
    memcpy(out, scratch, 32);
}

int labeler_commd(const uint8_t *data, uint64_t len, uint8_t out[32]) {
    if (!data || !out || !pow2_at_least_64(len)) return LABELER_E_ARG;
    const labeler_compress_fn f = labeler_compress_current();
    const labeler_compress2_fn f2 = labeler_compress2_current();
    const uint64_t chunk = len < CHUNK_BYTES ? len : CHUNK_BYTES;
    uint8_t *scratch = malloc(chunk / 2);
    if (!scratch) return LABELER_E_NOMEM;

    /* Chunk roots merge pairwise like a binary counter: stack[i] is one level above stack[i-1]. */
    uint8_t stack[64][32];
    uint64_t count[64];
    int top = 0;
    for (uint64_t off = 0; off < len; off += chunk) {
        subtree_root(f, f2, data + off, chunk, scratch, stack[top]);
        count[top++] = 1;
        while (top >= 2 && count[top - 1] == count[top - 2]) {
            hash_pair(f, stack[top - 2], stack[top - 1], stack[top - 2]);
            count[top - 2] *= 2;
            top--;
        }
    }
    free(scratch);
    memcpy(out, stack[0], 32);
    return LABELER_OK;
}

int labeler_zero_commd(uint64_t len, uint8_t out[32]) {
    if (!out || !pow2_at_least_64(len)) return LABELER_E_ARG;
    const labeler_compress_fn f = labeler_compress_current();
    uint8_t z[32] = {0};
    /* Every node of a level of a zero tree is the same: z_{k+1} = H(z_k || z_k). */
    for (uint64_t n = len / 32; n > 1; n /= 2) hash_pair(f, z, z, z);
    memcpy(out, z, 32);
    return LABELER_OK;
}
