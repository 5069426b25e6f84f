/*
 * SHA-256 compression with the x86 SHA extensions. Built on every x86 target (the target
 * attribute scopes the ISA to these functions); dispatch.c calls it only when cpuid says so.
 *
 * One stream is bound by the latency of the sha256rnds2 chain (4 cycles, 32 per block), so
 * the 2-stream variant interleaves two independent messages instruction by instruction and
 * fills the gaps: about 1.7x the blocks per second on one core.
 */
#include "labeler_internal.h"

#ifdef LABELER_HAVE_SHANI
#include <immintrin.h>

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* The instructions want the state as ABEF and CDGH (high lane first). */
#define LOAD_STATE(st, abef, cdgh)                                                          \
    do {                                                                                    \
        __m128i cdab_ = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&(st)[0]), 0xb1); \
        __m128i efgh_ = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&(st)[4]), 0x1b); \
        abef = _mm_alignr_epi8(cdab_, efgh_, 8);                                            \
        cdgh = _mm_blend_epi16(efgh_, cdab_, 0xf0);                                         \
    } while (0)

#define STORE_STATE(st, abef, cdgh)                                                         \
    do {                                                                                    \
        __m128i feba_ = _mm_shuffle_epi32(abef, 0x1b);                                      \
        __m128i dchg_ = _mm_shuffle_epi32(cdgh, 0xb1);                                      \
        _mm_storeu_si128((__m128i *)&(st)[0], _mm_blend_epi16(feba_, dchg_, 0xf0));         \
        _mm_storeu_si128((__m128i *)&(st)[4], _mm_alignr_epi8(dchg_, feba_, 8));            \
    } while (0)

/* The block's 16 message words, big-endian, from its two 32-byte pieces. */
#define LOAD_BLOCK(m, lo, hi)                                                               \
    do {                                                                                    \
        m[0] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(lo)), bswap);             \
        m[1] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((lo) + 16)), bswap);      \
        m[2] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(hi)), bswap);             \
        m[3] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((hi) + 16)), bswap);      \
    } while (0)

/*
 * Four rounds for message group i (words 4i..4i+3). From group 4 on, the group is first
 * expanded in place from the previous four: w[i] = msg2(msg1(w[i-4], w[i-3]) +
 * w[i-1]:w[i-2] >> 4 bytes, w[i-1]). The rnds2 chain is the critical path; the schedule
 * runs beside it.
 */
#define ROUNDS4(i, m, abef, cdgh)                                                           \
    do {                                                                                    \
        if ((i) >= 4)                                                                       \
            m[(i) & 3] = _mm_sha256msg2_epu32(                                              \
                _mm_add_epi32(_mm_sha256msg1_epu32(m[(i) & 3], m[((i) + 1) & 3]),           \
                              _mm_alignr_epi8(m[((i) + 3) & 3], m[((i) + 2) & 3], 4)),      \
                m[((i) + 3) & 3]);                                                          \
        __m128i wk_ = _mm_add_epi32(m[(i) & 3], _mm_load_si128((const __m128i *)k + (i)));  \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk_);                                      \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk_, 0x0e));             \
    } while (0)

#define ROUNDS64(R)                                                                         \
    R(0);                                                                                   \
    R(1);                                                                                   \
    R(2);                                                                                   \
    R(3);                                                                                   \
    R(4);                                                                                   \
    R(5);                                                                                   \
    R(6);                                                                                   \
    R(7);                                                                                   \
    R(8);                                                                                   \
    R(9);                                                                                   \
    R(10);                                                                                  \
    R(11);                                                                                  \
    R(12);                                                                                  \
    R(13);                                                                                  \
    R(14);                                                                                  \
    R(15)

SHANI void labeler_compress_shani(uint32_t state[8], const uint8_t *const *pieces,
                                  size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    const uint32_t *k = labeler_sha256_k;
    __m128i abef, cdgh, m[4];
    LOAD_STATE(state, abef, cdgh);
    for (size_t b = 0; b < nblocks; b++) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        LOAD_BLOCK(m, pieces[2 * b], pieces[2 * b + 1]);
#define ONE(i) ROUNDS4(i, m, abef, cdgh)
        ROUNDS64(ONE);
#undef ONE
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    STORE_STATE(state, abef, cdgh);
}

SHANI void labeler_compress2_shani(uint32_t state_a[8], uint32_t state_b[8],
                                   const uint8_t *const *pieces_a, const uint8_t *const *pieces_b,
                                   size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    const uint32_t *k = labeler_sha256_k;
    __m128i abef_a, cdgh_a, abef_b, cdgh_b, ma[4], mb[4];
    LOAD_STATE(state_a, abef_a, cdgh_a);
    LOAD_STATE(state_b, abef_b, cdgh_b);
    for (size_t b = 0; b < nblocks; b++) {
        const __m128i abef_a0 = abef_a, cdgh_a0 = cdgh_a, abef_b0 = abef_b, cdgh_b0 = cdgh_b;
        LOAD_BLOCK(ma, pieces_a[2 * b], pieces_a[2 * b + 1]);
        LOAD_BLOCK(mb, pieces_b[2 * b], pieces_b[2 * b + 1]);
#define TWO(i)                                                                              \
    ROUNDS4(i, ma, abef_a, cdgh_a);                                                         \
    ROUNDS4(i, mb, abef_b, cdgh_b)
        ROUNDS64(TWO);
#undef TWO
        abef_a = _mm_add_epi32(abef_a, abef_a0);
        cdgh_a = _mm_add_epi32(cdgh_a, cdgh_a0);
        abef_b = _mm_add_epi32(abef_b, abef_b0);
        cdgh_b = _mm_add_epi32(cdgh_b, cdgh_b0);
    }
    STORE_STATE(state_a, abef_a, cdgh_a);
    STORE_STATE(state_b, abef_b, cdgh_b);
}
/* Words 4j..4j+3 of lane s of a node-interleaved piece (labeler_lanes_fn): a strided
 * gather of values that need no byte swap. */
#define LOAD_LANE(m, lo, hi, stride, s)                                                     \
    do {                                                                                    \
        for (int j_ = 0; j_ < 2; j_++) {                                                    \
            const uint32_t *p_ = (j_ ? (hi) : (lo)) + (s);                                  \
            m[2 * j_] = _mm_set_epi32((int)p_[3 * (stride)], (int)p_[2 * (stride)],         \
                                      (int)p_[stride], (int)p_[0]);                         \
            m[2 * j_ + 1] = _mm_set_epi32((int)p_[7 * (stride)], (int)p_[6 * (stride)],     \
                                          (int)p_[5 * (stride)], (int)p_[4 * (stride)]);    \
        }                                                                                   \
    } while (0)

static inline void lane_state(uint32_t state[8][LABELER_LANES], uint32_t s, uint32_t out[8]) {
    for (int i = 0; i < 8; i++) out[i] = state[i][s];
}

static inline void set_lane_state(uint32_t state[8][LABELER_LANES], uint32_t s,
                                  const uint32_t in[8]) {
    for (int i = 0; i < 8; i++) state[i][s] = in[i];
}

/* Lockstep lanes two at a time through the interleaved SHA-NI rounds (a lone last lane
 * alone): the batch kernel where there is no AVX-512. */
SHANI void labeler_lanes_shani(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                               uint32_t stride, uint32_t lanes, size_t nblocks) {
    const uint32_t *k = labeler_sha256_k;
    uint32_t s = 0;
    for (; s + 1 < lanes; s += 2) {
        uint32_t sta[8], stb[8];
        __m128i abef_a, cdgh_a, abef_b, cdgh_b, ma[4], mb[4];
        lane_state(state, s, sta);
        lane_state(state, s + 1, stb);
        LOAD_STATE(sta, abef_a, cdgh_a);
        LOAD_STATE(stb, abef_b, cdgh_b);
        for (size_t b = 0; b < nblocks; b++) {
            const __m128i abef_a0 = abef_a, cdgh_a0 = cdgh_a, abef_b0 = abef_b, cdgh_b0 = cdgh_b;
            LOAD_LANE(ma, pieces[2 * b], pieces[2 * b + 1], stride, s);
            LOAD_LANE(mb, pieces[2 * b], pieces[2 * b + 1], stride, s + 1);
#define TWO(i)                                                                              \
    ROUNDS4(i, ma, abef_a, cdgh_a);                                                         \
    ROUNDS4(i, mb, abef_b, cdgh_b)
            ROUNDS64(TWO);
#undef TWO
            abef_a = _mm_add_epi32(abef_a, abef_a0);
            cdgh_a = _mm_add_epi32(cdgh_a, cdgh_a0);
            abef_b = _mm_add_epi32(abef_b, abef_b0);
            cdgh_b = _mm_add_epi32(cdgh_b, cdgh_b0);
        }
        STORE_STATE(sta, abef_a, cdgh_a);
        STORE_STATE(stb, abef_b, cdgh_b);
        set_lane_state(state, s, sta);
        set_lane_state(state, s + 1, stb);
    }
    if (s < lanes) {
        uint32_t st[8];
        __m128i abef, cdgh, m[4];
        lane_state(state, s, st);
        LOAD_STATE(st, abef, cdgh);
        for (size_t b = 0; b < nblocks; b++) {
            const __m128i abef0 = abef, cdgh0 = cdgh;
            LOAD_LANE(m, pieces[2 * b], pieces[2 * b + 1], stride, s);
#define ONE(i) ROUNDS4(i, m, abef, cdgh)
            ROUNDS64(ONE);
#undef ONE
            abef = _mm_add_epi32(abef, abef0);
            cdgh = _mm_add_epi32(cdgh, cdgh0);
        }
        STORE_STATE(st, abef, cdgh);
        set_lane_state(state, s, st);
    }
}
#else
/* ISO C forbids an empty translation unit. */
typedef int labeler_no_shani;
#endif
