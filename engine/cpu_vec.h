/* 16-lane fp32 vectors for the C kernels (GCC/clang vector extensions: a
 * zmm, two ymm or plain code, whatever the target), with the few helpers that
 * several kernels share. Included by cpu_fused.c and cpu_attention.c;
 * cpu_rows.py keys the compiled library on this file too. */
#ifndef TEALTAB_CPU_VEC_H
#define TEALTAB_CPU_VEC_H

#include <stdint.h>

typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

/* Lanes of a where mask (a comparison's all-ones lanes), else of b. */
static inline vf16 select16(vi16 mask, vf16 a, vf16 b) {
    vi16 ai, bi;
    __builtin_memcpy(&ai, &a, sizeof ai);
    __builtin_memcpy(&bi, &b, sizeof bi);
    ai = (ai & mask) | (bi & ~mask);
    __builtin_memcpy(&a, &ai, sizeof a);
    return a;
}

/* Lanes of a where a > b, else of b (vmaxps; a NaN in a gives b, one in b stays). */
static inline vf16 max16(vf16 a, vf16 b) { return select16(a > b, a, b); }

/* exp(y) for y <= 0; below -87 it gives exp(-87) ~ 1.6e-38 instead (a sum of
 * 2^18 such terms stays below 1e-32, nothing beside the max's own 1). NaN
 * stays NaN. */
static inline vf16 exp_nonpositive(vf16 y) {
    const vf16 zero = {0};
    y = max16(zero - 87.0f, y); /* keeps 2^n a normal float below; max16(c, NaN) is NaN */
    const vf16 shifted = y * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23 + round(y / ln2) */
    const vf16 n = shifted - 12582912.0f;
    const vf16 r = (y - n * 0.693359375f) + n * 2.12194440e-4f; /* y - n ln2, Cody-Waite */
    vf16 p = zero + 1.0f / 720.0f; /* Taylor to r^6: |r| < 0.35, relative error < 1.3e-7 */
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi16 bits; /* the low mantissa bits of `shifted` hold n: 2^n's exponent field is n + 127 */
    __builtin_memcpy(&bits, &shifted, sizeof bits);
    bits = (bits - 0x4B400000 + 127) << 23;
    vf16 two_n;
    __builtin_memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

/* The lanes' sum in a fixed order (a tree over halves). */
static inline float hsum16(vf16 a) {
    float s8[8], s4[4];
    for (int l = 0; l < 8; ++l) s8[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static inline vf16 load16(const float *p) {
    vf16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void store16(float *p, vf16 v) { __builtin_memcpy(p, &v, sizeof v); }

/* 8 floats into lanes 0-7 (8-15 zero), and lanes 0-7 back: rows whose length is 8 past a multiple of 16. */
static inline vf16 load8z(const float *p) {
    vf16 v = {0};
    __builtin_memcpy(&v, p, 8 * sizeof(float));
    return v;
}

static inline void store8(float *p, vf16 v) { __builtin_memcpy(p, &v, 8 * sizeof(float)); }

#endif
