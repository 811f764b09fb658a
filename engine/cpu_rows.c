/* A few fp32 rows times a bf16 weight matrix, reading the weight once.
 *
 *   out[j * ld_out + o] = sum_k x[j * d + k] * float(w[o * d + k])
 *   for j < n (1..8) and o in [o_begin, o_end)
 *
 * Decoding n candidates is memory-bound: every weight is used by n rows, so
 * each bf16 weight element is loaded once, widened to fp32 in a register (a
 * bf16 is the top half of an fp32) and multiplied into n accumulators.
 * With AVX2 + FMA eight weights go per instruction; elsewhere the plain loop
 * below is what the compiler vectorizes. Built and loaded by cpu_rows.py.
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* N rows, one weight row at a time: N accumulators + the widened weights +
 * one x vector fit in the 16 ymm registers for N <= 8. (Several weight rows
 * per pass measured slower on the LM head: more concurrent streams from
 * memory for the same bytes.) */
#define DEFINE_ROWS(N)                                                                            \
    static void rows_##N(const float *x, int64_t d, const uint16_t *w, int64_t o_begin,          \
                         int64_t o_end, float *out, int64_t ld_out) {                            \
        for (int64_t o = o_begin; o < o_end; ++o) {                                               \
            const uint16_t *wr = w + o * d;                                                       \
            __m256 acc[N];                                                                        \
            for (int j = 0; j < N; ++j) acc[j] = _mm256_setzero_ps();                            \
            int64_t k = 0;                                                                        \
            for (; k + 8 <= d; k += 8) {                                                          \
                __m128i h = _mm_loadu_si128((const __m128i *)(wr + k));                           \
                __m256 wf = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); \
                for (int j = 0; j < N; ++j)                                                       \
                    acc[j] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + j * d + k), acc[j]);        \
            }                                                                                     \
            for (int j = 0; j < N; ++j) {                                                         \
                float s = hsum(acc[j]);                                                           \
                for (int64_t t = k; t < d; ++t) s += widen(wr[t]) * x[j * d + t];                 \
                out[j * ld_out + o] = s;                                                          \
            }                                                                                     \
        }                                                                                         \
    }

#else

static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define LANES 8
#define DEFINE_ROWS(N)                                                                            \
    static void rows_##N(const float *x, int64_t d, const uint16_t *w, int64_t o_begin,          \
                         int64_t o_end, float *out, int64_t ld_out) {                            \
        for (int64_t o = o_begin; o < o_end; ++o) {                                               \
            const uint16_t *wr = w + o * d;                                                       \
            float acc[N][LANES];                                                                  \
            memset(acc, 0, sizeof acc);                                                           \
            int64_t k = 0;                                                                        \
            for (; k + LANES <= d; k += LANES) {                                                  \
                float wf[LANES];                                                                  \
                for (int l = 0; l < LANES; ++l) wf[l] = widen(wr[k + l]);                         \
                for (int j = 0; j < N; ++j)                                                       \
                    for (int l = 0; l < LANES; ++l) acc[j][l] += wf[l] * x[j * d + k + l];        \
            }                                                                                     \
            for (int j = 0; j < N; ++j) {                                                         \
                float s = 0.f;                                                                    \
                for (int l = 0; l < LANES; ++l) s += acc[j][l];                                   \
                for (int64_t t = k; t < d; ++t) s += widen(wr[t]) * x[j * d + t];                 \
                out[j * ld_out + o] = s;                                                          \
            }                                                                                     \
        }                                                                                         \
    }

#endif

DEFINE_ROWS(1)
DEFINE_ROWS(2)
DEFINE_ROWS(3)
DEFINE_ROWS(4)
DEFINE_ROWS(5)
DEFINE_ROWS(6)
DEFINE_ROWS(7)
DEFINE_ROWS(8)

/* Returns 0, or -1 for an unsupported row count. */
int tealtab_rows_bf16(const float *x, int64_t n, int64_t d, const uint16_t *w, int64_t o_begin,
                      int64_t o_end, float *out, int64_t ld_out) {
    switch (n) {
    case 1: rows_1(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 2: rows_2(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 3: rows_3(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 4: rows_4(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 5: rows_5(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 6: rows_6(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 7: rows_7(x, d, w, o_begin, o_end, out, ld_out); return 0;
    case 8: rows_8(x, d, w, o_begin, o_end, out, ld_out); return 0;
    default: return -1;
    }
}

/* Which code path this build took (reported in the log and by tests). */
const char *tealtab_rows_isa(void) {
#if defined(__AVX2__) && defined(__FMA__)
    return "avx2+fma";
#else
    return "portable";
#endif
}
