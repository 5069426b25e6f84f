/*
 * Choose the SHA-256 compression once: cpuid, then a known-answer self-test of the
 * candidate, then one function pointer that every hash in the library goes through.
 */
#include <string.h>

#include "labeler_internal.h"

#ifdef LABELER_HAVE_SHANI
#include <cpuid.h>
#endif

const uint32_t labeler_sha256_iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

const uint8_t labeler_pad_64[64] = {[0] = 0x80, [62] = 0x02};

/* Written by labeler_init, read at the start of every hashing call. */
static labeler_compress_fn g_compress = labeler_compress_portable;
static labeler_compress2_fn g_compress2 = labeler_compress2_portable;
static const char *g_name = "portable";

labeler_compress_fn labeler_compress_current(void) {
    return __atomic_load_n(&g_compress, __ATOMIC_ACQUIRE);
}

labeler_compress2_fn labeler_compress2_current(void) {
    return __atomic_load_n(&g_compress2, __ATOMIC_ACQUIRE);
}

const char *labeler_implementation(void) { return __atomic_load_n(&g_name, __ATOMIC_ACQUIRE); }

uint32_t labeler_available(void) {
    uint32_t mask = LABELER_IMPL_PORTABLE;
#ifdef LABELER_HAVE_SHANI
    unsigned int a, b, c, d;
    /* SHA (leaf 7 EBX bit 29) plus SSSE3 and SSE4.1 (leaf 1 ECX bits 9, 19) for the shuffles. */
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19)) &&
        __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)))
        mask |= LABELER_IMPL_SHANI;
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

int labeler_init(uint32_t allow_mask) {
    uint32_t usable = allow_mask & labeler_available();
    labeler_compress_fn f;
    labeler_compress2_fn f2;
    const char *name;
    int bit;
    if (!usable) return LABELER_E_UNAVAILABLE;
#ifdef LABELER_HAVE_SHANI
    if (usable & LABELER_IMPL_SHANI) {
        f = labeler_compress_shani;
        f2 = labeler_compress2_shani;
        name = "shani";
        bit = LABELER_IMPL_SHANI;
    } else
#endif
    {
        f = labeler_compress_portable;
        f2 = labeler_compress2_portable;
        name = "portable";
        bit = LABELER_IMPL_PORTABLE;
    }
    if (!self_test(f, f2)) return LABELER_E_SELFTEST;
    __atomic_store_n(&g_compress, f, __ATOMIC_RELEASE);
    __atomic_store_n(&g_compress2, f2, __ATOMIC_RELEASE);
    __atomic_store_n(&g_name, name, __ATOMIC_RELEASE);
    return bit;
}
