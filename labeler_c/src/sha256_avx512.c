/*
 * 16-lane SHA-256 compression with AVX-512F: lane s of every vector is stream s, so 16
 * independent messages (the sectors of a lockstep batch) hash in one instruction stream.
 * Message words load straight from the node-interleaved layers (word w of sector s at
 * piece[w * stride + s]): one masked load per word, no transpose, no byte swap.
 *
 * On an AVX-512 Xeon (Emerald Rapids cores) this ran at 58 cycles per lane-block against
 * 130 for one SHA-NI stream (tests/bench/sha256_streams.c measures both): ports 0 and 5
 * do all the work, and the rounds of 16 lanes never wait on latency. Ch and Maj are one vpternlogd each,
 * and so is each three-way xor of rotations. Built for every x86 target; dispatch.c calls
 * it only when cpuid and XCR0 say the registers exist. No SHA-NI in here: a legacy-SSE
 * instruction after dirty zmm uppers costs hundreds of cycles.
 */
#include "labeler_internal.h"

#ifdef LABELER_HAVE_AVX512
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

#define ROR(x, n) _mm512_ror_epi32(x, n)
#define XOR3(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0x96)
#define CH(e, f, g) _mm512_ternarylogic_epi32(e, f, g, 0xca)  /* e ? f : g */
#define MAJ(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0xe8) /* majority */
#define ADD(a, b) _mm512_add_epi32(a, b)

/* One round: h and d are updated, the caller rotates the names. */
#define ROUND(a, b, c, d, e, f, g, h, i)                                                    \
    do {                                                                                    \
        if ((i) >= 16) {                                                                    \
            const __m512i w15_ = w[((i) + 1) & 15], w2_ = w[((i) + 14) & 15];              \
            const __m512i s0_ = XOR3(ROR(w15_, 7), ROR(w15_, 18), _mm512_srli_epi32(w15_, 3)); \
            const __m512i s1_ = XOR3(ROR(w2_, 17), ROR(w2_, 19), _mm512_srli_epi32(w2_, 10)); \
            w[(i) & 15] = ADD(ADD(w[(i) & 15], s0_), ADD(w[((i) + 9) & 15], s1_));          \
        }                                                                                   \
        const __m512i t1_ = ADD(ADD(ADD(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))),        \
                                    ADD(CH(e, f, g), _mm512_set1_epi32((int)k[i]))),        \
                                w[(i) & 15]);                                               \
        d = ADD(d, t1_);                                                                    \
        h = ADD(t1_, ADD(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, b, c)));          \
    } while (0)

#define ROUNDS8(i)                                                                          \
    ROUND(a, b, c, d, e, f, g, h, (i) + 0);                                                 \
    ROUND(h, a, b, c, d, e, f, g, (i) + 1);                                                 \
    ROUND(g, h, a, b, c, d, e, f, (i) + 2);                                                 \
    ROUND(f, g, h, a, b, c, d, e, (i) + 3);                                                 \
    ROUND(e, f, g, h, a, b, c, d, (i) + 4);                                                 \
    ROUND(d, e, f, g, h, a, b, c, (i) + 5);                                                 \
    ROUND(c, d, e, f, g, h, a, b, (i) + 6);                                                 \
    ROUND(b, c, d, e, f, g, h, a, (i) + 7)

AVX512 void labeler_lanes_avx512(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                                 uint32_t stride, uint32_t lanes, size_t nblocks) {
    const uint32_t *k = labeler_sha256_k;
    const __mmask16 m = lanes >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << lanes) - 1);
    /* The state stays in memory between blocks: 16 message words and 8 working ones
     * already fill the 32 registers, and spilling in the rounds costs far more than 16
     * loads and 8 stores per block. */
    for (size_t n = 0; n < nblocks; n++) {
        __m512i w[16];
        const uint32_t *lo = pieces[2 * n], *hi = pieces[2 * n + 1];
        for (int i = 0; i < 8; i++) {
            w[i] = _mm512_maskz_loadu_epi32(m, lo + (size_t)i * stride);
            w[8 + i] = _mm512_maskz_loadu_epi32(m, hi + (size_t)i * stride);
        }
        __m512i a = _mm512_loadu_si512(state[0]), b = _mm512_loadu_si512(state[1]),
                c = _mm512_loadu_si512(state[2]), d = _mm512_loadu_si512(state[3]),
                e = _mm512_loadu_si512(state[4]), f = _mm512_loadu_si512(state[5]),
                g = _mm512_loadu_si512(state[6]), h = _mm512_loadu_si512(state[7]);
        ROUNDS8(0);
        ROUNDS8(8);
        ROUNDS8(16);
        ROUNDS8(24);
        ROUNDS8(32);
        ROUNDS8(40);
        ROUNDS8(48);
        ROUNDS8(56);
        _mm512_storeu_si512(state[0], ADD(a, _mm512_loadu_si512(state[0])));
        _mm512_storeu_si512(state[1], ADD(b, _mm512_loadu_si512(state[1])));
        _mm512_storeu_si512(state[2], ADD(c, _mm512_loadu_si512(state[2])));
        _mm512_storeu_si512(state[3], ADD(d, _mm512_loadu_si512(state[3])));
        _mm512_storeu_si512(state[4], ADD(e, _mm512_loadu_si512(state[4])));
        _mm512_storeu_si512(state[5], ADD(f, _mm512_loadu_si512(state[5])));
        _mm512_storeu_si512(state[6], ADD(g, _mm512_loadu_si512(state[6])));
        _mm512_storeu_si512(state[7], ADD(h, _mm512_loadu_si512(state[7])));
    }
    _mm256_zeroupper();
}
#else
/* ISO C forbids an empty translation unit. */
typedef int labeler_no_avx512;
#endif
