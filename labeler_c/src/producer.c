/*
 * Labeling with a producer thread (the way rust-fil-proofs' multicore SDR does it): one
 * thread walks the parent cache ahead of the hasher and copies each node's parent labels
 * into a ring of RING slots; the hasher reads them from there, in L1/L2, so its chain of
 * compressions never stalls on the random DRAM reads of a sector larger than the caches.
 *
 * Expander parents (previous layer) are always final and always copied. A base parent
 * (current layer) is copied only if the hasher had labeled it when the producer got there;
 * the others are recent nodes, read by the hasher from the layer where they are still in
 * cache. A per-slot mask says which parents were copied.
 *
 * The two threads hand nodes over through two counters (release/acquire). Waits are short
 * (a few labels' time) so they spin with a pause, and yield the core if they last, in case
 * the machine has fewer free cores than threads.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "labeler_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Nodes in flight between the threads. 512 x 448 B = 224 KiB per sector: stays in L2. */
#define RING 512
/* Nodes ahead of the copy whose parents the producer prefetches. */
#define PRODUCER_AHEAD 16
#define SPINS_BEFORE_YIELD 4096

typedef struct {
    const labeler_layer_args *a;
    int degree;
    uint8_t *ring;     /* RING x nsectors x LABELER_DEGREE labels */
    uint16_t *copied;  /* RING x nsectors: bit j set if parent j is in the ring */
    uint32_t (*rows)[LABELER_DEGREE]; /* RING: the node's checked cache row, used from here */
    uint32_t (*first)[8]; /* RING x nsectors: state after the prefix block, hashed ahead */
    int error;
    /* Each counter on its own cache line: one written per node by each side, and read by
     * the other only when its cached copy runs out, so the lines do not bounce per node. */
    _Alignas(64) uint64_t produced; /* nodes [start, produced) are in the ring */
    _Alignas(64) uint64_t consumed; /* labels [start, consumed) are final */
    _Alignas(64) int stop;          /* set by either side on an error */
} pipeline;

static inline uint64_t load_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int stopped(const pipeline *pl) { return __atomic_load_n(&pl->stop, __ATOMIC_ACQUIRE); }

static inline void relax(unsigned *spins) {
    if (++*spins < SPINS_BEFORE_YIELD) {
        CPU_RELAX();
    } else {
        *spins = 0;
        sched_yield();
    }
}

static inline uint8_t *slot_label(const pipeline *pl, uint64_t v, uint32_t i, int j) {
    size_t row = (size_t)(v % RING) * pl->a->nsectors + i;
    return pl->ring + (row * LABELER_DEGREE + (size_t)j) * LABELER_NODE_BYTES;
}

static void prefetch_parents(const pipeline *pl, uint64_t v, uint64_t done) {
    const labeler_layer_args *a = pl->a;
    const labeler_layout l = labeler_layout_of(a);
    uint32_t p[LABELER_DEGREE];
    labeler_load_row(a, v, p); /* not checked yet: each index is range-tested before use */
    for (uint32_t i = 0; i < a->nsectors; i++) {
        for (int j = 0; j < LABELER_BASE_DEGREE; j++)
            if (p[j] < done) __builtin_prefetch(labeler_node_at(a->sectors[i].cur, l, p[j]), 0, 0);
        for (int j = LABELER_BASE_DEGREE; j < pl->degree; j++)
            if (p[j] < a->nodes)
                __builtin_prefetch(labeler_prev_at(a->sectors[i].prev, l, p[j]), 0, 0);
    }
}

static void *produce(void *arg) {
    pipeline *pl = arg;
    const labeler_layer_args *a = pl->a;
    const labeler_layout l = labeler_layout_of(a);
    const labeler_compress_fn compress = labeler_compress_current();
    uint8_t prefix_hi[32] = {0}; /* BE32(layer) || BE64(v) || 20 zero bytes */
    labeler_store_be32(prefix_hi, a->layer);
    unsigned spins = 0;
    uint64_t done = load_acq(&pl->consumed);
    for (uint64_t v = a->start; v < a->end; v++) {
        /* Refresh the hasher's progress when the ring is full, and now and then so more
         * base parents count as final (and are copied). */
        if (v - done >= RING || (v & 63) == 0) done = load_acq(&pl->consumed);
        while (v - done >= RING) { /* the slot is still being hashed */
            if (stopped(pl)) return NULL;
            /* A full ring is ~RING labels of hashing away: sleep, leaving the core (or
             * its SMT sibling, the hasher) alone, rather than spin. */
            struct timespec nap = {0, 50 * 1000};
            nanosleep(&nap, NULL);
            done = load_acq(&pl->consumed);
        }
        if (v == 0) {
            store_rel(&pl->produced, v + 1);
            continue;
        }
        uint32_t *p = pl->rows[v % RING];
        labeler_load_row(a, v, p);
        if (!labeler_row_ok(p, v, a->nodes, pl->degree)) {
            pl->error = LABELER_E_CORRUPT;
            __atomic_store_n(&pl->stop, 1, __ATOMIC_RELEASE);
            return NULL;
        }
        if (v + PRODUCER_AHEAD < a->end) prefetch_parents(pl, v + PRODUCER_AHEAD, done);
        labeler_store_be64(prefix_hi + 4, v);
        for (uint32_t i = 0; i < a->nsectors; i++) {
            /* The first block needs no parent: it comes off the hasher's chain. */
            uint32_t *st = pl->first[(v % RING) * a->nsectors + i];
            const uint8_t *prefix[2] = {a->sectors[i].replica_id, prefix_hi};
            memcpy(st, labeler_sha256_iv, 32);
            compress(st, prefix, 1);
            uint16_t mask = 0;
            for (int j = 0; j < LABELER_BASE_DEGREE; j++)
                if (p[j] < done) {
                    memcpy(slot_label(pl, v, i, j), labeler_node_at(a->sectors[i].cur, l, p[j]),
                           LABELER_NODE_BYTES);
                    mask |= (uint16_t)(1u << j);
                }
            for (int j = LABELER_BASE_DEGREE; j < pl->degree; j++) {
                memcpy(slot_label(pl, v, i, j), labeler_prev_at(a->sectors[i].prev, l, p[j]),
                       LABELER_NODE_BYTES);
                mask |= (uint16_t)(1u << j);
            }
            pl->copied[(v % RING) * a->nsectors + i] = mask;
        }
        store_rel(&pl->produced, v + 1);
    }
    return NULL;
}

int labeler_label_piped(const labeler_layer_args *a, int degree) {
    pipeline pl = {.a = a, .degree = degree, .produced = a->start, .consumed = a->start};
    pl.ring = aligned_alloc(64, (size_t)RING * a->nsectors * LABELER_DEGREE * LABELER_NODE_BYTES);
    pl.copied = malloc((size_t)RING * a->nsectors * sizeof *pl.copied);
    pl.first = aligned_alloc(64, (size_t)RING * a->nsectors * sizeof *pl.first);
    pl.rows = malloc((size_t)RING * sizeof *pl.rows);
    pthread_t producer;
    if (!pl.ring || !pl.copied || !pl.first || !pl.rows ||
        pthread_create(&producer, NULL, produce, &pl) != 0) {
        free(pl.ring);
        free(pl.copied);
        free(pl.first);
        free(pl.rows);
        return LABELER_E_NOMEM;
    }
    const labeler_layout l = labeler_layout_of(a);
    const uint8_t *parents[LABELER_MAX_BATCH * LABELER_DEGREE];
    unsigned spins = 0;
    uint64_t ready = a->start;
    for (uint64_t v = a->start; v < a->end; v++) {
        while (ready <= v) {
            ready = load_acq(&pl.produced);
            if (ready > v) break;
            if (stopped(&pl)) goto out;
            relax(&spins);
        }
        if (v > 0) {
            const uint32_t *p = pl.rows[v % RING]; /* checked by the producer */
            for (uint32_t i = 0; i < a->nsectors; i++) {
                const uint16_t mask = pl.copied[(v % RING) * a->nsectors + i];
                const uint8_t **row = parents + i * LABELER_DEGREE;
                for (int j = 0; j < degree; j++)
                    row[j] = mask & (1u << j) ? slot_label(&pl, v, i, j)
                                              : labeler_node_at(a->sectors[i].cur, l, p[j]);
            }
        }
        labeler_hash_node(a, v, degree, parents,
                          v > 0 ? (const uint32_t(*)[8])pl.first[(v % RING) * a->nsectors] : NULL);
        store_rel(&pl.consumed, v + 1);
    }
out:
    __atomic_store_n(&pl.stop, 1, __ATOMIC_RELEASE);
    pthread_join(producer, NULL);
    free(pl.ring);
    free(pl.copied);
    free(pl.first);
    free(pl.rows);
    return pl.error;
}
