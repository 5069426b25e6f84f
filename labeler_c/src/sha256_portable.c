/* Scalar SHA-256 compression (FIPS 180-4): the fallback, and the oracle for SHA-NI. */
#include "labeler_internal.h"

/* 16-byte aligned: the SHA-NI path loads four round constants at a time. */
__attribute__((aligned(16))) const uint32_t labeler_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* One block of 16 message words (already big-endian decoded). */
static inline void compress_words(uint32_t state[8], uint32_t w[64]) {
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b_ = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                      labeler_sha256_k[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b_) ^ (a & c) ^ (b_ & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b_;
        b_ = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b_;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

void labeler_compress_portable(uint32_t state[8], const uint8_t *const *pieces, size_t nblocks) {
    uint32_t w[64];
    for (size_t b = 0; b < nblocks; b++) {
        for (int i = 0; i < 8; i++) {
            w[i] = labeler_load_be32(pieces[2 * b] + 4 * i);
            w[8 + i] = labeler_load_be32(pieces[2 * b + 1] + 4 * i);
        }
        compress_words(state, w);
    }
}

/* Lockstep lanes one after the other: the oracle for the vector kernels. */
void labeler_lanes_portable(uint32_t state[8][LABELER_LANES], const uint32_t *const *pieces,
                            uint32_t stride, uint32_t lanes, size_t nblocks) {
    for (uint32_t s = 0; s < lanes; s++) {
        uint32_t st[8], w[64];
        for (int i = 0; i < 8; i++) st[i] = state[i][s];
        for (size_t b = 0; b < nblocks; b++) {
            for (int i = 0; i < 8; i++) {
                w[i] = pieces[2 * b][(size_t)i * stride + s];
                w[8 + i] = pieces[2 * b + 1][(size_t)i * stride + s];
            }
            compress_words(st, w);
        }
        for (int i = 0; i < 8; i++) state[i][s] = st[i];
    }
}

/* Without SHA-NI there is no latency to hide: one stream after the other is as fast. */
void labeler_compress2_portable(uint32_t state_a[8], uint32_t state_b[8],
                                const uint8_t *const *pieces_a, const uint8_t *const *pieces_b,
                                size_t nblocks) {
    labeler_compress_portable(state_a, pieces_a, nblocks);
    labeler_compress_portable(state_b, pieces_b, nblocks);
}
