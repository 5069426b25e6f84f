/*
 * The CPU's multi-stream SHA-256 limit, for bench_labeler.py: compression blocks per
 * second of thread CPU time on one core, with the message already in registers' reach
 * (L1, in the layout each kernel wants), so nothing but the hash is measured.
 *
 *   cc -O3 -march=native -o sha256_streams sha256_streams.c && ./sha256_streams [seconds]
 *
 * Prints one JSON object: {"shani_x1": blocks/s, "shani_x2": ..., "avx512_x16": ...}
 * (a kernel this CPU lacks is left out). Each kernel chains its blocks per stream (the
 * state feeds the next block, as the 20 blocks of a label do) and is checked against a
 * portable C compression first: a wrong kernel prints an error and exits 1.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
static const uint32_t IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress_c(uint32_t s[8], const uint32_t m[16]) {
    uint32_t w[64], v[8];
    memcpy(w, m, 64);
    for (int i = 16; i < 64; i++)
        w[i] = w[i - 16] + (ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7] +
               (ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10));
    memcpy(v, s, 32);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + K256[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 28);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) s[i] += v[i];
}

/* ---- SHA-NI: one stream, or two interleaved (state as ABEF/CDGH) ---- */
#define SHANI __attribute__((target("sha,sse4.1")))
#define R4(i, m, abef, cdgh)                                                                 \
    do {                                                                                     \
        if ((i) >= 4)                                                                        \
            m[(i) & 3] = _mm_sha256msg2_epu32(                                               \
                _mm_add_epi32(_mm_sha256msg1_epu32(m[(i) & 3], m[((i) + 1) & 3]),            \
                              _mm_alignr_epi8(m[((i) + 3) & 3], m[((i) + 2) & 3], 4)),       \
                m[((i) + 3) & 3]);                                                           \
        __m128i wk = _mm_add_epi32(m[(i) & 3], _mm_loadu_si128((const __m128i *)K256 + (i))); \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);                                        \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0e));               \
    } while (0)

SHANI static void shani_chain(int streams, uint32_t st[2][8], const uint32_t m[16], long blocks) {
    __m128i abef[2], cdgh[2];
    for (int s = 0; s < streams; s++) { /* any fixed bijection of the state is fine here */
        abef[s] = _mm_loadu_si128((const __m128i *)st[s]);
        cdgh[s] = _mm_loadu_si128((const __m128i *)st[s] + 1);
    }
    for (long b = 0; b < blocks; b++) {
        __m128i ma[4], mb[4], a0 = abef[0], c0 = cdgh[0], a1 = abef[1], c1 = cdgh[1];
        for (int i = 0; i < 4; i++) ma[i] = mb[i] = _mm_loadu_si128((const __m128i *)m + i);
        if (streams == 2) {
#define TWO(i)                                                                               \
    R4(i, ma, abef[0], cdgh[0]);                                                             \
    R4(i, mb, abef[1], cdgh[1])
            TWO(0); TWO(1); TWO(2); TWO(3); TWO(4); TWO(5); TWO(6); TWO(7);
            TWO(8); TWO(9); TWO(10); TWO(11); TWO(12); TWO(13); TWO(14); TWO(15);
            abef[1] = _mm_add_epi32(abef[1], a1);
            cdgh[1] = _mm_add_epi32(cdgh[1], c1);
        } else {
#define ONE(i) R4(i, ma, abef[0], cdgh[0])
            ONE(0); ONE(1); ONE(2); ONE(3); ONE(4); ONE(5); ONE(6); ONE(7);
            ONE(8); ONE(9); ONE(10); ONE(11); ONE(12); ONE(13); ONE(14); ONE(15);
        }
        abef[0] = _mm_add_epi32(abef[0], a0);
        cdgh[0] = _mm_add_epi32(cdgh[0], c0);
    }
    for (int s = 0; s < streams; s++) {
        _mm_storeu_si128((__m128i *)st[s], abef[s]);
        _mm_storeu_si128((__m128i *)st[s] + 1, cdgh[s]);
    }
}

/* ---- AVX-512: 16 lanes, lane layout (word i of every stream in one vector) ---- */
#define AVX512 __attribute__((target("avx512f")))
#define ROR(x, n) _mm512_ror_epi32(x, n)
#define X3(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0x96)
#define ADD(a, b) _mm512_add_epi32(a, b)
#define RND(a, b, c, d, e, f, g, h, i)                                                       \
    do {                                                                                     \
        if ((i) >= 16) {                                                                     \
            __m512i x = w[((i) + 1) & 15], y = w[((i) + 14) & 15];                          \
            w[(i) & 15] = ADD(ADD(w[(i) & 15], X3(ROR(x, 7), ROR(x, 18), _mm512_srli_epi32(x, 3))), \
                              ADD(w[((i) + 9) & 15],                                         \
                                  X3(ROR(y, 17), ROR(y, 19), _mm512_srli_epi32(y, 10))));    \
        }                                                                                    \
        __m512i t1 = ADD(ADD(h, X3(ROR(e, 6), ROR(e, 11), ROR(e, 25))),                      \
                         ADD(ADD(_mm512_ternarylogic_epi32(e, f, g, 0xca),                   \
                                 _mm512_set1_epi32((int)K256[i])), w[(i) & 15]));            \
        d = ADD(d, t1);                                                                      \
        h = ADD(t1, ADD(X3(ROR(a, 2), ROR(a, 13), ROR(a, 22)),                               \
                        _mm512_ternarylogic_epi32(a, b, c, 0xe8)));                          \
    } while (0)
#define RND8(i)                                                                              \
    RND(a, b, c, d, e, f, g, h, (i));                                                        \
    RND(h, a, b, c, d, e, f, g, (i) + 1);                                                    \
    RND(g, h, a, b, c, d, e, f, (i) + 2);                                                    \
    RND(f, g, h, a, b, c, d, e, (i) + 3);                                                    \
    RND(e, f, g, h, a, b, c, d, (i) + 4);                                                    \
    RND(d, e, f, g, h, a, b, c, (i) + 5);                                                    \
    RND(c, d, e, f, g, h, a, b, (i) + 6);                                                    \
    RND(b, c, d, e, f, g, h, a, (i) + 7)

AVX512 static void avx512_chain(uint32_t st[8][16], const uint32_t m[16][16], long blocks) {
    __m512i s[8];
    for (int i = 0; i < 8; i++) s[i] = _mm512_loadu_si512(st[i]);
    for (long n = 0; n < blocks; n++) {
        __m512i w[16];
        for (int i = 0; i < 16; i++) w[i] = _mm512_loadu_si512(m[i]);
        __m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
        RND8(0); RND8(8); RND8(16); RND8(24); RND8(32); RND8(40); RND8(48); RND8(56);
        s[0] = ADD(s[0], a); s[1] = ADD(s[1], b); s[2] = ADD(s[2], c); s[3] = ADD(s[3], d);
        s[4] = ADD(s[4], e); s[5] = ADD(s[5], f); s[6] = ADD(s[6], g); s[7] = ADD(s[7], h);
    }
    for (int i = 0; i < 8; i++) _mm512_storeu_si512(st[i], s[i]);
    _mm256_zeroupper();
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 16 lanes against the C compression, 3 chained blocks. */
static int avx512_ok(void) {
    uint32_t st[8][16], m[16][16], want[8];
    for (int i = 0; i < 16; i++)
        for (int l = 0; l < 16; l++) m[i][l] = 0x9e3779b9u * (uint32_t)(i * 16 + l + 1);
    for (int w = 0; w < 8; w++)
        for (int l = 0; l < 16; l++) st[w][l] = IV[w];
    avx512_chain(st, m, 3);
    for (int l = 0; l < 16; l++) {
        uint32_t msg[16];
        memcpy(want, IV, 32);
        for (int i = 0; i < 16; i++) msg[i] = m[i][l];
        for (int b = 0; b < 3; b++) compress_c(want, msg);
        for (int w = 0; w < 8; w++)
            if (st[w][l] != want[w]) return 0;
    }
    return 1;
}

/* The SHA-NI state order: ABEF and CDGH, as the rounds instruction keeps them. */
static int shani_ok(void) {
    uint32_t m[16], want[8], st[2][8];
    for (int i = 0; i < 16; i++) m[i] = 0x01234567u * (uint32_t)(i + 3);
    memcpy(want, IV, 32);
    compress_c(want, m);
    compress_c(want, m);
    for (int s = 0; s < 2; s++) {
        const uint32_t abef[4] = {IV[5], IV[4], IV[1], IV[0]}, cdgh[4] = {IV[7], IV[6], IV[3], IV[2]};
        memcpy(st[s], abef, 16);
        memcpy(st[s] + 4, cdgh, 16);
    }
    /* message words lane order: m[0] in lane 0 */
    shani_chain(2, st, m, 2);
    for (int s = 0; s < 2; s++) {
        const uint32_t got[8] = {st[s][3], st[s][2], st[s][7], st[s][6],
                                 st[s][1], st[s][0], st[s][5], st[s][4]};
        if (memcmp(got, want, 32) != 0) return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    __builtin_cpu_init();
    int sha = __builtin_cpu_supports("sha"), avx = __builtin_cpu_supports("avx512f");
    if ((sha && !shani_ok()) || (avx && !avx512_ok())) {
        fprintf(stderr, "sha256_streams: a kernel gives wrong digests\n");
        return 1;
    }
    static uint32_t st16[8][16], m16[16][16], st[2][8], m[16];
    const long chunk = 20000;
    printf("{");
    const char *sep = "";
    for (int k = 0; k < 3; k++) {
        if ((k < 2 && !sha) || (k == 2 && !avx)) continue;
        long blocks = 0;
        double start = cpu_now(), now;
        do {
            if (k == 2)
                avx512_chain(st16, (const uint32_t(*)[16])m16, chunk);
            else
                shani_chain(k + 1, st, m, chunk);
            blocks += chunk * (k == 2 ? 16 : k + 1);
        } while ((now = cpu_now()) - start < seconds);
        static const char *names[3] = {"shani_x1", "shani_x2", "avx512_x16"};
        printf("%s\"%s\": %.0f", sep, names[k], (double)blocks / (now - start));
        sep = ", ";
    }
    printf("}\n");
    return 0;
}
