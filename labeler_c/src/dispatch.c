/*
 * Choose the SHA-256 compression once: cpuid, then a known-answer self-test of the
 * candidate, then one function pointer that every hash in the library goes through.
 * An implementation is a set: the single-stream and 2-stream compressions, and the
 * lockstep kernels for batches ("avx512" adds the 16-lane one to SHA-NI or portable C).
 */
#include <string.h>

#include "labeler_internal.h"

#if defined(LABELER_HAVE_SHANI) || defined(LABELER_HAVE_AVX512)
#include <cpuid.h>
#endif

/*
 * Batches below this many sectors use the narrow lockstep kernel (2-stream SHA-NI): the
 * 16-lane one costs the same per call whatever the lanes filled, and beats 2-way SHA-NI
 * only with enough of them: 10 and up here (128 KiB sectors, 11 layers, per CPU-second:
 * 8 sectors 1.7 M labels/s on 16 lanes against 2.0 M on 2-stream SHA-NI, 12 sectors 2.6 M).
 */
#define WIDE_MIN_LANES 10

const uint32_t labeler_sha256_iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

const uint8_t labeler_pad_64[64] = {[0] = 0x80, [62] = 0x02};

/* Written by labeler_init, read at the start of every hashing call. */
static labeler_compress_fn g_compress = labeler_compress_portable;
static labeler_compress2_fn g_compress2 = labeler_compress2_portable;
static const char *g_name = "portable";
static labeler_lanes_fn g_lanes = labeler_lanes_portable; /* narrow: any batch */
static labeler_lanes_fn g_wide = NULL;                    /* wide: WIDE_MIN_LANES and up */

labeler_compress_fn labeler_compress_current(void) {
    return __atomic_load_n(&g_compress, __ATOMIC_ACQUIRE);
}

labeler_compress2_fn labeler_compress2_current(void) {
    return __atomic_load_n(&g_compress2, __ATOMIC_ACQUIRE);
}

const char *labeler_implementation(void) { return __atomic_load_n(&g_name, __ATOMIC_ACQUIRE); }

labeler_lanes_fn labeler_lanes_for(uint32_t n) {
    labeler_lanes_fn wide = __atomic_load_n(&g_wide, __ATOMIC_ACQUIRE);
    if (wide && n >= WIDE_MIN_LANES) return wide;
    return __atomic_load_n(&g_lanes, __ATOMIC_ACQUIRE);
}

const char *labeler_lanes_implementation(uint32_t n) {
    labeler_lanes_fn f = labeler_lanes_for(n);
#ifdef LABELER_HAVE_AVX512
    if (f == labeler_lanes_avx512) return "avx512x16";
#endif
#ifdef LABELER_HAVE_SHANI
    if (f == labeler_lanes_shani) return "shani-x2";
#endif
    return "portable";
}

#ifdef LABELER_HAVE_AVX512
/* AVX-512F, and the OS saves opmask and zmm state (XCR0 bits 1, 2, 5, 6, 7). */
static int have_avx512(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) return 0;
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6) == 0xe6;
}
#endif

uint32_t labeler_available(void) {
    uint32_t mask = LABELER_IMPL_PORTABLE;
#ifdef LABELER_HAVE_SHANI
    unsigned int a, b, c, d;
    /* SHA (leaf 7 EBX bit 29) plus SSSE3 and SSE4.1 (leaf 1 ECX bits 9, 19) for the shuffles. */
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19)) &&
        __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)))
        mask |= LABELER_IMPL_SHANI;
#endif
#ifdef LABELER_HAVE_AVX512
    if (have_avx512()) mask |= LABELER_IMPL_AVX512;
#endif
    return mask;
}

void labeler_state_bytes(const uint32_t state[8], uint8_t out[32], int fr_safe) {
    for (int i = 0; i < 8; i++) labeler_store_be32(out + 4 * i, state[i]);
    if (fr_safe) out[31] &= 0x3f;
}

/* Full SHA-256 through the given compression; pieces are built per chunk of blocks. */
static void sha256_with(labeler_compress_fn f, const uint8_t *msg, size_t len, uint8_t out[32]) {
    enum { CHUNK = 64 };
    const uint8_t *pieces[2 * CHUNK];
    uint32_t st[8];
    memcpy(st, labeler_sha256_iv, sizeof st);
    size_t full = len / 64;
    for (size_t done = 0; done < full;) {
        size_t n = full - done < CHUNK ? full - done : CHUNK;
        for (size_t i = 0; i < 2 * n; i++) pieces[i] = msg + 64 * done + 32 * i;
        f(st, pieces, n);
        done += n;
    }
    uint8_t tail[128] = {0};
    size_t rest = len % 64;
    memcpy(tail, msg + 64 * full, rest);
    tail[rest] = 0x80;
    size_t tail_blocks = rest < 56 ? 1 : 2;
    labeler_store_be64(tail + 64 * tail_blocks - 8, (uint64_t)len * 8);
    const uint8_t *tp[4] = {tail, tail + 32, tail + 64, tail + 96};
    f(st, tp, tail_blocks);
    labeler_state_bytes(st, out, 0);
}

void labeler_sha256(const uint8_t *msg, size_t len, uint8_t out[32]) {
    sha256_with(labeler_compress_current(), msg, len, out);
}

/*
 * Known answers: "abc" and the two-block FIPS 180-4 message pin the compression itself;
 * a label-shaped 1,248-byte message (20 blocks, as every label hashes) must match the
 * portable path, which the same known answers pin, and so must both streams of the 2-way
 * compression on two different such messages.
 */
static int self_test(labeler_compress_fn f, labeler_compress2_fn f2) {
    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                    0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                    0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    static const uint8_t fips448[32] = {
        0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e, 0x60, 0x39,
        0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1};
    static const char msg448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uint8_t got[32], want[32], label[1248];

    sha256_with(f, (const uint8_t *)"abc", 3, got);
    if (memcmp(got, abc, 32) != 0) return 0;
    sha256_with(f, (const uint8_t *)msg448, sizeof msg448 - 1, got);
    if (memcmp(got, fips448, 32) != 0) return 0;
    for (size_t i = 0; i < sizeof label; i++) label[i] = (uint8_t)(7 * i + 1);
    sha256_with(f, label, sizeof label, got);
    sha256_with(labeler_compress_portable, label, sizeof label, want);
    if (memcmp(got, want, 32) != 0) return 0;

    /* 19 full blocks of each message, then compare with the one-stream states. */
    const uint8_t *pa[38], *pb[38];
    uint8_t other[sizeof label];
    for (size_t i = 0; i < sizeof other; i++) other[i] = (uint8_t)(3 * i + 5);
    for (int i = 0; i < 38; i++) pa[i] = label + 32 * i, pb[i] = other + 32 * i;
    uint32_t sa[8], sb[8], ra[8], rb[8];
    memcpy(sa, labeler_sha256_iv, sizeof sa);
    memcpy(sb, labeler_sha256_iv, sizeof sb);
    memcpy(ra, labeler_sha256_iv, sizeof ra);
    memcpy(rb, labeler_sha256_iv, sizeof rb);
    f2(sa, sb, pa, pb, 19);
    labeler_compress_portable(ra, pa, 19);
    labeler_compress_portable(rb, pb, 19);
    return memcmp(sa, ra, sizeof sa) == 0 && memcmp(sb, rb, sizeof sb) == 0;
}

/*
 * A lockstep kernel against the portable compression, lane by lane: 19 blocks of a
 * different message per lane in the node-interleaved layout, full (16 lanes) and partial
 * (5 lanes, whose neighbours must not leak in).
 */
static int lanes_self_test(labeler_lanes_fn f) {
    enum { K = LABELER_LANES, BLOCKS = 19 };
    static uint32_t words[2 * BLOCKS][8 * K];
    const uint32_t *pieces[2 * BLOCKS];
    for (int i = 0; i < 2 * BLOCKS; i++) {
        for (int j = 0; j < 8 * K; j++) words[i][j] = 0x9e3779b9u * (uint32_t)(i * 8 * K + j + 1);
        pieces[i] = words[i];
    }
    static const uint32_t counts[2] = {K, 5};
    for (int c = 0; c < 2; c++) {
        const uint32_t lanes = counts[c];
        uint32_t st[8][LABELER_LANES];
        for (int w = 0; w < 8; w++)
            for (int s = 0; s < K; s++) st[w][s] = labeler_sha256_iv[w];
        f(st, pieces, K, lanes, BLOCKS);
        for (uint32_t s = 0; s < lanes; s++) {
            uint8_t bytes[2 * BLOCKS][32];
            const uint8_t *bp[2 * BLOCKS];
            for (int i = 0; i < 2 * BLOCKS; i++) {
                for (int w = 0; w < 8; w++)
                    labeler_store_be32(bytes[i] + 4 * w, words[i][w * K + s]);
                bp[i] = bytes[i];
            }
            uint32_t want[8];
            memcpy(want, labeler_sha256_iv, sizeof want);
            labeler_compress_portable(want, bp, BLOCKS);
            for (int w = 0; w < 8; w++)
                if (st[w][s] != want[w]) return 0;
        }
    }
    return 1;
}

int labeler_init(uint32_t allow_mask) {
    uint32_t usable = allow_mask & labeler_available();
    labeler_compress_fn f;
    labeler_compress2_fn f2 = labeler_compress2_portable;
    labeler_lanes_fn lanes = labeler_lanes_portable, wide = NULL;
    const char *name = "portable";
    int bit = LABELER_IMPL_PORTABLE;
    if (!usable) return LABELER_E_UNAVAILABLE;
    f = labeler_compress_portable;
#ifdef LABELER_HAVE_SHANI
    /* avx512 brings no single-stream compression: its set takes SHA-NI where it runs. */
    uint32_t shani = usable & LABELER_IMPL_AVX512 ? labeler_available() : usable;
    if (shani & LABELER_IMPL_SHANI) {
        f = labeler_compress_shani;
        f2 = labeler_compress2_shani;
        lanes = labeler_lanes_shani;
        name = "shani";
        bit = LABELER_IMPL_SHANI;
    }
#endif
#ifdef LABELER_HAVE_AVX512
    if (usable & LABELER_IMPL_AVX512) {
        wide = labeler_lanes_avx512;
        name = "avx512";
        bit = LABELER_IMPL_AVX512;
    }
#endif
    if (!self_test(f, f2) || !lanes_self_test(lanes) || (wide && !lanes_self_test(wide)))
        return LABELER_E_SELFTEST;
    __atomic_store_n(&g_compress, f, __ATOMIC_RELEASE);
    __atomic_store_n(&g_compress2, f2, __ATOMIC_RELEASE);
    __atomic_store_n(&g_lanes, lanes, __ATOMIC_RELEASE);
    __atomic_store_n(&g_wide, wide, __ATOMIC_RELEASE);
    __atomic_store_n(&g_name, name, __ATOMIC_RELEASE);
    return bit;
}
