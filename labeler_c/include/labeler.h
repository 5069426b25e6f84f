/*
 * labeler: bit-exact Filecoin SDR labeling (PreCommit phase 1), see SPEC.md.
 *
 * The whole C API. Its cffi twin is ../_labeler.cdef; the API-mode build compiles the
 * declarations there against this header, so drift between the two fails the build.
 * Every function that can fail returns LABELER_OK or a negative LABELER_E_* code.
 */
#ifndef LABELER_H
#define LABELER_H

#include <stddef.h>
#include <stdint.h>

#define LABELER_NODE_BYTES 32
#define LABELER_BASE_DEGREE 6
#define LABELER_EXP_DEGREE 8
#define LABELER_DEGREE 14
#define LABELER_MIN_NODES 64
#define LABELER_MAX_NODES 2147483648ULL /* node indices are u32; a power of two */
#define LABELER_MAX_BATCH 16             /* sectors labeled in lockstep by one call */
#define LABELER_MAX_LOCKSTEP 32          /* sectors of one node-interleaved batch */

/* Implementation bits for labeler_init() and labeler_available(). */
#define LABELER_IMPL_PORTABLE 1u
#define LABELER_IMPL_SHANI 2u
#define LABELER_IMPL_AVX512 4u /* 16-lane lockstep kernel; single streams use SHA-NI or C */

/* Graph versions (rust-fil-proofs ApiVersion). 1.2.0 builds the same graph as 1.1.0. */
#define LABELER_API_1_0_0 0
#define LABELER_API_1_1_0 1
#define LABELER_API_1_2_0 2

#define LABELER_OK 0
#define LABELER_E_ARG (-1)         /* an argument is out of range or NULL */
#define LABELER_E_UNAVAILABLE (-2) /* no allowed implementation runs on this CPU */
#define LABELER_E_SELFTEST (-3)    /* the chosen implementation gave a wrong digest */
#define LABELER_E_CORRUPT (-4)     /* a parent index is out of range: corrupt parent cache */
#define LABELER_E_NOMEM (-5)
#define LABELER_E_TIMEOUT (-6) /* a pool wait ran out of time; call again */
#define LABELER_E_BUSY (-7)    /* the pool still lends memory to a job */
#define LABELER_E_FOREIGN (-8) /* the job belongs to another pool (or to none) */

/* Everything a graph needs, derived once from the porep_id (SPEC §3, §6). */
typedef struct {
    uint64_t nodes;
    uint32_t api_version;
    uint32_t feistel_half_bits;
    uint64_t feistel_keys[4];
    uint8_t drg_seed[28];
} labeler_graph;

/*
 * A layer is a table of blocks of 2^block_shift nodes each: node v of a layer lives at
 * blocks[v >> block_shift] + 32 * (v mod 2^block_shift). A contiguous layer is one block;
 * the pooled allocator hands out many.
 */
typedef struct {
    const uint8_t *replica_id;  /* 32 bytes */
    uint8_t *const *cur;        /* this layer's block table */
    const uint8_t *const *prev; /* layer - 1's block table; NULL for layer 1 */
} labeler_sector;

/*
 * One call labels nodes [start, end) of one layer of every sector of a batch: the sectors
 * share the graph and the layer, and go through the hash two at a time (2-stream SHA-NI).
 * Nodes below start must be final in every sector.
 */
typedef struct {
    const uint32_t *parents; /* parent cache: nodes x 14 u32, base then expander */
    const labeler_sector *sectors;
    uint32_t nsectors;
    uint32_t block_shift;
    uint64_t nodes;
    uint64_t start;
    uint64_t end;
    uint32_t layer; /* 1-based */
    /*
     * Non-zero: a second thread gathers every node's parent labels into a small ring
     * ahead of the hashing thread, so the hash chain never waits on a DRAM miss (for
     * sectors beyond the caches, with a spare core for the producer).
     */
    uint32_t producer;
} labeler_layer_args;

/*
 * A lockstep batch in the node-interleaved layout: node v of all nsectors sectors side by
 * side, word w (big-endian-decoded, as SHA-256 reads it) of sector s at word
 * w * nsectors + s of the node's 8 * nsectors words. One parent fetch serves every sector.
 * A layer is a table of blocks of block_nodes nodes each (any count >= 1): node v lives at
 * blocks[v / block_nodes] + 8 * nsectors * (v % block_nodes).
 */
typedef struct {
    const uint32_t *parents;     /* parent cache: nodes x 14 u32 */
    const uint8_t *replica_ids;  /* nsectors x 32 bytes */
    uint32_t *const *cur;        /* this layer's block table */
    const uint32_t *const *prev; /* layer - 1's; NULL for layer 1 */
    uint32_t nsectors;           /* 1..LABELER_MAX_LOCKSTEP */
    uint32_t block_nodes;
    uint64_t nodes;
    uint64_t start; /* nodes [start, end) of the layer; nodes below start are final */
    uint64_t end;
    uint32_t layer; /* 1-based */
} labeler_lockstep_args;

int labeler_label_lockstep(const labeler_lockstep_args *args);
/* Sector `sector`'s labels of nodes [start, start + count), in upstream's byte layout,
 * out of (unpack) or into (pack) a batch layer's block table. */
int labeler_lockstep_unpack(const uint32_t *const *blocks, uint32_t block_nodes,
                            uint32_t nsectors, uint32_t sector, uint64_t start, uint64_t count,
                            uint8_t *out);
int labeler_lockstep_pack(uint32_t *const *blocks, uint32_t block_nodes, uint32_t nsectors,
                          uint32_t sector, uint64_t start, uint64_t count, const uint8_t *in);

/* Bitmask of the implementations this CPU can run. */
uint32_t labeler_available(void);
/* Pick the best allowed implementation and self-test it. Returns its bit or LABELER_E_*. */
int labeler_init(uint32_t allow_mask);
/* "avx512", "shani" or "portable": the implementation every hash now goes through. */
const char *labeler_implementation(void);
/* The lockstep kernel a batch of nsectors uses now: "avx512x16", "shani-x2", "portable". */
const char *labeler_lanes_implementation(uint32_t nsectors);

void labeler_sha256(const uint8_t *msg, size_t len, uint8_t out[32]);

int labeler_graph_init(labeler_graph *g, uint64_t nodes, const uint8_t porep_id[32],
                       uint32_t api_version);
/* Parent cache rows for nodes [start, start + count): count x 14 u32 into out. */
int labeler_parents(const labeler_graph *g, uint64_t start, uint64_t count, uint32_t *out);
int labeler_label_layer(const labeler_layer_args *args);

void labeler_replica_id(const uint8_t prover_id[32], uint64_t sector_id, const uint8_t ticket[32],
                        const uint8_t comm_d[32], const uint8_t porep_id[32], uint8_t out[32]);
/* Root of the Fr-safe SHA-256 binary tree over 32-byte leaves; len a power of two >= 64. */
int labeler_commd(const uint8_t *data, uint64_t len, uint8_t out[32]);
/* The same root for len zero bytes, by the zero-subtree shortcut. */
int labeler_zero_commd(uint64_t len, uint8_t out[32]);

/*
 * The layer memory pool (src/pool.c): an arena of equal blocks lent to labeling jobs a
 * block at a time, without deadlock. Waits (join, grow) block on a condition variable for
 * at most timeout_ms and return LABELER_E_TIMEOUT; a grow keeps what it got so far.
 */
typedef struct labeler_pool labeler_pool;

typedef struct labeler_pool_job {
    uint64_t per_layer; /* blocks of one layer, all sectors of the job together */
    uint64_t ncur;      /* blocks of the current layer lent so far: cur[0..ncur) */
    uint64_t nprev;     /* blocks of the previous layer: prev[0..nprev) */
    uint32_t *cur;      /* block indices in the order granted */
    uint32_t *prev;
    struct labeler_pool_job *next; /* the pool's list; not for callers */
    const labeler_pool *owner;     /* the pool that admitted it; checked by every call */
} labeler_pool_job;

/* capacity is rounded down to whole blocks; block_bytes a power of two >= 32. */
int labeler_pool_create(uint64_t capacity, uint64_t block_bytes, labeler_pool **out);
/* LABELER_E_BUSY while a job is still in the pool. */
int labeler_pool_destroy(labeler_pool *p);
uint8_t *labeler_pool_base(const labeler_pool *p);
uint64_t labeler_pool_blocks(const labeler_pool *p);
uint64_t labeler_pool_block_bytes(const labeler_pool *p);
uint64_t labeler_pool_free(labeler_pool *p);
int labeler_pool_join(labeler_pool *p, uint64_t per_layer, uint32_t timeout_ms,
                      labeler_pool_job **out);
int labeler_pool_grow(labeler_pool *p, labeler_pool_job *job, uint64_t blocks,
                      uint32_t timeout_ms);
/* The complete current layer becomes the previous one; the old previous goes back. */
int labeler_pool_finish_layer(labeler_pool *p, labeler_pool_job *job);
/* Everything the job holds goes back, and the job is freed. */
int labeler_pool_leave(labeler_pool *p, labeler_pool_job *job);
/* Free blocks kept resident (default 0); beyond them, returned blocks go back to the OS. */
void labeler_pool_set_idle(labeler_pool *p, uint64_t blocks);
/* 1 if one more block to job keeps every job able to finish its layer (banker's rule);
 * LABELER_E_FOREIGN for another pool's job. Every job call checks the job's owner. */
int labeler_pool_can_grant(labeler_pool *p, const labeler_pool_job *job);

#endif
