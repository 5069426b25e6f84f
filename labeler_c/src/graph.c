/*
 * The SDR graph: DRSample base parents (ChaCha8, SPEC §4-5) and Feistel expander parents
 * (BLAKE2b-512 round function, SPEC §6). Only cache generation runs this; labeling reads
 * the parent cache.
 */
#include <string.h>

#include "labeler_internal.h"

/* ---- ChaCha8 block, as rand_chacha's ChaCha8Rng (64-bit counter, zero stream id) ---- */

#define ROTL32(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define QR(a, b, c, d)                                                                     \
    do {                                                                                   \
        a += b, d ^= a, d = ROTL32(d, 16);                                                 \
        c += d, b ^= c, b = ROTL32(b, 12);                                                 \
        a += b, d ^= a, d = ROTL32(d, 8);                                                  \
        c += d, b ^= c, b = ROTL32(b, 7);                                                  \
    } while (0)

static void chacha8_block(const uint32_t key[8], uint64_t counter, uint32_t out[16]) {
    uint32_t s[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574, key[0], key[1],
                      key[2],     key[3],     key[4],     key[5],     key[6], key[7],
                      (uint32_t)counter, (uint32_t)(counter >> 32), 0, 0};
    uint32_t x[16];
    memcpy(x, s, sizeof x);
    for (int i = 0; i < 4; i++) {
        QR(x[0], x[4], x[8], x[12]);
        QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]);
        QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]);
        QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]);
        QR(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; i++) out[i] = x[i] + s[i];
}

/* ---- BLAKE2b-512 of a 16-byte message, the only input the Feistel round gives it ---- */

static const uint64_t B2_IV[8] = {0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL,
                                  0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
                                  0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
                                  0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};

static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

#define ROTR64(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
#define B2G(a, b, c, d, x, y)                                                              \
    do {                                                                                   \
        a = a + b + (x), d = ROTR64(d ^ a, 32);                                            \
        c = c + d, b = ROTR64(b ^ c, 24);                                                  \
        a = a + b + (y), d = ROTR64(d ^ a, 16);                                            \
        c = c + d, b = ROTR64(b ^ c, 63);                                                  \
    } while (0)

/* First 8 digest bytes, read big-endian, of BLAKE2b-512(BE64(r) || BE64(key)). */
static uint64_t feistel_round(uint64_t r, uint64_t key) {
    /* Message words are little-endian loads of the bytes: of a BE64 value, its byte swap. */
    const uint64_t m[16] = {__builtin_bswap64(r), __builtin_bswap64(key)};
    uint64_t v[16];
    memcpy(v, B2_IV, sizeof B2_IV);
    memcpy(v + 8, B2_IV, sizeof B2_IV);
    v[0] ^= 0x01010040; /* parameter block: 64-byte digest, no key, fanout = depth = 1 */
    const uint64_t h0 = v[0];
    v[12] ^= 16;  /* bytes hashed */
    v[14] = ~v[14]; /* last block */
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) {
        const uint8_t *s = B2_SIGMA[i];
        B2G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        B2G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        B2G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        B2G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        B2G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        B2G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        B2G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        B2G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    return __builtin_bswap64(h0 ^ v[0] ^ v[8]);
}

/* ---- Graph ---- */

int labeler_graph_init(labeler_graph *g, uint64_t nodes, const uint8_t porep_id[32],
                       uint32_t api_version) {
    static const char drg_dst[] = "Filecoin_DRSample";
    static const char feistel_dst[] = "Filecoin_Feistel";
    uint8_t msg[sizeof drg_dst - 1 + 32], digest[32];

    if (!g || !porep_id || nodes < LABELER_MIN_NODES || nodes > LABELER_MAX_NODES ||
        (nodes & (nodes - 1)) || api_version > LABELER_API_1_2_0)
        return LABELER_E_ARG;
    memset(g, 0, sizeof *g);
    g->nodes = nodes;
    g->api_version = api_version;
    /* Smallest h >= 1 with 4^h >= 8N: the Feistel domain is [0, 4^h). */
    g->feistel_half_bits = 1;
    while ((1ULL << (2 * g->feistel_half_bits)) < 8 * nodes) g->feistel_half_bits++;

    memcpy(msg, drg_dst, sizeof drg_dst - 1);
    memcpy(msg + sizeof drg_dst - 1, porep_id, 32);
    labeler_sha256(msg, sizeof drg_dst - 1 + 32, digest);
    memcpy(g->drg_seed, digest, sizeof g->drg_seed);

    memcpy(msg, feistel_dst, sizeof feistel_dst - 1);
    memcpy(msg + sizeof feistel_dst - 1, porep_id, 32);
    labeler_sha256(msg, sizeof feistel_dst - 1 + 32, digest);
    for (int i = 0; i < 4; i++) {
        uint64_t k = 0;
        for (int j = 7; j >= 0; j--) k = (k << 8) | digest[8 * i + j];
        g->feistel_keys[i] = k;
    }
    return LABELER_OK;
}

static void base_parents(const labeler_graph *g, uint32_t v, uint32_t out[6]) {
    if (v < 2) {
        memset(out, 0, 6 * sizeof *out);
        return;
    }
    uint32_t key[8], words[32];
    for (int i = 0; i < 7; i++) {
        const uint8_t *p = g->drg_seed + 4 * i;
        key[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    key[7] = v;
    chacha8_block(key, 0, words);
    chacha8_block(key, 1, words + 16); /* 10 u64 draws need 20 words */

    const uint64_t m = (uint64_t)v * 5; /* the metagraph node */
    /* ceil(log2(m)) as the integer bit length of m - 1: equal to Rust's f64 form below 2^49. */
    const uint64_t n_buckets = 64 - (uint64_t)__builtin_clzll(m - 1);
    uint32_t r[5];
    for (int j = 0; j < 5; j++) {
        const uint64_t d0 = words[4 * j] | (uint64_t)words[4 * j + 1] << 32;
        const uint64_t d1 = words[4 * j + 2] | (uint64_t)words[4 * j + 3] << 32;
        const uint64_t bucket = d0 % n_buckets + 1;
        const uint64_t largest = m < (1ULL << bucket) ? m : (1ULL << bucket);
        const uint64_t smallest = (largest >> 1) > 2 ? (largest >> 1) : 2;
        const uint64_t dist = smallest + d1 % (largest - smallest + 1);
        uint64_t p = (m - dist) / 5;
        if (p == v) p = v - 1;
        r[j] = (uint32_t)p;
    }
    /* 1.1.0 moved the predecessor from the last slot to the first (SPEC §5.6). */
    if (g->api_version == LABELER_API_1_0_0) {
        memcpy(out, r, sizeof r);
        out[5] = v - 1;
    } else {
        out[0] = v - 1;
        memcpy(out + 1, r, sizeof r);
    }
}

static uint64_t feistel_encode(const labeler_graph *g, uint64_t x) {
    const uint32_t h = g->feistel_half_bits;
    const uint64_t mask = (1ULL << h) - 1;
    uint64_t left = x >> h & mask, right = x & mask;
    for (int i = 0; i < 3; i++) {
        const uint64_t next = left ^ (feistel_round(right, g->feistel_keys[i]) & mask);
        left = right;
        right = next;
    }
    return left << h | right;
}

static void expander_parents(const labeler_graph *g, uint32_t v, uint32_t out[8]) {
    const uint64_t domain = 8 * g->nodes;
    for (uint32_t i = 0; i < 8; i++) {
        uint64_t t = feistel_encode(g, 8 * (uint64_t)v + i);
        while (t >= domain) t = feistel_encode(g, t); /* cycle-walk into [0, 8N) */
        /* 1.0.0 truncated to u32 before dividing: the historical bug, kept bit-exact. */
        out[i] = g->api_version == LABELER_API_1_0_0 ? (uint32_t)t / 8 : (uint32_t)(t / 8);
    }
}

#ifdef LABELER_HAVE_AVX512
#include <immintrin.h>

/*
 * The 8 expander parents of a node at once: the 8 Feistel inputs 8v..8v+7 are the 8 u64
 * lanes of a zmm register, so every BLAKE2b round function (nearly all of the parent
 * cache's generation time) runs for all of them in one instruction stream. Lanes that
 * must cycle-walk are encoded again, all 8 together, until none is left outside [0, 8N).
 */
#define B2AVX __attribute__((target("avx512f,avx512bw")))
#define VADD(a, b) _mm512_add_epi64(a, b)
#define VG(a, b, c, d, x, y)                                                               \
    do {                                                                                   \
        a = VADD(VADD(a, b), x), d = _mm512_ror_epi64(_mm512_xor_si512(d, a), 32);        \
        c = VADD(c, d), b = _mm512_ror_epi64(_mm512_xor_si512(b, c), 24);                 \
        a = VADD(VADD(a, b), y), d = _mm512_ror_epi64(_mm512_xor_si512(d, a), 16);        \
        c = VADD(c, d), b = _mm512_ror_epi64(_mm512_xor_si512(b, c), 63);                 \
    } while (0)

B2AVX static inline __m512i bswap64x8(__m512i x) {
    const __m512i idx = _mm512_broadcast_i32x4(
        _mm_set_epi8(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
    return _mm512_shuffle_epi8(x, idx);
}

/* feistel_round for 8 lanes of r with one key. */
B2AVX static __m512i feistel_round8(__m512i r, uint64_t key) {
    __m512i m[16];
    m[0] = bswap64x8(r);
    m[1] = _mm512_set1_epi64((long long)__builtin_bswap64(key));
    for (int i = 2; i < 16; i++) m[i] = _mm512_setzero_si512();
    __m512i v[16];
    for (int i = 0; i < 8; i++) {
        v[i] = _mm512_set1_epi64((long long)B2_IV[i]);
        v[8 + i] = v[i];
    }
    v[0] = _mm512_xor_si512(v[0], _mm512_set1_epi64(0x01010040));
    const __m512i h0 = v[0];
    v[12] = _mm512_xor_si512(v[12], _mm512_set1_epi64(16));
    v[14] = _mm512_xor_si512(v[14], _mm512_set1_epi64(-1));
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) {
        const uint8_t *s = B2_SIGMA[i];
        VG(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        VG(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        VG(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        VG(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        VG(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        VG(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        VG(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        VG(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    return bswap64x8(_mm512_ternarylogic_epi64(h0, v[0], v[8], 0x96));
}

B2AVX static __m512i feistel_encode8(const labeler_graph *g, __m512i x) {
    const uint32_t h = g->feistel_half_bits;
    const __m512i mask = _mm512_set1_epi64((long long)((1ULL << h) - 1));
    __m512i left = _mm512_and_si512(_mm512_srli_epi64(x, h), mask);
    __m512i right = _mm512_and_si512(x, mask);
    for (int i = 0; i < 3; i++) {
        const __m512i next = _mm512_xor_si512(
            left, _mm512_and_si512(feistel_round8(right, g->feistel_keys[i]), mask));
        left = right;
        right = next;
    }
    return _mm512_or_si512(_mm512_slli_epi64(left, h), right);
}

B2AVX static void expander_parents8(const labeler_graph *g, uint32_t v, uint32_t out[8]) {
    const __m512i domain = _mm512_set1_epi64((long long)(8 * g->nodes));
    __m512i t = feistel_encode8(
        g, _mm512_add_epi64(_mm512_set1_epi64(8 * (long long)v),
                            _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0)));
    for (__mmask8 walk; (walk = _mm512_cmpge_epu64_mask(t, domain));)
        t = _mm512_mask_mov_epi64(t, walk, feistel_encode8(g, t));
    uint64_t lanes[8];
    _mm512_storeu_si512(lanes, t);
    _mm256_zeroupper();
    for (int i = 0; i < 8; i++) /* 1.0.0's truncation as in expander_parents */
        out[i] = g->api_version == LABELER_API_1_0_0 ? (uint32_t)lanes[i] / 8
                                                     : (uint32_t)(lanes[i] / 8);
}

static int wide_feistel(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#endif

/* A graph that labeler_graph_init could have made: keeps a hand-built one from looping. */
static int graph_ok(const labeler_graph *g) {
    return g->nodes >= LABELER_MIN_NODES && g->nodes <= LABELER_MAX_NODES &&
           !(g->nodes & (g->nodes - 1)) && g->api_version <= LABELER_API_1_2_0 &&
           g->feistel_half_bits >= 1 && g->feistel_half_bits <= 31 &&
           (1ULL << (2 * g->feistel_half_bits)) >= 8 * g->nodes;
}

int labeler_parents(const labeler_graph *g, uint64_t start, uint64_t count, uint32_t *out) {
    if (!g || !out || !graph_ok(g) || start > g->nodes || count > g->nodes - start)
        return LABELER_E_ARG;
#ifdef LABELER_HAVE_AVX512
    const int wide = (labeler_available() & LABELER_IMPL_AVX512) && wide_feistel();
#endif
    for (uint64_t v = start; v < start + count; v++) {
        uint32_t *row = out + (v - start) * LABELER_DEGREE;
        base_parents(g, (uint32_t)v, row);
#ifdef LABELER_HAVE_AVX512
        if (wide) {
            expander_parents8(g, (uint32_t)v, row + LABELER_BASE_DEGREE);
            continue;
        }
#endif
        expander_parents(g, (uint32_t)v, row + LABELER_BASE_DEGREE);
    }
    return LABELER_OK;
}
