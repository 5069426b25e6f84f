/*
 * Lockstep labeling (SPEC §8) of a batch of sectors of one graph in the node-interleaved
 * layout (labeler.h, labeler_lockstep_args). Node v of every sector hashes at once: the
 * parent cache row is read and checked once, each parent is one contiguous run of
 * 32 x nsectors bytes that every lane loads from, and the 20 blocks of all labels go
 * through one lockstep compression (16 lanes at a time on AVX-512).
 */
#include <string.h>

#include "labeler_internal.h"

#define LABEL_BLOCKS 20
#define PARENT_SLOTS 37
/* Bytes of recent layer that are still in L2: base parents that close need no prefetch. */
#define RECENT_BYTES (128u << 10)

typedef struct {
    uint32_t k;     /* sectors */
    uint32_t per;   /* nodes per block */
    uint32_t shift; /* log2(per) when per is a power of two, else 32 */
} layout;

static inline size_t node_words(const layout *l) { return (size_t)8 * l->k; }

static inline uint32_t *node_in(uint32_t *const *blocks, const layout *l, uint64_t v) {
    if (l->shift < 32)
        return blocks[v >> l->shift] + node_words(l) * (v & ((1ull << l->shift) - 1));
    return blocks[v / l->per] + node_words(l) * (v % l->per);
}

static layout layout_of(uint32_t k, uint32_t per) {
    layout l = {k, per, 32};
    if (!(per & (per - 1))) l.shift = (uint32_t)__builtin_ctz(per);
    return l;
}

/* Broadcast an 8-word piece to every lane: the same prefix or padding in all sectors. */
static void broadcast(uint32_t *piece, uint32_t k, const uint32_t words[8]) {
    for (int w = 0; w < 8; w++)
        for (uint32_t s = 0; s < k; s++) piece[(size_t)w * k + s] = words[w];
}

static void prefetch_node(const uint32_t *node, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch((const char *)node + off, 0, 3);
}

/* Parents of node w, prefetched; only in-range indices are used (the row is not checked). */
static void prefetch_row(const labeler_lockstep_args *a, const layout *l, uint64_t w, uint64_t v,
                         uint64_t recent, int degree) {
    const uint32_t *p = a->parents + w * LABELER_DEGREE;
    const size_t bytes = node_words(l) * 4;
    for (int j = 0; j < LABELER_BASE_DEGREE; j++) {
        uint64_t q = __atomic_load_n(&p[j], __ATOMIC_RELAXED);
        if (q + recent < v) prefetch_node(node_in(a->cur, l, q), bytes);
    }
    for (int j = LABELER_BASE_DEGREE; j < degree; j++) {
        uint64_t q = __atomic_load_n(&p[j], __ATOMIC_RELAXED);
        if (q < a->nodes) prefetch_node(node_in((uint32_t *const *)a->prev, l, q), bytes);
    }
}

/* Run the batch's lanes through nblocks blocks, 16 lanes per call, from the IV. */
static void hash_lanes(labeler_lanes_fn f, uint32_t k, const uint32_t **pieces, size_t nblocks,
                       uint32_t out[8][LABELER_MAX_LOCKSTEP]) {
    const uint32_t *shifted[2 * LABEL_BLOCKS];
    for (uint32_t g = 0; g < k; g += LABELER_LANES) {
        uint32_t st[8][LABELER_LANES];
        const uint32_t lanes = k - g < LABELER_LANES ? k - g : LABELER_LANES;
        for (int w = 0; w < 8; w++)
            for (int s = 0; s < LABELER_LANES; s++) st[w][s] = labeler_sha256_iv[w];
        for (size_t i = 0; i < 2 * nblocks; i++) shifted[i] = pieces[i] + g;
        f(st, shifted, k, lanes, nblocks);
        for (int w = 0; w < 8; w++) memcpy(&out[w][g], st[w], lanes * sizeof(uint32_t));
    }
}

/* The digests into node v's words, Fr-safe: byte 31 is the low byte of word 7. */
static void store_node(uint32_t *node, uint32_t k, uint32_t st[8][LABELER_MAX_LOCKSTEP]) {
    for (int w = 0; w < 8; w++) memcpy(node + (size_t)w * k, st[w], k * sizeof(uint32_t));
    for (uint32_t s = 0; s < k; s++) node[7 * (size_t)k + s] &= 0xffffff3fu;
}

static int args_ok(const labeler_lockstep_args *a) {
    return a && a->parents && a->replica_ids && a->cur && a->nsectors >= 1 &&
           a->nsectors <= LABELER_MAX_LOCKSTEP && a->block_nodes >= 1 && a->layer >= 1 &&
           (a->layer == 1 || a->prev) && a->nodes >= LABELER_MIN_NODES &&
           a->nodes <= LABELER_MAX_NODES && !(a->nodes & (a->nodes - 1)) && a->start <= a->end &&
           a->end <= a->nodes;
}

int labeler_label_lockstep(const labeler_lockstep_args *a) {
    if (!args_ok(a)) return LABELER_E_ARG;
    const uint32_t k = a->nsectors;
    const layout l = layout_of(k, a->block_nodes);
    const int degree = a->layer == 1 ? LABELER_BASE_DEGREE : LABELER_DEGREE;
    const labeler_lanes_fn f = labeler_lanes_for(k);
    const uint64_t recent = RECENT_BYTES / (32u * k);
    const uint64_t ahead = k >= 8 ? 2 : 32 / k; /* a few labels' time ahead of the hash */
    /* Per-sector and per-node pieces, interleaved like the layers (stride k). */
    uint32_t rid[8 * LABELER_MAX_LOCKSTEP], prefix[8 * LABELER_MAX_LOCKSTEP];
    uint32_t pad[8 * LABELER_MAX_LOCKSTEP], pad64a[8 * LABELER_MAX_LOCKSTEP],
        pad64b[8 * LABELER_MAX_LOCKSTEP];
    static const uint32_t PAD_LABEL[8] = {0x80000000u, 0, 0, 0, 0, 0, 0, 0x2700}; /* 9,984 bits */
    static const uint32_t PAD64_A[8] = {0x80000000u, 0, 0, 0, 0, 0, 0, 0};
    static const uint32_t PAD64_B[8] = {0, 0, 0, 0, 0, 0, 0, 0x200}; /* 512 bits */
    for (uint32_t s = 0; s < k; s++)
        for (int w = 0; w < 8; w++)
            rid[(size_t)w * k + s] = labeler_load_be32(a->replica_ids + 32 * (size_t)s + 4 * w);
    broadcast(pad, k, PAD_LABEL);
    broadcast(pad64a, k, PAD64_A);
    broadcast(pad64b, k, PAD64_B);
    const uint32_t prefix_words[8] = {a->layer, 0, 0, 0, 0, 0, 0, 0};
    const uint32_t *pieces[2 * LABEL_BLOCKS];
    uint32_t st[8][LABELER_MAX_LOCKSTEP];
    uint32_t row[LABELER_DEGREE];
    broadcast(prefix, k, prefix_words);
    for (uint64_t v = a->start; v < a->end; v++) {
        for (uint32_t s = 0; s < k; s++) { /* only BE64(v), words 1 and 2, changes */
            prefix[k + s] = (uint32_t)(v >> 32);
            prefix[2 * k + s] = (uint32_t)v;
        }
        pieces[0] = rid;
        pieces[1] = prefix;
        if (v == 0) { /* the prefix alone: one block and its padding */
            pieces[2] = pad64a;
            pieces[3] = pad64b;
            hash_lanes(f, k, pieces, 2, st);
            store_node(node_in(a->cur, &l, v), k, st);
            continue;
        }
        /* Read once, checked, used from the copy: the mapping may be damaged meanwhile. */
        for (int j = 0; j < LABELER_DEGREE; j++)
            row[j] = __atomic_load_n(&a->parents[v * LABELER_DEGREE + j], __ATOMIC_RELAXED);
        if (!labeler_row_ok(row, v, a->nodes, degree)) return LABELER_E_CORRUPT;
        if (v + ahead < a->end) prefetch_row(a, &l, v + ahead, v, recent, degree);
        const uint32_t *parent[LABELER_DEGREE];
        for (int j = 0; j < LABELER_BASE_DEGREE; j++) parent[j] = node_in(a->cur, &l, row[j]);
        for (int j = LABELER_BASE_DEGREE; j < degree; j++)
            parent[j] = node_in((uint32_t *const *)a->prev, &l, row[j]);
        for (int s = 0, j = 0; s < PARENT_SLOTS; s++) {
            pieces[2 + s] = parent[j];
            j = j + 1 == degree ? 0 : j + 1;
        }
        pieces[2 * LABEL_BLOCKS - 1] = pad;
        hash_lanes(f, k, pieces, LABEL_BLOCKS, st);
        store_node(node_in(a->cur, &l, v), k, st);
    }
    return LABELER_OK;
}

static int copy_ok(const void *blocks, uint32_t block_nodes, uint32_t k, uint32_t sector,
                   const void *buf) {
    return blocks && buf && block_nodes >= 1 && k >= 1 && k <= LABELER_MAX_LOCKSTEP && sector < k;
}

int labeler_lockstep_unpack(const uint32_t *const *blocks, uint32_t block_nodes, uint32_t k,
                            uint32_t sector, uint64_t start, uint64_t count, uint8_t *out) {
    if (!copy_ok(blocks, block_nodes, k, sector, out)) return LABELER_E_ARG;
    const layout l = layout_of(k, block_nodes);
    for (uint64_t v = start; v < start + count; v++) {
        const uint32_t *node = node_in((uint32_t *const *)blocks, &l, v) + sector;
        uint8_t *o = out + 32 * (v - start);
        for (int w = 0; w < 8; w++) labeler_store_be32(o + 4 * w, node[(size_t)w * k]);
    }
    return LABELER_OK;
}

int labeler_lockstep_pack(uint32_t *const *blocks, uint32_t block_nodes, uint32_t k,
                          uint32_t sector, uint64_t start, uint64_t count, const uint8_t *in) {
    if (!copy_ok(blocks, block_nodes, k, sector, in)) return LABELER_E_ARG;
    const layout l = layout_of(k, block_nodes);
    for (uint64_t v = start; v < start + count; v++) {
        uint32_t *node = node_in(blocks, &l, v) + sector;
        const uint8_t *i = in + 32 * (v - start);
        for (int w = 0; w < 8; w++) node[(size_t)w * k] = labeler_load_be32(i + 4 * w);
    }
    return LABELER_OK;
}
