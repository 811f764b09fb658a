/* A few fp32 rows times a bf16 weight matrix packed in blocks of 16 outputs.
 *
 *   out[j * ld_out + o] = sum_k x[j * d + k] * float(W[o][k])
 *   for j < n (1..8) and o in blocks [b_begin, b_end) (16 outputs each), o < n_out
 *
 * Layout (cpu_rows.pack): block b holds W's rows 16b .. 16b+15 transposed,
 * [d][16] bf16, so one 32-byte load at k brings the weights of 16 outputs.
 * Within the 16, the order is 0-3, 8-11, 4-7, 12-15: AVX2's unpacklo/hi
 * work per 128-bit lane, and interleaving zeros below those words gives the
 * fp32 weights of outputs 0-7 and 8-15 in order (a bf16 is the top half of
 * an fp32) - two instructions, no horizontal sums at the end.
 *
 * Each output is one accumulator lane summed over k = 0 .. d-1 in order, so
 * the result of a row does not depend on how many rows come with it, on the
 * grouping below, or on how blocks are split over threads.
 *
 * Decoding is memory-bound at one row and compute-bound at eight on small
 * CPUs: each block's weights are loaded once per group of rows, and a group
 * keeps up to 12 accumulators + 2 weight vectors + 1 broadcast x in the 16
 * ymm registers. Built and loaded by cpu_rows.py.
 */
#include <stdint.h>
#include <string.h>

#define BLOCK 16

static inline void store_lanes(float *dst, const float *src, int64_t o, int64_t n_out) {
    for (int l = 0; l < 8 && o + l < n_out; ++l) dst[o + l] = src[l];
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* G rows x NB consecutive blocks (2*NB accumulators per row). Loops over
 * compile-time bounds are unrolled so the accumulators stay in registers. */
#define DEFINE_GROUP(G, NB)                                                                         \
    static void group_##G##_##NB(const float *x, int64_t d, const uint16_t *p, float *out,          \
                                 int64_t ld, int64_t o0, int64_t n_out) {                           \
        __m256 acc[G][2 * NB];                                                                      \
        _Pragma("GCC unroll 8") for (int j = 0; j < G; ++j)                                         \
            _Pragma("GCC unroll 8") for (int b = 0; b < 2 * NB; ++b) acc[j][b] = _mm256_setzero_ps(); \
        const __m256i zero = _mm256_setzero_si256();                                                \
        for (int64_t k = 0; k < d; ++k) {                                                           \
            __m256 w[2 * NB];                                                                       \
            _Pragma("GCC unroll 2") for (int b = 0; b < NB; ++b) {                                  \
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + ((int64_t)b * d + k) * BLOCK)); \
                w[2 * b] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));                     \
                w[2 * b + 1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));                 \
            }                                                                                       \
            _Pragma("GCC unroll 8") for (int j = 0; j < G; ++j) {                                   \
                __m256 xj = _mm256_broadcast_ss(x + j * d + k);                                     \
                _Pragma("GCC unroll 8") for (int b = 0; b < 2 * NB; ++b)                            \
                    acc[j][b] = _mm256_fmadd_ps(w[b], xj, acc[j][b]);                               \
            }                                                                                       \
        }                                                                                           \
        _Pragma("GCC unroll 8") for (int j = 0; j < G; ++j)                                         \
            _Pragma("GCC unroll 8") for (int b = 0; b < 2 * NB; ++b) {                              \
                int64_t o = o0 + 8 * b;                                                             \
                if (o + 8 <= n_out) {                                                               \
                    _mm256_storeu_ps(out + j * ld + o, acc[j][b]);                                  \
                } else {                                                                            \
                    float t[8];                                                                     \
                    _mm256_storeu_ps(t, acc[j][b]);                                                 \
                    store_lanes(out + j * ld, t, o, n_out);                                         \
                }                                                                                   \
            }                                                                                       \
    }

#else

/* The same order of operations in plain C (the compiler vectorizes it). */
#define DEFINE_GROUP(G, NB)                                                                         \
    static void group_##G##_##NB(const float *x, int64_t d, const uint16_t *p, float *out,          \
                                 int64_t ld, int64_t o0, int64_t n_out) {                           \
        static const int lane_of[BLOCK] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};   \
        float acc[G][NB * BLOCK];                                                                   \
        memset(acc, 0, sizeof acc);                                                                 \
        for (int64_t k = 0; k < d; ++k)                                                             \
            for (int b = 0; b < NB; ++b) {                                                          \
                const uint16_t *pk = p + ((int64_t)b * d + k) * BLOCK;                              \
                float w[BLOCK];                                                                     \
                for (int s = 0; s < BLOCK; ++s) {                                                   \
                    uint32_t u = (uint32_t)pk[s] << 16;                                             \
                    memcpy(&w[lane_of[s]], &u, 4);                                                  \
                }                                                                                   \
                for (int j = 0; j < G; ++j)                                                         \
                    for (int l = 0; l < BLOCK; ++l) acc[j][b * BLOCK + l] += w[l] * x[j * d + k];   \
            }                                                                                       \
        for (int j = 0; j < G; ++j)                                                                 \
            for (int b = 0; b < 2 * NB; ++b) store_lanes(out + j * ld, &acc[j][8 * b], o0 + 8 * b, n_out); \
    }

#endif

DEFINE_GROUP(1, 1)
DEFINE_GROUP(2, 1)
DEFINE_GROUP(3, 1)
DEFINE_GROUP(4, 1)
DEFINE_GROUP(6, 1)
DEFINE_GROUP(1, 2)
DEFINE_GROUP(2, 2)

typedef void (*group_fn)(const float *, int64_t, const uint16_t *, float *, int64_t, int64_t, int64_t);

static group_fn one_block(int g) {
    switch (g) {
    case 1: return group_1_1;
    case 2: return group_2_1;
    case 3: return group_3_1;
    case 4: return group_4_1;
    default: return group_6_1;
    }
}

/* How n rows split into groups over a block (each group re-reads the block,
 * from L1 after the first). */
static const int plans[9][3] = {{0}, {1}, {2}, {3}, {4}, {3, 2}, {6}, {4, 3}, {6, 2}};

/* Returns 0, or -1 for an unsupported row count. */
int tealtab_rows_packed(const float *x, int64_t n, int64_t d, const uint16_t *p, int64_t b_begin,
                        int64_t b_end, float *out, int64_t ld_out, int64_t n_out) {
    if (n < 1 || n > 8) return -1;
    const int64_t block_elems = d * BLOCK;
    int64_t b = b_begin;
    if (n <= 2) { /* one or two rows: two blocks per pass, for enough independent FMAs */
        group_fn two = n == 1 ? group_1_2 : group_2_2;
        for (; b + 2 <= b_end; b += 2) two(x, d, p + b * block_elems, out, ld_out, b * BLOCK, n_out);
    }
    for (; b < b_end; ++b) {
        int64_t j = 0;
        for (int g = 0; g < 3 && plans[n][g]; ++g) {
            one_block(plans[n][g])(x + j * d, d, p + b * block_elems, out + j * ld_out, ld_out, b * BLOCK, n_out);
            j += plans[n][g];
        }
    }
    return 0;
}

/* Which code path this build took (reported in the log and by tests). */
const char *tealtab_rows_isa(void) {
#if defined(__AVX2__) && defined(__FMA__)
    return "avx2+fma";
#else
    return "portable";
#endif
}

/* cpu_pool.c, in the same library. */
typedef void (*tealtab_part_fn)(void *ctx, int64_t part);
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts);

#define MAX_SPLIT 64

typedef struct {
    const float *x;
    int64_t n, d;
    const uint16_t *p;
    float *out;
    int64_t ld_out, n_out;
    int64_t bounds[MAX_SPLIT + 1];
} rows_job;

static void rows_part(void *ctx, int64_t part) {
    const rows_job *j = (const rows_job *)ctx;
    tealtab_rows_packed(j->x, j->n, j->d, j->p, j->bounds[part], j->bounds[part + 1], j->out, j->ld_out, j->n_out);
}

/* The whole product, split into `parts` runs of whole block pairs (even
 * counts keep one- and two-row calls on their two-block path) over the
 * pool (cpu_pool.c). Returns 0, or -1 for an unsupported row count. */
int tealtab_rows_packed_par(const float *x, int64_t n, int64_t d, const uint16_t *p, int64_t blocks, float *out,
                            int64_t ld_out, int64_t n_out, int64_t parts) {
    if (n < 1 || n > 8) return -1;
    if (parts > MAX_SPLIT) parts = MAX_SPLIT;
    if (parts > (blocks + 1) / 2) parts = (blocks + 1) / 2;
    if (parts < 1) parts = 1;
    rows_job j = {x, n, d, p, out, ld_out, n_out, {0}};
    for (int64_t i = 0; i < parts; ++i) {
        int64_t b = 2 * (blocks * i / (2 * parts));
        j.bounds[i] = b < blocks ? b : blocks;
    }
    j.bounds[parts] = blocks;
    tealtab_parallel(rows_part, &j, parts);
    return 0;
}
