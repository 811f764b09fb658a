/* TEAL activation-sparse rows times a bf16 weight packed input-major.
 *
 *   out[j * ld_out + o] = sum over active k (ascending) of xm[j][k] * float(W[o][k])
 *   xm[j][k] = x[j][k] if |x[j][k]| > t else 0        (t <= 0: xm = x, every k active)
 *
 * for rows j < n (1..8) and the outputs of a segment table: segment s covers
 * the blocks [seg_blocks[s], seg_blocks[s + 1]) of 16 outputs with its own
 * threshold t_s (q|k|v or gate|up fused in one matrix). A channel k is active
 * in a segment when any row keeps it: the union decides which weights are
 * read, each row's own zeros keep its result the dense product of its masked
 * row (adding a +0 product leaves a sum unchanged unless the sum is -0, which
 * takes products that underflow to -0; an inf or NaN weight times a zero is
 * NaN, as in the dense product).
 *
 * Layout (cpu_sparse.pack_input_major): [d][blocks][16] bf16, cpu_rows.pack's
 * blocks with the first two axes swapped, so the weights of one channel for
 * all outputs are contiguous and a skipped channel skips whole cache lines.
 * The 16 outputs of a block are in cpu_rows' lane order, widened to fp32 with
 * the same two unpacks; each output lane is one FMA accumulator summed over
 * the active channels in ascending order, so with every channel active the
 * bits are cpu_rows.c's, and a row's result does not depend on the other
 * rows, the grouping, the chunking or the split over threads.
 *
 * Memory order. A tile (a group of rows x 1-4 blocks, its accumulators in
 * registers as in cpu_rows.c) that ran down the whole active list would read
 * one 32-128 byte piece per channel, each in another page, at irregular
 * strides: no hardware prefetcher follows that, and at one row it ran at half
 * the dense kernel's speed even with software prefetch a few entries ahead.
 * So the active list is taken in chunks of CHUNK channels: for each chunk the
 * tiles sweep the block range, each tile starting from the accumulators the
 * previous chunk stored in out (fp32 stored and loaded: exact). Within a
 * chunk the reads are CHUNK sequential streams, one per channel, which the
 * L2 streamer follows, and each tile prefetches its channels' weights two
 * tiles (at least two lines) further along, CHUNK entries later in time
 * (the next chunk's first lines are prefetched a pass ahead).
 * One row takes four blocks per tile (two lines per channel), two rows two
 * blocks, more rows cpu_rows.c's groups over one block.
 *
 * Two calls: tealtab_sparse_prepare (once per matrix call) fills a scratch
 * buffer with each segment's active list and its masked x compacted to
 * [active][n] (one sequential read per active entry), and splits the blocks
 * into parts of equal active work; tealtab_sparse_rows (once per thread)
 * multiplies one part. Built and loaded by cpu_rows.py, with cpu_rows.c.
 */
#include <stdint.h>
#include <string.h>

#define BLOCK 16
/* Channels per chunk. On the 2-core Xeon (AVX2 path) all 18 Gemma-3-270M
 * layers at one row: 8, 16 and 32 within noise of each other (16 a little
 * ahead at 50 % sparsity); the whole list at once ran 3x slower. */
#define CHUNK 16
/* How far ahead in a channel's row a tile prefetches: two tiles, at least
 * two 64-byte lines (one row: 128 vs 256 bytes, 4 rows: 128 vs 256, within a
 * few percent; no prefetch: 1.8x slower at one row). */
#define PF_BYTES(NB) ((NB) * 64 > 128 ? (NB) * 64 : 128)
/* How much of the next chunk's channels is prefetched at the start of a
 * chunk's pass (128-512 bytes: 2-5 % faster at one row than none). */
#define NEXT_BYTES 256
#define HEADER 4 /* int64: n, d, n_seg, max_parts */

/* Scratch layout (8-byte units first):
 *   int64 header[4], na[n_seg], bounds[max_parts + 1]
 *   int32 act[n_seg][d]      each segment's active channels, ascending
 *   float xc[n_seg][d][n]    the rows' masked x of those channels */
typedef struct {
    int64_t n, d, n_seg, max_parts;
    int64_t *na, *bounds;
    int32_t *act;
    float *xc;
} scratch_view;

static scratch_view view_of(void *scratch) {
    scratch_view v;
    int64_t *h = (int64_t *)scratch;
    v.n = h[0], v.d = h[1], v.n_seg = h[2], v.max_parts = h[3];
    v.na = h + HEADER;
    v.bounds = v.na + v.n_seg;
    v.act = (int32_t *)(v.bounds + v.max_parts + 1);
    int64_t act_len = v.n_seg * v.d;
    v.xc = (float *)(v.act + act_len + (act_len & 1)); /* 8-byte aligned */
    return v;
}

/* How many bytes of scratch tealtab_sparse_prepare fills. */
int64_t tealtab_sparse_scratch_bytes(int64_t n, int64_t d, int64_t n_seg, int64_t max_parts) {
    int64_t act_len = n_seg * d;
    return 8 * (HEADER + n_seg + max_parts + 1) + 4 * (act_len + (act_len & 1)) + 4 * n_seg * d * n;
}

static inline void store_lanes(float *dst, const float *src, int64_t o, int64_t n_out) {
    for (int l = 0; l < 8 && o + l < n_out; ++l) dst[o + l] = src[l];
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* G rows x NB consecutive blocks over kc entries of a segment's active list.
 * p points at the tile's first block in channel 0; a channel's weights are
 * `stride` further; xc holds the rows of the group at xc[i * xs + j]. The
 * accumulators start at zero (first) or from out, where the previous chunk
 * left them (exact: fp32 stored and loaded). */
#define DEFINE_SPARSE(G, NB)                                                                        \
    static void sparse_##G##_##NB(const float *xc, int64_t xs, const int32_t *act, int64_t kc,      \
                                  const uint16_t *p, int64_t stride, float *out, int64_t ld,       \
                                  int64_t o0, int64_t n_out, int first) {                           \
        __m256 acc[G][2 * NB];                                                                      \
        _Pragma("GCC unroll 8") for (int j = 0; j < G; ++j)                                         \
            _Pragma("GCC unroll 8") for (int b = 0; b < 2 * NB; ++b) {                              \
                int64_t o = o0 + 8 * b;                                                             \
                if (first) {                                                                        \
                    acc[j][b] = _mm256_setzero_ps();                                                \
                } else if (o + 8 <= n_out) {                                                        \
                    acc[j][b] = _mm256_loadu_ps(out + j * ld + o);                                  \
                } else {                                                                            \
                    float t[8] = {0};                                                               \
                    for (int l = 0; l < 8 && o + l < n_out; ++l) t[l] = out[j * ld + o + l];        \
                    acc[j][b] = _mm256_loadu_ps(t);                                                 \
                }                                                                                   \
            }                                                                                       \
        const __m256i zero = _mm256_setzero_si256();                                                \
        for (int64_t i = 0; i < kc; ++i) {                                                          \
            const uint16_t *pk = p + (int64_t)act[i] * stride;                                      \
            _Pragma("GCC unroll 4") for (int c = 0; c < NB * 32; c += 64)                          \
                __builtin_prefetch((const char *)pk + PF_BYTES(NB) + c, 0, 3);                     \
            __m256 w[2 * NB];                                                                       \
            _Pragma("GCC unroll 4") for (int b = 0; b < NB; ++b) {                                  \
                __m256i v = _mm256_loadu_si256((const __m256i *)(pk + b * BLOCK));                  \
                w[2 * b] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));                     \
                w[2 * b + 1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));                 \
            }                                                                                       \
            _Pragma("GCC unroll 8") for (int j = 0; j < G; ++j) {                                   \
                __m256 xj = _mm256_broadcast_ss(xc + i * xs + j);                                   \
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

/* The same order of operations in plain C (as cpu_rows.c's fallback). */
#define DEFINE_SPARSE(G, NB)                                                                        \
    static void sparse_##G##_##NB(const float *xc, int64_t xs, const int32_t *act, int64_t kc,      \
                                  const uint16_t *p, int64_t stride, float *out, int64_t ld,       \
                                  int64_t o0, int64_t n_out, int first) {                           \
        static const int lane_of[BLOCK] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};   \
        float acc[G][NB * BLOCK];                                                                   \
        memset(acc, 0, sizeof acc);                                                                 \
        if (!first)                                                                                 \
            for (int j = 0; j < G; ++j)                                                             \
                for (int l = 0; l < NB * BLOCK && o0 + l < n_out; ++l) acc[j][l] = out[j * ld + o0 + l]; \
        for (int64_t i = 0; i < kc; ++i)                                                            \
            for (int b = 0; b < NB; ++b) {                                                          \
                const uint16_t *pk = p + (int64_t)act[i] * stride + b * BLOCK;                      \
                float w[BLOCK];                                                                     \
                for (int s = 0; s < BLOCK; ++s) {                                                   \
                    uint32_t u = (uint32_t)pk[s] << 16;                                             \
                    memcpy(&w[lane_of[s]], &u, 4);                                                  \
                }                                                                                   \
                for (int j = 0; j < G; ++j)                                                         \
                    for (int l = 0; l < BLOCK; ++l) acc[j][b * BLOCK + l] += w[l] * xc[i * xs + j]; \
            }                                                                                       \
        for (int j = 0; j < G; ++j)                                                                 \
            for (int b = 0; b < 2 * NB; ++b) store_lanes(out + j * ld, &acc[j][8 * b], o0 + 8 * b, n_out); \
    }

#endif

DEFINE_SPARSE(1, 1)
DEFINE_SPARSE(2, 1)
DEFINE_SPARSE(3, 1)
DEFINE_SPARSE(4, 1)
DEFINE_SPARSE(6, 1)
DEFINE_SPARSE(1, 2)
DEFINE_SPARSE(2, 2)
DEFINE_SPARSE(1, 4)

typedef void (*sparse_fn)(const float *, int64_t, const int32_t *, int64_t, const uint16_t *, int64_t, float *,
                          int64_t, int64_t, int64_t, int);

static sparse_fn one_block(int g) {
    switch (g) {
    case 1: return sparse_1_1;
    case 2: return sparse_2_1;
    case 3: return sparse_3_1;
    case 4: return sparse_4_1;
    default: return sparse_6_1;
    }
}

/* How n rows split into groups over a block, as in cpu_rows.c. */
static const int plans[9][3] = {{0}, {1}, {2}, {3}, {4}, {3, 2}, {6}, {4, 3}, {6, 2}};

/* x [n][d] fp32, seg_blocks [n_seg + 1] block bounds, thr [n_seg]. Fills the
 * scratch (tealtab_sparse_scratch_bytes long) and splits the blocks into up
 * to max_parts parts of about equal active work, at even block indices (the
 * one- and two-row path takes blocks in pairs), one part where the work
 * (rows x weights read) is under min_work. Returns the part count, or -1. */
int64_t tealtab_sparse_prepare(const float *x, int64_t n, int64_t d, int64_t n_seg, const int64_t *seg_blocks,
                               const float *thr, int64_t max_parts, int64_t min_work, void *scratch) {
    if (n < 1 || n > 8 || n_seg < 1 || max_parts < 1) return -1;
    int64_t *h = (int64_t *)scratch;
    h[0] = n, h[1] = d, h[2] = n_seg, h[3] = max_parts;
    scratch_view v = view_of(scratch);
    int64_t work = 0;
    for (int64_t s = 0; s < n_seg; ++s) {
        const float t = thr[s];
        int32_t *act = v.act + s * d;
        float *xc = v.xc + s * d * n;
        int64_t na = 0;
        for (int64_t k = 0; k < d; ++k) {
            int keep = t <= 0.0f; /* threshold 0 or below: dense, x as it is */
            for (int64_t j = 0; j < n && !keep; ++j) keep = x[j * d + k] > t || x[j * d + k] < -t;
            if (!keep) continue;
            for (int64_t j = 0; j < n; ++j) {
                float xv = x[j * d + k];
                xc[na * n + j] = (t <= 0.0f || xv > t || xv < -t) ? xv : 0.0f;
            }
            act[na++] = (int32_t)k;
        }
        v.na[s] = na;
        work += n * na * (seg_blocks[s + 1] - seg_blocks[s]) * BLOCK;
    }
    const int64_t blocks = seg_blocks[n_seg];
    int64_t parts = work < min_work ? 1 : max_parts;
    if (parts > (blocks + 1) / 2) parts = (blocks + 1) / 2;
    if (parts < 1) parts = 1;
    v.bounds[0] = 0;
    if (parts > 1) {
        /* Cost of a pair of blocks: its active entries, plus a few for the
         * tile's fixed cost (a segment with no active channel still writes). */
        int64_t total = 0, done = 0, s = 0, part = 1;
        for (int64_t i = 0; i < n_seg; ++i) total += (v.na[i] + 4) * (seg_blocks[i + 1] - seg_blocks[i]);
        for (int64_t b = 0; b < blocks && part < parts; b += 2) {
            for (int64_t e = b; e < b + 2 && e < blocks; ++e) {
                while (e >= seg_blocks[s + 1]) ++s;
                done += v.na[s] + 4;
            }
            if (b + 2 < blocks && done * parts >= total * part) v.bounds[part++] = b + 2;
        }
        parts = part; /* fewer where the last pairs hold all the work */
    }
    v.bounds[parts] = blocks;
    return parts;
}

/* Multiplies part `part` of the split that tealtab_sparse_prepare made.
 * p: the weight [d][blocks][16]; out [n][ld_out], outputs o < n_out written.
 * part < the count tealtab_sparse_prepare returned. Returns 0, or -1 for a
 * part out of range. */
int tealtab_sparse_rows(const void *scratch, const uint16_t *p, const int64_t *seg_blocks, int64_t part,
                        float *out, int64_t ld_out, int64_t n_out) {
    scratch_view v = view_of((void *)scratch);
    if (part < 0 || part >= v.max_parts) return -1;
    const int64_t n = v.n, d = v.d, blocks = seg_blocks[v.n_seg], stride = blocks * BLOCK;
    const int64_t b_begin = v.bounds[part], b_end = v.bounds[part + 1];
    for (int64_t s = 0; s < v.n_seg; ++s) {
        int64_t lo = seg_blocks[s] > b_begin ? seg_blocks[s] : b_begin;
        int64_t hi = seg_blocks[s + 1] < b_end ? seg_blocks[s + 1] : b_end;
        if (lo >= hi) continue;
        const int32_t *act = v.act + s * d;
        const float *xc = v.xc + s * d * n;
        const int64_t na = v.na[s];
        for (int64_t c = 0; c == 0 || c < na; c += CHUNK) {
            const int64_t kc = na - c < CHUNK ? na - c : CHUNK;
            const int first = c == 0;
            /* The tiles prefetch along their own channels; the first tiles of
             * the next chunk's channels are fetched (into L2) a pass ahead. */
            const int64_t kn = na - c - CHUNK < CHUNK ? na - c - CHUNK : CHUNK;
            const int64_t ahead = (hi - lo) * 32 < NEXT_BYTES ? (hi - lo) * 32 : NEXT_BYTES;
            for (int64_t i = 0; i < kn; ++i) {
                const char *q = (const char *)(p + (int64_t)act[c + CHUNK + i] * stride + lo * BLOCK);
                for (int64_t off = 0; off < ahead; off += 64) __builtin_prefetch(q + off, 0, 2);
            }
            int64_t b = lo;
            if (n <= 2) { /* one row: four blocks (two lines) per channel, two rows: two blocks (a line) */
                if (n == 1)
                    for (; b + 4 <= hi; b += 4)
                        sparse_1_4(xc + c, 1, act + c, kc, p + b * BLOCK, stride, out, ld_out, b * BLOCK, n_out, first);
                sparse_fn two = n == 1 ? sparse_1_2 : sparse_2_2;
                for (; b + 2 <= hi; b += 2)
                    two(xc + c * n, n, act + c, kc, p + b * BLOCK, stride, out, ld_out, b * BLOCK, n_out, first);
            }
            for (; b < hi; ++b) {
                int64_t j = 0;
                for (int g = 0; g < 3 && plans[n][g]; ++g) {
                    one_block(plans[n][g])(xc + c * n + j, n, act + c, kc, p + b * BLOCK, stride, out + j * ld_out,
                                           ld_out, b * BLOCK, n_out, first);
                    j += plans[n][g];
                }
            }
        }
    }
    return 0;
}

/* cpu_pool.c, in the same library. */
typedef void (*tealtab_part_fn)(void *ctx, int64_t part);
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts);

typedef struct {
    const void *scratch;
    const uint16_t *p;
    const int64_t *seg_blocks;
    float *out;
    int64_t ld_out, n_out;
} sparse_job;

static void sparse_part(void *ctx, int64_t part) {
    const sparse_job *j = (const sparse_job *)ctx;
    tealtab_sparse_rows(j->scratch, j->p, j->seg_blocks, part, j->out, j->ld_out, j->n_out);
}

/* Every part of tealtab_sparse_prepare's split (`parts`, its return value),
 * over the pool (cpu_pool.c). Returns 0, or -1 for a part count out of range. */
int tealtab_sparse_rows_all(const void *scratch, const uint16_t *p, const int64_t *seg_blocks, int64_t parts,
                            float *out, int64_t ld_out, int64_t n_out) {
    if (parts < 1 || parts > view_of((void *)scratch).max_parts) return -1;
    sparse_job j = {scratch, p, seg_blocks, out, ld_out, n_out};
    tealtab_parallel(sparse_part, &j, parts);
    return 0;
}

/* tealtab_sparse_prepare, then every part of the product over the pool, in
 * one call (one ctypes crossing a product instead of two; cpu_quant.c's
 * tealtab_i8_rows_call does the same for int8). Returns the part count, or
 * tealtab_sparse_prepare's refusal. */
int64_t tealtab_sparse_rows_call(const float *x, int64_t n, int64_t d, int64_t n_seg, const int64_t *seg_blocks,
                                 const float *thr, int64_t max_parts, int64_t min_work, void *scratch,
                                 const uint16_t *p, float *out, int64_t ld_out, int64_t n_out) {
    int64_t parts = tealtab_sparse_prepare(x, n, d, n_seg, seg_blocks, thr, max_parts, min_work, scratch);
    if (parts < 1) return parts;
    if (parts == 1) return tealtab_sparse_rows(scratch, p, seg_blocks, 0, out, ld_out, n_out) ? -1 : 1;
    return tealtab_sparse_rows_all(scratch, p, seg_blocks, parts, out, ld_out, n_out) ? -1 : parts;
}
