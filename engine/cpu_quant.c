/* A few fp32 rows times weights quantized in bitsandbytes' formats, read as
 * codes (no dequantized copy): int8 (per-output scale) and NF4 (a 16-entry
 * code table, one scale per 64 input channels of an output).
 *
 * Layer matrices, input-major (cpu_quant.py builds the layouts), dense or
 * TEAL activation-sparse with cpu_sparse.c's segments and active lists:
 *   int8: codes [d][blocks][16] int8, scale [blocks * 16]
 *         out[j][o] = scale[o] * sum over active k (ascending) of xm[j][k] * code[k][o]
 *   nf4:  codes [d][blocks][8]  (16 four-bit codes per channel and block),
 *         scales [d / 64][blocks * 16]
 *         out[j][o] = sum over 64-channel groups g of scales[g][o] * (sum over
 *         active k of g of xm[j][k] * table[code[k][o]])
 * LM head, output blocks (cpu_rows.c's layout, natural lane order): codes
 * [blocks][d][16] int8, scale [blocks * 16], dense.
 *
 * Bytes are the speed of a memory-bound decode step: int8 reads 1 byte a
 * weight, NF4 0.5 plus a scale per 64. Codes are widened in registers: int8
 * with a sign extension and an int -> float conversion, NF4 by a table lookup
 * of the 16 fp32 codes held in registers (AVX-512: one vpermps of a zmm;
 * AVX2: two 8-entry permutes and a blend on the code's bit 3). Each path is
 * written once over "v16", 16 fp32 lanes (one block of outputs): a zmm, a
 * pair of ymm, or a plain array. AVX-512 is used where the compiler targets
 * it: on the 2-core Xeon, over all Gemma-3-270M layers, it ran int8 1.2x
 * (one row) to 2x (8 rows) and NF4 2x faster than the AVX2 path (three
 * vector uops a block of 16 weights on two ports, against six on three).
 *
 * Each output of a row is one fp32 accumulator over the active channels in
 * ascending order (NF4: one per 64-channel group, then scaled and added to
 * the output in group order), so a row's result does not depend on the rows
 * that come with it (their union of active channels adds exact zeros), on the
 * tile shapes or on the split over threads.
 *
 * A tile is a group of rows x NB blocks of 16 outputs (one v16 accumulator
 * each, in registers); the active list is swept in chunks, each chunk over
 * all the tile's blocks, as cpu_sparse.c does (whose header says why). int8
 * chunks are I8_CHUNK active entries with the sums kept unscaled in out between
 * chunks; NF4 chunks are the active channels of one NF4_WINDOW-channel window
 * (fixed channel ranges, not list positions, so that the chunking is the
 * same for a row alone and among others), each chunk's sum scaled and added.
 * Built and loaded by cpu_rows.py with cpu_rows.c and cpu_sparse.c.
 */
#include <stdint.h>
#include <string.h>

#define BLOCK 16
#define GROUP 64 /* NF4 quantization block: input channels per scale */
/* Active entries per int8 chunk. All 18 Gemma-3-270M layers on the 2-core
 * Xeon: 16, 32 and 64 alike at 1-2 rows, 32 and 64 6-8 % faster than 16 at
 * 4-8 rows (fewer accumulator loads and stores per FMA). */
#define I8_CHUNK 32
/* NF4 chunk window in channels (divides GROUP): 16 a few % ahead of 32 and 64
 * at one row, 64 4 % ahead at 8 rows. A fixed window, not a per-call choice:
 * it decides the order of the sums, which must not depend on the rows. */
#define NF4_WINDOW 16
/* How far ahead in a channel's row a tile prefetches (bytes): 128-256 alike,
 * 512-1024 10-20 % slower (the rows are short: 640 bytes for wo and w2 in
 * int8), none 1.3-2x slower at one row. */
#define PF_AHEAD_BYTES 256
/* How much of the next chunk's channels is prefetched a pass ahead: 256
 * bytes 5-10 % faster at one row than none. */
#define NEXT_CHUNK_BYTES 256
/* LM head: prefetch each block's stream this far ahead, every 4 channels
 * (one line); about 5-10 % at one row, where two threads read ~25 GB/s. */
#define HEAD_PF 256
#define HEADER 4

/* cpu_sparse.c's scratch (filled by tealtab_sparse_prepare, same library);
 * this view must match cpu_sparse.c's view_of. */
typedef struct {
    int64_t n, d, n_seg, max_parts;
    int64_t *na, *bounds;
    int32_t *act;
    float *xc;
} scratch_view;

static scratch_view view_of(const void *scratch) {
    scratch_view v;
    int64_t *h = (int64_t *)scratch;
    v.n = h[0], v.d = h[1], v.n_seg = h[2], v.max_parts = h[3];
    v.na = h + HEADER;
    v.bounds = v.na + v.n_seg;
    v.act = (int32_t *)(v.bounds + v.max_parts + 1);
    int64_t act_len = v.n_seg * v.d;
    v.xc = (float *)(v.act + act_len + (act_len & 1));
    return v;
}

/* ---- 16 fp32 lanes (one block of outputs): zmm, two ymm, or plain C ---- */
#define INLINE static inline __attribute__((always_inline))

#if defined(__AVX512F__) && defined(__AVX512BW__) && !defined(TEALTAB_NO_AVX512)
#include <immintrin.h>
#define ISA "avx512"
#define WIDE_PLANS 1
typedef __m512 v16;
INLINE v16 v_zero(void) { return _mm512_setzero_ps(); }
INLINE v16 v_set1(float f) { return _mm512_set1_ps(f); }
INLINE v16 v_fma(v16 a, v16 b, v16 c) { return _mm512_fmadd_ps(a, b, c); }
INLINE v16 v_mul(v16 a, v16 b) { return _mm512_mul_ps(a, b); }
INLINE v16 v_load(const float *p) { return _mm512_loadu_ps(p); }
INLINE __mmask16 v_mask(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }
INLINE v16 v_load_n(const float *p, int64_t n) { return _mm512_maskz_loadu_ps(v_mask(n), p); }
INLINE void v_store_n(float *p, v16 v, int64_t n) { _mm512_mask_storeu_ps(p, v_mask(n), v); }
INLINE v16 v_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
INLINE v16 v_bf16(const uint16_t *p) { /* 16 bf16: the upper halves of fp32 */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
typedef struct { __m512 t; __m512i sh; } lut;
INLINE lut lut_of(const float *table) {
    lut l = {_mm512_loadu_ps(table), _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28)};
    return l;
}
/* The 8 bytes as one 64-bit word in every pair of lanes; lane 2m takes the
 * low half >> 4m, lane 2m+1 the high half >> 4m; vpermps reads the low 4 bits. */
INLINE v16 v_nf4(const uint8_t *p, lut l) {
    int64_t q;
    memcpy(&q, p, 8);
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi64(q), l.sh), l.t);
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ISA "avx2+fma"
typedef struct { __m256 a, b; } v16;
INLINE v16 v_zero(void) { v16 r = {_mm256_setzero_ps(), _mm256_setzero_ps()}; return r; }
INLINE v16 v_set1(float f) { v16 r = {_mm256_set1_ps(f), _mm256_set1_ps(f)}; return r; }
INLINE v16 v_fma(v16 x, v16 y, v16 z) {
    v16 r = {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)};
    return r;
}
INLINE v16 v_mul(v16 x, v16 y) { v16 r = {_mm256_mul_ps(x.a, y.a), _mm256_mul_ps(x.b, y.b)}; return r; }
INLINE v16 v_load(const float *p) { v16 r = {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; return r; }
INLINE v16 v_load_n(const float *p, int64_t n) {
    if (n >= 16) return v_load(p);
    float t[16] = {0};
    memcpy(t, p, 4 * (n > 0 ? n : 0));
    return v_load(t);
}
INLINE void v_store_n(float *p, v16 v, int64_t n) {
    if (n >= 16) {
        _mm256_storeu_ps(p, v.a), _mm256_storeu_ps(p + 8, v.b);
        return;
    }
    float t[16];
    _mm256_storeu_ps(t, v.a), _mm256_storeu_ps(t + 8, v.b);
    memcpy(p, t, 4 * (n > 0 ? n : 0));
}
INLINE v16 v_i8(const int8_t *p) {
    v16 r = {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p))),
             _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))))};
    return r;
}
INLINE __m256 bf16_8(const uint16_t *p) { /* 8 bf16 -> fp32: the bits moved to the top half */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
INLINE v16 v_bf16(const uint16_t *p) {
    v16 r = {bf16_8(p), bf16_8(p + 8)};
    return r;
}
typedef struct { __m256 lo, hi; __m256i sha, shb; } lut;
INLINE lut lut_of(const float *table) {
    lut l = {_mm256_loadu_ps(table), _mm256_loadu_ps(table + 8), _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12),
             _mm256_setr_epi32(16, 16, 20, 20, 24, 24, 28, 28)};
    return l;
}
/* permutevar8x32 reads an index's low 3 bits; bit 3, shifted to the sign,
 * picks the table's upper half. */
INLINE __m256 lookup8(__m256i i, lut l) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(l.lo, i), _mm256_permutevar8x32_ps(l.hi, i),
                            _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
}
INLINE v16 v_nf4(const uint8_t *p, lut l) {
    int64_t q;
    memcpy(&q, p, 8);
    __m256i w = _mm256_set1_epi64x(q);
    v16 r = {lookup8(_mm256_srlv_epi32(w, l.sha), l), lookup8(_mm256_srlv_epi32(w, l.shb), l)};
    return r;
}

#else
#define ISA "portable"
typedef struct { float f[16]; } v16;
#define LANES for (int l = 0; l < 16; ++l)
INLINE v16 v_zero(void) { v16 r; LANES r.f[l] = 0.0f; return r; }
INLINE v16 v_set1(float x) { v16 r; LANES r.f[l] = x; return r; }
INLINE v16 v_fma(v16 x, v16 y, v16 z) { LANES z.f[l] += x.f[l] * y.f[l]; return z; }
INLINE v16 v_mul(v16 x, v16 y) { LANES x.f[l] *= y.f[l]; return x; }
INLINE v16 v_load(const float *p) { v16 r; memcpy(r.f, p, 64); return r; }
INLINE v16 v_load_n(const float *p, int64_t n) { v16 r = v_zero(); memcpy(r.f, p, 4 * (n < 16 ? n : 16)); return r; }
INLINE void v_store_n(float *p, v16 v, int64_t n) { memcpy(p, v.f, 4 * (n < 16 ? n : 16)); }
INLINE v16 v_i8(const int8_t *p) { v16 r; LANES r.f[l] = (float)p[l]; return r; }
INLINE v16 v_bf16(const uint16_t *p) {
    v16 r;
    LANES {
        uint32_t u = (uint32_t)p[l] << 16;
        memcpy(&r.f[l], &u, 4);
    }
    return r;
}
typedef struct { float t[16]; } lut;
INLINE lut lut_of(const float *table) { lut r; memcpy(r.t, table, 64); return r; }
INLINE v16 v_nf4(const uint8_t *p, lut t) {
    /* Byte b < 4 holds outputs 4b (low nibble) and 4b + 2; byte 4 + b outputs 4b + 1 and 4b + 3. */
    v16 r;
    for (int b = 0; b < 4; ++b) {
        r.f[4 * b] = t.t[p[b] & 15], r.f[4 * b + 2] = t.t[p[b] >> 4];
        r.f[4 * b + 1] = t.t[p[4 + b] & 15], r.f[4 * b + 3] = t.t[p[4 + b] >> 4];
    }
    return r;
}
#endif

#define UNROLL _Pragma("GCC unroll 8")
/* Prefetch the lines of [p, p + bytes) (a tile's piece of a channel, ahead). */
#define PREFETCH(p, bytes) \
    UNROLL for (int c_ = 0; c_ < (bytes); c_ += 64) __builtin_prefetch((const char *)(p) + c_, 0, 3)
/* acc[j][b] += w[b] * X for G rows j and NB blocks b, where X (an expression in j)
 * is row j's input value for the channel whose weights w holds. */
#define ACC_ROWS(G, NB, acc, w, X)                                                      \
    UNROLL for (int j = 0; j < G; ++j) {                                                \
        const v16 xj = v_set1(X);                                                       \
        UNROLL for (int b = 0; b < NB; ++b) acc[j][b] = v_fma(w[b], xj, acc[j][b]);     \
    }

/* int8, input-major: G rows x NB blocks over kc active entries. The sums
 * start at zero (first) or from out, where the previous chunk left them
 * unscaled; the last chunk stores them times the scale. */
#define DEFINE_I8(G, NB)                                                                                    \
    static void i8_##G##_##NB(const float *xc, int64_t xs, const int32_t *act, int64_t kc,                  \
                              const int8_t *p, int64_t stride, const float *scale, float *out,              \
                              int64_t ld, int64_t o0, int64_t n_out, int first, int last) {                 \
        v16 acc[G][NB];                                                                                     \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b)                              \
            acc[j][b] = first ? v_zero() : v_load_n(out + j * ld + o0 + 16 * b, n_out - o0 - 16 * b);       \
        for (int64_t i = 0; i < kc; ++i) {                                                                  \
            const int8_t *pk = p + (int64_t)act[i] * stride;                                                \
            PREFETCH(pk + PF_AHEAD_BYTES, NB * 16);                                                         \
            v16 w[NB];                                                                                      \
            UNROLL for (int b = 0; b < NB; ++b) w[b] = v_i8(pk + 16 * b);                                   \
            ACC_ROWS(G, NB, acc, w, xc[i * xs + j]);                                                    \
        }                                                                                                   \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b) {                            \
            v16 r = last ? v_mul(acc[j][b], v_load(scale + o0 + 16 * b)) : acc[j][b];                       \
            v_store_n(out + j * ld + o0 + 16 * b, r, n_out - o0 - 16 * b);                                  \
        }                                                                                                   \
    }

/* NF4, input-major: G rows x NB blocks over the kc active channels of one
 * window; out = (first ? 0 : out) + sum * scale of the window's group. */
#define DEFINE_NF4(G, NB)                                                                                   \
    static void nf4_##G##_##NB(const float *xc, int64_t xs, const int32_t *act, int64_t kc,                 \
                               const uint8_t *p, int64_t stride, const float *sc, const float *table,       \
                               float *out, int64_t ld, int64_t o0, int64_t n_out, int first) {              \
        const lut t = lut_of(table);                                                                        \
        v16 acc[G][NB];                                                                                     \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b) acc[j][b] = v_zero();        \
        for (int64_t i = 0; i < kc; ++i) {                                                                  \
            const uint8_t *pk = p + (int64_t)act[i] * stride;                                               \
            PREFETCH(pk + PF_AHEAD_BYTES, NB * 8);                                                          \
            v16 w[NB];                                                                                      \
            UNROLL for (int b = 0; b < NB; ++b) w[b] = v_nf4(pk + 8 * b, t);                                \
            ACC_ROWS(G, NB, acc, w, xc[i * xs + j]);                                                    \
        }                                                                                                   \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b) {                            \
            int64_t o = o0 + 16 * b;                                                                        \
            v16 prev = first ? v_zero() : v_load_n(out + j * ld + o, n_out - o);                            \
            v_store_n(out + j * ld + o, v_fma(acc[j][b], v_load(sc + o), prev), n_out - o);                 \
        }                                                                                                   \
    }

/* int8 LM head, output blocks: G rows x NB blocks over all d channels; then,
 * where ol is given, the head's outlier columns (kept in bf16 beside the
 * codes, whose own entries there are 0): ol [blocks][k][16] from this tile's
 * first block, xc [G][k] the rows' values in those columns, added after the
 * scale: out = scale * (x . codes) + xc . outliers. */
#define DEFINE_HEAD(G, NB)                                                                                  \
    static void head_##G##_##NB(const float *x, int64_t d, const int8_t *p, const float *scale,             \
                                float *out, int64_t ld, int64_t o0, int64_t n_out, const uint16_t *ol,      \
                                const float *xc, int64_t k_ol) {                                            \
        v16 acc[G][NB];                                                                                     \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b) acc[j][b] = v_zero();        \
        for (int64_t k = 0; k < d; ++k) {                                                                   \
            v16 w[NB];                                                                                      \
            if ((k & 3) == 0)                                                                               \
                UNROLL for (int b = 0; b < NB; ++b)                                                         \
                    __builtin_prefetch(p + ((int64_t)b * d + k) * BLOCK + HEAD_PF, 0, 3);                   \
            UNROLL for (int b = 0; b < NB; ++b) w[b] = v_i8(p + ((int64_t)b * d + k) * BLOCK);              \
            ACC_ROWS(G, NB, acc, w, x[j * d + k]);                                                      \
        }                                                                                                   \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b)                              \
            acc[j][b] = v_mul(acc[j][b], v_load(scale + o0 + 16 * b));                                      \
        if (ol)                                                                                             \
            for (int64_t c = 0; c < k_ol; ++c) {                                                            \
                v16 w[NB];                                                                                  \
                UNROLL for (int b = 0; b < NB; ++b) w[b] = v_bf16(ol + ((int64_t)b * k_ol + c) * BLOCK);    \
                ACC_ROWS(G, NB, acc, w, xc[j * k_ol + c]);                                              \
            }                                                                                               \
        UNROLL for (int j = 0; j < G; ++j) UNROLL for (int b = 0; b < NB; ++b)                              \
            v_store_n(out + j * ld + o0 + 16 * b, acc[j][b], n_out - o0 - 16 * b);                          \
    }

#define DEFINE_ALL(G, NB) DEFINE_I8(G, NB) DEFINE_NF4(G, NB) DEFINE_HEAD(G, NB)

/* Tile plans: how n rows split into groups and how many blocks a tile takes
 * (a row's accumulators are NB v16). AVX-512 (32 registers) takes the n rows
 * as one group of up to 24 accumulators (8 rows: 3 blocks 4-8 % faster than
 * 2 on the head and the layers; one row: 8 blocks, two lines of int8 a
 * channel, ahead of 4 and 16); AVX2 (16 ymm, a v16 is two) cpu_rows.c's
 * groups of at most 6 rows over one block. A tile's blocks past the last
 * multiple of NB take single-block tiles. */
typedef struct { int nb, g[3]; } plan;
#ifdef WIDE_PLANS
static const plan plans[9] = {{0}, {8, {1}}, {8, {2}}, {4, {3}}, {4, {4}}, {4, {5}}, {4, {6}}, {3, {7}}, {3, {8}}};
#define TILES(X) X(1, 8) X(2, 8) X(3, 4) X(4, 4) X(5, 4) X(6, 4) X(7, 3) X(8, 3) \
                 X(1, 4) X(2, 4) X(3, 2) X(4, 2) \
                 X(1, 1) X(2, 1) X(3, 1) X(4, 1) X(5, 1) X(6, 1) X(7, 1) X(8, 1)
#else
static const plan plans[9] = {{0},        {4, {1}},    {2, {2}},    {1, {3}},   {1, {4}},
                              {1, {3, 2}}, {1, {6}}, {1, {4, 3}}, {1, {6, 2}}};
#define TILES(X) X(1, 4) X(2, 2) X(1, 1) X(2, 1) X(3, 1) X(4, 1) X(6, 1)
#endif
TILES(DEFINE_ALL)

typedef void (*i8_fn)(const float *, int64_t, const int32_t *, int64_t, const int8_t *, int64_t, const float *,
                      float *, int64_t, int64_t, int64_t, int, int);
typedef void (*nf4_fn)(const float *, int64_t, const int32_t *, int64_t, const uint8_t *, int64_t, const float *,
                       const float *, float *, int64_t, int64_t, int64_t, int);
typedef void (*head_fn)(const float *, int64_t, const int8_t *, const float *, float *, int64_t, int64_t, int64_t,
                        const uint16_t *, const float *, int64_t);
typedef struct { i8_fn i8; nf4_fn nf4; head_fn head; } tile;

#define TILE_CASE_(G, NB)                                                                     \
    if (g == G && nb == NB) {                                                                 \
        tile t = {i8_##G##_##NB, nf4_##G##_##NB, head_##G##_##NB};                            \
        return t;                                                                             \
    }
#define TILE_CASE(G, NB) TILE_CASE_(G, NB)
static tile tile_of(int g, int nb) {
    TILES(TILE_CASE)
    tile none = {0, 0, 0};
    return none;
}

/* n rows' groups with their wide and single-block tiles, looked up once per call. */
/* mid: half-width tiles (nb / 2 blocks, where defined) for the output-block
 * products' last blocks, which would otherwise go one block (one stream) at
 * a time: a 40-block matrix split over two threads leaves each four. */
typedef struct { int groups, nb, rows[3]; tile wide[3], mid[3], one[3]; } tiling;
static tiling tiling_of(int64_t n) {
    tiling t = {0, plans[n].nb, {0}, {{0}}, {{0}}, {{0}}};
    for (; t.groups < 3 && plans[n].g[t.groups]; ++t.groups) {
        t.rows[t.groups] = plans[n].g[t.groups];
        t.wide[t.groups] = tile_of(plans[n].g[t.groups], plans[n].nb);
        t.one[t.groups] = tile_of(plans[n].g[t.groups], 1);
        t.mid[t.groups] = tile_of(plans[n].g[t.groups], plans[n].nb / 2);
    }
    return t;
}

/* int8 layers: part `part` of tealtab_sparse_prepare's split. codes
 * [d][blocks][16], scale [blocks * 16]; out [n][ld_out], o < n_out written.
 * Returns 0, or -1 for a part out of range. */
int tealtab_i8_rows(const void *scratch, const int8_t *codes, const float *scale, const int64_t *seg_blocks,
                    int64_t part, float *out, int64_t ld_out, int64_t n_out) {
    scratch_view v = view_of(scratch);
    if (part < 0 || part >= v.max_parts) return -1;
    const int64_t n = v.n, d = v.d, stride = seg_blocks[v.n_seg] * BLOCK;
    const tiling tl = tiling_of(n);
    const int64_t b_begin = v.bounds[part], b_end = v.bounds[part + 1];
    for (int64_t s = 0; s < v.n_seg; ++s) {
        int64_t lo = seg_blocks[s] > b_begin ? seg_blocks[s] : b_begin;
        int64_t hi = seg_blocks[s + 1] < b_end ? seg_blocks[s + 1] : b_end;
        if (lo >= hi) continue;
        const int32_t *act = v.act + s * d;
        const float *xc = v.xc + s * d * n;
        const int64_t na = v.na[s];
        for (int64_t c = 0; c == 0 || c < na; c += I8_CHUNK) {
            const int64_t kc = na - c < I8_CHUNK ? na - c : I8_CHUNK;
            const int first = c == 0, last = c + I8_CHUNK >= na;
            /* The next chunk's first lines, a pass ahead (the tiles prefetch along their own). */
            const int64_t kn = na - c - I8_CHUNK < I8_CHUNK ? na - c - I8_CHUNK : I8_CHUNK;
            const int64_t ahead = (hi - lo) * BLOCK < NEXT_CHUNK_BYTES ? (hi - lo) * BLOCK : NEXT_CHUNK_BYTES;
            for (int64_t i = 0; i < kn; ++i) {
                const char *q = (const char *)(codes + (int64_t)act[c + I8_CHUNK + i] * stride + lo * BLOCK);
                for (int64_t off = 0; off < ahead; off += 64) __builtin_prefetch(q + off, 0, 2);
            }
            for (int64_t b = lo; b < hi;) {
                const int wide = b + tl.nb <= hi;
                for (int g = 0, j = 0; g < tl.groups; j += tl.rows[g++])
                    (wide ? tl.wide : tl.one)[g].i8(xc + c * n + j, n, act + c, kc, codes + b * BLOCK, stride, scale,
                                                    out + j * ld_out, ld_out, b * BLOCK, n_out, first, last);
                b += wide ? tl.nb : 1;
            }
        }
    }
    return 0;
}

/* NF4 layers: as tealtab_i8_rows; codes [d][blocks][8], scales [d / 64][blocks * 16],
 * table [16]. d must be a multiple of 64. */
int tealtab_nf4_rows(const void *scratch, const uint8_t *codes, const float *scales, const float *table,
                     const int64_t *seg_blocks, int64_t part, float *out, int64_t ld_out, int64_t n_out) {
    scratch_view v = view_of(scratch);
    if (part < 0 || part >= v.max_parts) return -1;
    const int64_t n = v.n, d = v.d, blocks = seg_blocks[v.n_seg], stride = blocks * 8;
    const tiling tl = tiling_of(n);
    const int64_t b_begin = v.bounds[part], b_end = v.bounds[part + 1];
    for (int64_t s = 0; s < v.n_seg; ++s) {
        int64_t lo = seg_blocks[s] > b_begin ? seg_blocks[s] : b_begin;
        int64_t hi = seg_blocks[s + 1] < b_end ? seg_blocks[s + 1] : b_end;
        if (lo >= hi) continue;
        const int32_t *act = v.act + s * d;
        const float *xc = v.xc + s * d * n;
        const int64_t na = v.na[s];
        /* No active channel: one empty chunk writes the zeros. */
        for (int64_t c = 0, e; c == 0 || c < na; c = e) {
            const int64_t win = na ? act[c] / NF4_WINDOW : 0;
            for (e = c; e < na && act[e] / NF4_WINDOW == win; ++e) {}
            const float *sc = scales + (win * NF4_WINDOW / GROUP) * blocks * BLOCK;
            /* The next window's first lines, a pass ahead. */
            int64_t e2 = e;
            while (e2 < na && act[e2] / NF4_WINDOW == act[e] / NF4_WINDOW) ++e2;
            const int64_t ahead = (hi - lo) * 8 < NEXT_CHUNK_BYTES ? (hi - lo) * 8 : NEXT_CHUNK_BYTES;
            for (int64_t i = e; i < e2; ++i) {
                const char *q = (const char *)(codes + (int64_t)act[i] * stride + lo * 8);
                for (int64_t off = 0; off < ahead; off += 64) __builtin_prefetch(q + off, 0, 2);
            }
            for (int64_t b = lo; b < hi;) {
                const int wide = b + tl.nb <= hi;
                for (int g = 0, j = 0; g < tl.groups; j += tl.rows[g++])
                    (wide ? tl.wide : tl.one)[g].nf4(xc + c * n + j, n, act + c, e - c, codes + b * 8, stride, sc,
                                                     table, out + j * ld_out, ld_out, b * BLOCK, n_out, c == 0);
                b += wide ? tl.nb : 1;
            }
            if (na == 0) break;
        }
    }
    return 0;
}

/* cpu_sparse.c, in the same library. */
int64_t tealtab_sparse_prepare(const float *x, int64_t n, int64_t d, int64_t n_seg, const int64_t *seg_blocks,
                               const float *thr, int64_t max_parts, int64_t min_work, void *scratch);

/* cpu_pool.c, in the same library. */
typedef void (*tealtab_part_fn)(void *ctx, int64_t part);
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts);

typedef struct {
    const void *scratch;
    const void *codes;
    const float *scales, *table;
    const int64_t *seg_blocks;
    float *out;
    int64_t ld_out, n_out;
} quant_job;

static void i8_part(void *ctx, int64_t part) {
    const quant_job *j = (const quant_job *)ctx;
    tealtab_i8_rows(j->scratch, (const int8_t *)j->codes, j->scales, j->seg_blocks, part, j->out, j->ld_out, j->n_out);
}

static void nf4_part(void *ctx, int64_t part) {
    const quant_job *j = (const quant_job *)ctx;
    tealtab_nf4_rows(j->scratch, (const uint8_t *)j->codes, j->scales, j->table, j->seg_blocks, part, j->out,
                     j->ld_out, j->n_out);
}

/* One call for a whole product: the prepare step, then every part of its
 * split over the pool (cpu_pool.c). Returns the part count, or -1 for bad rows. */
int64_t tealtab_i8_rows_call(const float *x, int64_t n, int64_t d, int64_t n_seg, const int64_t *seg_blocks,
                             const float *thr, int64_t max_parts, int64_t min_work, void *scratch,
                             const int8_t *codes, const float *scale, float *out, int64_t ld_out, int64_t n_out) {
    int64_t parts = tealtab_sparse_prepare(x, n, d, n_seg, seg_blocks, thr, max_parts, min_work, scratch);
    if (parts < 1) return parts;
    quant_job j = {scratch, codes, scale, NULL, seg_blocks, out, ld_out, n_out};
    tealtab_parallel(i8_part, &j, parts);
    return parts;
}

/* The same for NF4. */
int64_t tealtab_nf4_rows_call(const float *x, int64_t n, int64_t d, int64_t n_seg, const int64_t *seg_blocks,
                              const float *thr, int64_t max_parts, int64_t min_work, void *scratch,
                              const uint8_t *codes, const float *scales, const float *table, float *out,
                              int64_t ld_out, int64_t n_out) {
    int64_t parts = tealtab_sparse_prepare(x, n, d, n_seg, seg_blocks, thr, max_parts, min_work, scratch);
    if (parts < 1) return parts;
    quant_job j = {scratch, codes, scales, table, seg_blocks, out, ld_out, n_out};
    tealtab_parallel(nf4_part, &j, parts);
    return parts;
}

/* int8 LM head: x [n][d] (n 1..8) times blocks [b_begin, b_end) of codes
 * [blocks][d][16]; out [n][ld_out], o < n_out written. Returns 0, or -1. */
int tealtab_i8_head_rows(const float *x, int64_t n, int64_t d, const int8_t *codes, const float *scale,
                         int64_t b_begin, int64_t b_end, float *out, int64_t ld_out, int64_t n_out,
                         const uint16_t *ol, const float *xc, int64_t k_ol) {
    if (n < 1 || n > 8 || (ol && (!xc || k_ol < 1))) return -1;
    const tiling tl = tiling_of(n);
    const int half = tl.nb / 2;
    int mid = half > 1;
    for (int g = 0; g < tl.groups; ++g) mid = mid && tl.mid[g].head != 0;
    for (int64_t b = b_begin; b < b_end;) {
        const int width = b + tl.nb <= b_end ? tl.nb : mid && b + half <= b_end ? half : 1;
        const tile *t = width == tl.nb ? tl.wide : width == 1 ? tl.one : tl.mid;
        for (int g = 0, j = 0; g < tl.groups; j += tl.rows[g++])
            t[g].head(x + j * d, d, codes + b * d * BLOCK, scale, out + j * ld_out, ld_out, b * BLOCK, n_out,
                      ol ? ol + b * k_ol * BLOCK : 0, ol ? xc + j * k_ol : 0, k_ol);
        b += width;
    }
    return 0;
}

typedef struct {
    const float *x;
    int64_t n, d;
    const int8_t *codes;
    const float *scale;
    float *out;
    int64_t ld_out, n_out;
    const uint16_t *ol;
    const float *xc;
    int64_t k_ol;
    int64_t bounds[65];
} head_job;

static void head_part(void *ctx, int64_t part) {
    const head_job *j = (const head_job *)ctx;
    tealtab_i8_head_rows(j->x, j->n, j->d, j->codes, j->scale, j->bounds[part], j->bounds[part + 1], j->out,
                         j->ld_out, j->n_out, j->ol, j->xc, j->k_ol);
}

/* The whole product in the output-block layout (the LM head's, and int8
 * layer matrices while dense), split into `parts` runs, over the pool; ol,
 * xc, k_ol: the head's outlier columns (tealtab_i8_head_rows), or 0.
 * Returns 0, or -1. */
int tealtab_i8_head_rows_par(const float *x, int64_t n, int64_t d, const int8_t *codes, const float *scale,
                             int64_t blocks, float *out, int64_t ld_out, int64_t n_out, int64_t parts,
                             const uint16_t *ol, const float *xc, int64_t k_ol) {
    if (n < 1 || n > 8 || (ol && (!xc || k_ol < 1))) return -1;
    const int64_t nb = tiling_of(n).nb, tiles = (blocks + nb - 1) / nb;
    if (parts > 64) parts = 64;
    if (parts > tiles) parts = tiles;
    if (parts < 1) parts = 1;
    head_job j = {x, n, d, codes, scale, out, ld_out, n_out, ol, xc, k_ol, {0}};
    /* Whole tiles where there are many; an even split (a few single-block
     * tiles at the end of a part) where a tile is a large share of a part. */
    const int whole = tiles >= 4 * parts;
    for (int64_t i = 0; i < parts; ++i) {
        int64_t b = whole ? nb * (tiles * i / parts) : blocks * i / parts;
        j.bounds[i] = b < blocks ? b : blocks;
    }
    j.bounds[parts] = blocks;
    tealtab_parallel(head_part, &j, parts);
    return 0;
}

/* Rows ids [n] of the int8 head's dequantized W, fp32 [n][d]; where ol is
 * given, the head's k_ol outlier columns cols (bf16, [blocks][k_ol][16]) in
 * place. Returns 0, or -1 (nothing written) for an id outside [0, n_out) or
 * a column outside [0, d). */
int tealtab_i8_head_gather(const int8_t *codes, const float *scale, int64_t d, int64_t n_out, const int64_t *ids,
                           int64_t n, float *out, const uint16_t *ol, const int64_t *cols, int64_t k_ol) {
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= n_out) return -1;
    for (int64_t c = 0; ol && c < k_ol; ++c)
        if (cols[c] < 0 || cols[c] >= d) return -1;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t id = ids[i];
        const int8_t *p = codes + (id / BLOCK) * d * BLOCK + id % BLOCK;
        const float s = scale[id];
        float *o = out + i * d;
        for (int64_t k = 0; k < d; ++k) o[k] = (float)p[k * BLOCK] * s;
        /* The head's outlier columns (tealtab_i8_head_rows' ol layout), in place of the codes' zeros. */
        const uint16_t *q = ol ? ol + (id / BLOCK) * k_ol * BLOCK + id % BLOCK : 0;
        for (int64_t c = 0; ol && c < k_ol; ++c) {
            const uint32_t u = (uint32_t)q[c * BLOCK] << 16;
            memcpy(o + cols[c], &u, sizeof u);
        }
    }
    return 0;
}

/* Channels [k_begin, k_end) of the int8 input-major layout dequantized to
 * W^T fp32 [d][n_out] (rows of out_t for those channels written). */
int tealtab_i8_dequant_t(const int8_t *codes, const float *scale, int64_t blocks, int64_t n_out, int64_t k_begin,
                         int64_t k_end, float *out_t) {
    for (int64_t k = k_begin; k < k_end; ++k)
        for (int64_t b = 0; b < blocks; ++b)
            v_store_n(out_t + k * n_out + b * BLOCK,
                      v_mul(v_i8(codes + (k * blocks + b) * BLOCK), v_load(scale + b * BLOCK)), n_out - b * BLOCK);
    return 0;
}

/* The same for the NF4 layout: W^T[k][o] = table[code] * scales[k / 64][o]. */
int tealtab_nf4_dequant_t(const uint8_t *codes, const float *scales, const float *table, int64_t blocks,
                          int64_t n_out, int64_t k_begin, int64_t k_end, float *out_t) {
    const lut t = lut_of(table);
    for (int64_t k = k_begin; k < k_end; ++k) {
        const float *sc = scales + (k / GROUP) * blocks * BLOCK;
        for (int64_t b = 0; b < blocks; ++b)
            v_store_n(out_t + k * n_out + b * BLOCK,
                      v_mul(v_nf4(codes + (k * blocks + b) * 8, t), v_load(sc + b * BLOCK)), n_out - b * BLOCK);
    }
    return 0;
}

/* Which code path this file was built for ("avx512", "avx2+fma", "portable"). */
const char *tealtab_quant_isa(void) { return ISA; }
