/* Shared between the C sources only; not part of the API. */
#ifndef LABELER_INTERNAL_H
#define LABELER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "labeler.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the parent cache is little-endian u32 and is memory-mapped as is"
#endif

#if (defined(__x86_64__) || defined(__i386__)) && !defined(LABELER_NO_SHANI)
#define LABELER_HAVE_SHANI 1
#endif
#if defined(__x86_64__) && !defined(LABELER_NO_AVX512)
#define LABELER_HAVE_AVX512 1
#endif

/* Lanes of one lockstep compression call; wider batches take several calls. */
#define LABELER_LANES 16

/*
 * SHA-256 compression over nblocks blocks, each given as two 32-byte pieces
 * (pieces[2i], pieces[2i+1]), the way rust-fil-proofs' sha2raw takes them: labels are
 * hashed where they lie, with no copy into a message buffer.
 */
typedef void (*labeler_compress_fn)(uint32_t state[8], const uint8_t *const *pieces,
                                    size_t nblocks);

/* Two independent compressions at once, each over its own pieces (same block count). */
typedef void (*labeler_compress2_fn)(uint32_t state_a[8], uint32_t state_b[8],
                                     const uint8_t *const *pieces_a,
                                     const uint8_t *const *pieces_b, size_t nblocks);

/*
 * Lockstep compression of `lanes` (1..16) independent streams over nblocks blocks. state is
 * word-major (state[w][lane]); each block is two node-interleaved pieces of 8 words, word w
 * of lane s at piece[w * stride + s], as big-endian-decoded values (no byte swap).
 */
typedef void (*labeler_lanes_fn)(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                                 uint32_t stride, uint32_t lanes, size_t nblocks);

extern const uint32_t labeler_sha256_iv[8];
extern const uint32_t labeler_sha256_k[64];
/* The padding block of any 64-byte message: 0x80, zeros, bit length 512. */
extern const uint8_t labeler_pad_64[64];

void labeler_compress_portable(uint32_t state[8], const uint8_t *const *pieces, size_t nblocks);
void labeler_compress2_portable(uint32_t state_a[8], uint32_t state_b[8],
                                const uint8_t *const *pieces_a, const uint8_t *const *pieces_b,
                                size_t nblocks);
void labeler_lanes_portable(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                            uint32_t stride, uint32_t lanes, size_t nblocks);
#ifdef LABELER_HAVE_AVX512
void labeler_lanes_avx512(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                          uint32_t stride, uint32_t lanes, size_t nblocks);
#endif
#ifdef LABELER_HAVE_SHANI
void labeler_lanes_shani(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                         uint32_t stride, uint32_t lanes, size_t nblocks);
void labeler_compress_shani(uint32_t state[8], const uint8_t *const *pieces, size_t nblocks);
void labeler_compress2_shani(uint32_t state_a[8], uint32_t state_b[8],
                             const uint8_t *const *pieces_a, const uint8_t *const *pieces_b,
                             size_t nblocks);
#endif

/* The implementation chosen by labeler_init (portable until then). */
labeler_compress_fn labeler_compress_current(void);
labeler_compress2_fn labeler_compress2_current(void);
/* The lockstep kernel for a batch of n sectors: the wide one only when n fills it enough. */
labeler_lanes_fn labeler_lanes_for(uint32_t n);

/* Final state to digest bytes; fr_safe clears the top two bits of byte 31 (SPEC §1). */
void labeler_state_bytes(const uint32_t state[8], uint8_t out[32], int fr_safe);

static inline uint32_t labeler_load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void labeler_store_be32(uint8_t *p, uint32_t x) {
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

static inline void labeler_store_be64(uint8_t *p, uint64_t x) {
    labeler_store_be32(p, (uint32_t)(x >> 32));
    labeler_store_be32(p + 4, (uint32_t)x);
}

/* Where node v of a layer lives in its block table (labeler.h, labeler_sector). */
typedef struct {
    uint32_t shift;
    uint64_t mask;
} labeler_layout;

static inline labeler_layout labeler_layout_of(const labeler_layer_args *a) {
    labeler_layout l = {a->block_shift, (1ULL << a->block_shift) - 1};
    return l;
}

static inline uint8_t *labeler_node_at(uint8_t *const *blocks, labeler_layout l, uint64_t v) {
    return blocks[v >> l.shift] + LABELER_NODE_BYTES * (v & l.mask);
}

static inline const uint8_t *labeler_prev_at(const uint8_t *const *blocks, labeler_layout l,
                                             uint64_t v) {
    return blocks[v >> l.shift] + LABELER_NODE_BYTES * (v & l.mask);
}

/* Label node v of every sector of a batch from its parents' labels: parents holds
 * nsectors rows of LABELER_DEGREE pointers (the first `degree` used). first: NULL, or
 * per sector the state after the message's first block (replica_id || layer || v). */
void labeler_hash_node(const labeler_layer_args *a, uint64_t v, int degree,
                       const uint8_t *const *parents, const uint32_t (*first)[8]);
/*
 * Node v's parent cache row, copied once with single loads: the cache is a file mapping
 * that another process may damage while we label, so a row is checked and then used from
 * this copy only, never read again from the mapping between check and use.
 */
static inline void labeler_load_row(const labeler_layer_args *a, uint64_t v,
                                    uint32_t row[LABELER_DEGREE]) {
    const uint32_t *p = a->parents + v * LABELER_DEGREE;
    for (int j = 0; j < LABELER_DEGREE; j++) row[j] = __atomic_load_n(&p[j], __ATOMIC_RELAXED);
}
/* 1 if a row is in range for node v (base parents below v, expander below nodes): a
 * corrupt cache must not make labeling read out of bounds. Inline: it runs per label. */
static inline int labeler_row_ok(const uint32_t row[LABELER_DEGREE], uint64_t v, uint64_t nodes,
                                 int degree) {
    for (int j = 0; j < LABELER_BASE_DEGREE; j++)
        if (row[j] >= v) return 0;
    for (int j = LABELER_BASE_DEGREE; j < degree; j++)
        if (row[j] >= nodes) return 0;
    return 1;
}
/* labeler_label_layer with a producer thread gathering parents (src/producer.c). */
int labeler_label_piped(const labeler_layer_args *a, int degree);

#endif
