/* Bifurcated decode attention on the CPU (fp32): the C side of
 * kv_cache.bifurcated_attention, as kernels/bifurcated_attention.py is its
 * CUDA side.
 *
 * n candidates each attend to the shared prompt KV and to their own
 * generated KV, one softmax over both. In PyTorch that is two batched GEMMs,
 * a concatenation, a softmax and two more GEMMs per layer, each op waking
 * torch's OpenMP threads while cpu_pool.c's workers hold the other core.
 * Here the rows are cut into chunks, and each chunk is one part for the
 * pool (cpu_pool.c):
 *   - a prompt chunk of a KV head computes the scores of every candidate's
 *     g query heads against each key row, so the prompt is read once for all
 *     candidates (the bifurcation);
 *   - a generated chunk covers one candidate's own rows.
 * Each part keeps its chunk's max score, sum of exponentials and weighted
 * values per query; the parts then merge in a fixed order. The chunks follow
 * the row counts alone, not the thread count or n, so a candidate's output
 * has the same bits however many threads or candidates there are.
 * Built with cpu_rows.c into one library by cpu_rows.py.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cpu_vec.h"

#define CHUNK 128
/* Key rows prefetched this far ahead of the scoring (two rows a step). In a
 * one-off timing of cpu_fused.decode_attention (2026-11-28, 2 cores, 4 query
 * heads over one KV head of d = 256 as in the built-in model, the KV cycled
 * through 150 copies so that caches are cold): 512 rows 74 -> 55 us, 2048
 * rows 273 -> 232 us; 8 and 16 rows ahead gained less, the hardware
 * prefetcher alone the least. benchmarks/step_parts.py gives the step's
 * attention time. */
#define KPF 4
#define MAX_QUERIES 128 /* candidates x query heads per KV head, in one prompt part */
#define MAX_CHUNKS 2048 /* a query's chunks (262144 rows) */

typedef void (*tealtab_part_fn)(void *ctx, int64_t part);
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts);

/* Scores: two key rows at a time for up to four queries, each query's dot
 * product in its own 16-lane accumulator over d in order (the last 8 of a d
 * that is 8 past a multiple of 16 in lanes 0-7), then hsum16: the same sum
 * whichever group a query falls in, so a candidate's scores have the same
 * bits alone or among others. Eight independent accumulators keep the FMA
 * pipes full (one row and one query: a 4-cycle chain per FMA). */
static inline __attribute__((always_inline)) void scores(const float *const *qs, int nq, const float *k0,
                                                         const float *k1, int64_t d, float scale, float *dst0,
                                                         float *dst1) {
    vf16 a0[4] = {{0}}, a1[4] = {{0}};
    int64_t e = 0;
    for (; e + 16 <= d; e += 16) {
        const vf16 x0 = load16(k0 + e), x1 = k1 ? load16(k1 + e) : x0;
        for (int r = 0; r < nq; ++r) {
            const vf16 qv = load16(qs[r] + e);
            a0[r] += qv * x0, a1[r] += qv * x1;
        }
    }
    if (e < d) {
        const vf16 x0 = load8z(k0 + e), x1 = k1 ? load8z(k1 + e) : x0;
        for (int r = 0; r < nq; ++r) {
            const vf16 qv = load8z(qs[r] + e);
            a0[r] += qv * x0, a1[r] += qv * x1;
        }
    }
    for (int r = 0; r < nq; ++r) {
        dst0[r] = hsum16(a0[r]) * scale;
        if (k1) dst1[r] = hsum16(a1[r]) * scale;
    }
}

/* o[r] = sum over rows t (in order) of p[r][t] v[t] for nq <= 4 queries,
 * columns [e0, e0 + 16 * w) (w <= 4 vectors; half: w = 1 and 8 columns):
 * up to 16 accumulators in registers, each value row read once for the nq
 * queries. */
static inline __attribute__((always_inline)) void weighted_values(float *const *o, const float *const *p, int nq,
                                                                  const float *v, int64_t len, int64_t d, int64_t e0,
                                                                  int w, int half) {
    vf16 acc[4][4] = {{{0}}};
    for (int64_t t = 0; t < len; ++t) {
        const float *vt = v + t * d + e0;
        vf16 x[4];
        for (int i = 0; i < w; ++i) x[i] = half ? load8z(vt) : load16(vt + 16 * i);
        for (int r = 0; r < nq; ++r) {
            const float pr = p[r][t];
            for (int i = 0; i < w; ++i) acc[r][i] += pr * x[i];
        }
    }
    for (int r = 0; r < nq; ++r)
        for (int i = 0; i < w; ++i) {
            if (half) store8(o[r] + e0, acc[r][i]);
            else store16(o[r] + e0 + 16 * i, acc[r][i]);
        }
}

/* The two above with a constant query count (and width), so that their
 * accumulators are registers rather than arrays on the stack. */
static void scores_n(const float *const *qs, int nq, const float *k0, const float *k1, int64_t d, float scale,
                     float *dst0, float *dst1) {
    switch (nq) {
    case 4: scores(qs, 4, k0, k1, d, scale, dst0, dst1); break;
    case 3: scores(qs, 3, k0, k1, d, scale, dst0, dst1); break;
    case 2: scores(qs, 2, k0, k1, d, scale, dst0, dst1); break;
    default: scores(qs, 1, k0, k1, d, scale, dst0, dst1); break;
    }
}

/* Columns [e0, e0 + 64) of the weighted values, or the rest of d (16 at a time, then 8). */
static void weighted_values_n(float *const *o, const float *const *p, int nq, const float *v, int64_t len, int64_t d,
                              int64_t e0) {
#define WV_CASE(N)                                                                   \
    case N:                                                                          \
        if (d - e0 >= 64) {                                                          \
            weighted_values(o, p, N, v, len, d, e0, 4, 0);                           \
            break;                                                                   \
        }                                                                            \
        for (int64_t e = e0; e < d; e += 16)                                         \
            if (d - e >= 16) weighted_values(o, p, N, v, len, d, e, 1, 0);           \
            else weighted_values(o, p, N, v, len, d, e, 1, 1);                       \
        break;
    switch (nq) {
    WV_CASE(4)
    WV_CASE(3)
    WV_CASE(2)
    default: WV_CASE(1)
    }
#undef WV_CASE
}

typedef struct {
    const float *q;        /* [n][h][d] */
    const float *pk, *pv;  /* prompt: head j at + j * p_stride_h, p_len rows */
    const float *gk, *gv;  /* candidate c, head j: + c * g_stride_n + j * g_stride_h; rows g_lo.. g_len - 1 */
    int64_t n, h, hkv, d, p_len, g_lo, g_len, p_stride_h, g_stride_n, g_stride_h;
    float scale;
    int64_t pc, gc;        /* prompt chunks, generated chunks per candidate */
    float *m, *l, *o;      /* per slot: max score, sum of exponentials, [d] weighted values */
} attn_job;

/* Rows [t0, t1) of keys k / values v (rows d apart) for queries qs[0..nq)
 * (query r at q + qoff[r] * d), results in slots slot0 + r. */
static void chunk(const attn_job *a, const float *k, const float *v, int64_t t0, int64_t t1, const int64_t *qoff,
                  int64_t nq, int64_t slot0) {
    const int64_t d = a->d, len = t1 - t0;
    float s[MAX_QUERIES][CHUNK];
    const float *q = a->q;
    for (int64_t r0 = 0; r0 < nq; r0 += 4) {
        const int g = nq - r0 < 4 ? (int)(nq - r0) : 4;
        const float *qs[4];
        for (int r = 0; r < g; ++r) qs[r] = q + qoff[r0 + r] * d;
        for (int64_t t = 0; t < len; t += 2) {
            float d0[4] = {0}, d1[4] = {0};
            const float *k0 = k + (t0 + t) * d, *k1 = t + 1 < len ? k0 + d : 0;
            if (r0 == 0) {
                /* The value rows, for the pass below (read in columns of 64, they would come a
                 * line per row), and the key rows KPF ahead, within the chunk. */
                for (int64_t e = 0; e < (k1 ? 2 * d : d); e += 16) __builtin_prefetch(v + (t0 + t) * d + e, 0, 3);
                if (t + KPF + 2 <= len)
                    for (int64_t e = 0; e < 2 * d; e += 16) __builtin_prefetch(k + (t0 + t + KPF) * d + e, 0, 3);
            }
            scores_n(qs, g, k0, k1, d, a->scale, d0, d1);
            for (int r = 0; r < g; ++r) {
                s[r0 + r][t] = d0[r];
                if (k1) s[r0 + r][t + 1] = d1[r];
            }
        }
    }
    for (int64_t r = 0; r < nq; ++r) {
        /* Softmax numerators over the chunk; the tail past len is -inf, exp 0. */
        float *sr = s[r];
        float m = -INFINITY;
        for (int64_t t = 0; t < len; ++t) m = sr[t] > m ? sr[t] : m;
        for (int64_t t = len; t < (len + 15) / 16 * 16; ++t) sr[t] = -INFINITY;
        vf16 acc = {0};
        for (int64_t t = 0; t < len; t += 16) {
            const vf16 e = exp_nonpositive(load16(sr + t) - m);
            store16(sr + t, e);
            acc += e;
        }
        a->m[slot0 + r] = m, a->l[slot0 + r] = hsum16(acc);
    }
    for (int64_t r0 = 0; r0 < nq; r0 += 4) {
        const int g = nq - r0 < 4 ? (int)(nq - r0) : 4;
        float *os[4];
        const float *ps[4];
        for (int r = 0; r < g; ++r) os[r] = a->o + (slot0 + r0 + r) * d, ps[r] = s[r0 + r];
        for (int64_t e0 = 0; e0 < d; e0 += 64) weighted_values_n(os, ps, g, v + t0 * d, len, d, e0);
    }
}

/* Parts [0, hkv * pc): prompt chunks (head, chunk), every candidate's queries;
 * then n * hkv * gc generated chunks (candidate, head, chunk). */
static void attn_part(void *ctx, int64_t part) {
    const attn_job *a = (const attn_job *)ctx;
    const int64_t g = a->h / a->hkv;
    int64_t qoff[MAX_QUERIES];
    if (part < a->hkv * a->pc) {
        const int64_t j = part / a->pc, k = part % a->pc;
        const int64_t t0 = k * CHUNK, t1 = t0 + CHUNK < a->p_len ? t0 + CHUNK : a->p_len;
        for (int64_t c = 0; c < a->n; ++c)
            for (int64_t i = 0; i < g; ++i) qoff[c * g + i] = c * a->h + j * g + i;
        chunk(a, a->pk + j * a->p_stride_h, a->pv + j * a->p_stride_h, t0, t1, qoff, a->n * g, part * a->n * g);
        return;
    }
    const int64_t gp = part - a->hkv * a->pc, k = gp % a->gc, cj = gp / a->gc, j = cj % a->hkv, c = cj / a->hkv;
    const int64_t rows = a->g_len - a->g_lo, t0 = k * CHUNK, t1 = t0 + CHUNK < rows ? t0 + CHUNK : rows;
    for (int64_t i = 0; i < g; ++i) qoff[i] = c * a->h + j * g + i;
    const int64_t off = c * a->g_stride_n + j * a->g_stride_h + a->g_lo * a->d;
    chunk(a, a->gk + off, a->gv + off, t0, t1, qoff, g, a->hkv * a->pc * a->n * g + gp * g);
}

/* q [n][h][d]; prompt_k/v: the layer's first attended prompt row of KV head
 * 0, heads p_stride_h apart, p_len rows; gen_k/v: the layer's candidate 0,
 * head 0, row 0, candidates g_stride_n and heads g_stride_h apart, rows
 * [g_lo, g_len) attended (g_lo > 0: a sliding window has passed them);
 * out [n][h][d]. Returns 0; -1 for a shape it does not take (h not a
 * multiple of hkv, more than MAX_QUERIES candidate queries per KV head, d not
 * a multiple of 8, nothing to attend, over MAX_CHUNKS chunks); -2 when its scratch cannot be allocated. */
int tealtab_decode_attention(const float *q, const float *prompt_k, const float *prompt_v, int64_t p_len,
                             int64_t p_stride_h, const float *gen_k, const float *gen_v, int64_t g_lo, int64_t g_len,
                             int64_t g_stride_n, int64_t g_stride_h, int64_t n, int64_t h, int64_t hkv, int64_t d,
                             float scale, float *out) {
    if (n < 1 || hkv < 1 || h % hkv || n * (h / hkv) > MAX_QUERIES || d < 8 || d % 8 || p_len < 0 || g_lo < 0 ||
        g_len < g_lo || p_len + g_len - g_lo < 1)
        return -1;
    const int64_t g = h / hkv, pc = (p_len + CHUNK - 1) / CHUNK, gc = (g_len - g_lo + CHUNK - 1) / CHUNK;
    if (pc + gc > MAX_CHUNKS) return -1;
    const int64_t slots = hkv * pc * n * g + n * hkv * gc * g;
    float *scratch = (float *)malloc((size_t)slots * (size_t)(d + 2) * sizeof(float));
    if (!scratch) return -2;
    attn_job a = {q, prompt_k, prompt_v, gen_k, gen_v, n, h, hkv, d, p_len, g_lo, g_len, p_stride_h, g_stride_n,
                  g_stride_h, scale, pc, gc, scratch, scratch + slots, scratch + 2 * slots};
    tealtab_parallel(attn_part, &a, hkv * pc + n * hkv * gc);
    /* Merge, prompt chunks first, then the candidate's own:
     * out = sum_k o_k e^(m_k - M) / sum_k l_k e^(m_k - M). */
    for (int64_t c = 0; c < n; ++c)
        for (int64_t j = 0; j < hkv; ++j)
            for (int64_t i = 0; i < g; ++i) {
                int64_t idx[MAX_CHUNKS];
                int64_t cnt = 0;
                for (int64_t k = 0; k < pc; ++k) idx[cnt++] = (j * pc + k) * n * g + c * g + i;
                for (int64_t k = 0; k < gc; ++k)
                    idx[cnt++] = hkv * pc * n * g + ((c * hkv + j) * gc + k) * g + i;
                float m = -INFINITY, l = 0.0f;
                for (int64_t k = 0; k < cnt; ++k) m = a.m[idx[k]] > m ? a.m[idx[k]] : m;
                float *o = out + (c * h + j * g + i) * d;
                for (int64_t e = 0; e < d; ++e) o[e] = 0.0f;
                for (int64_t k = 0; k < cnt; ++k) {
                    const float w = expf(a.m[idx[k]] - m);
                    l += a.l[idx[k]] * w;
                    const float *ok = a.o + idx[k] * d;
                    for (int64_t e = 0; e < d; ++e) o[e] += ok[e] * w;
                }
                const float inv = 1.0f / l;
                for (int64_t e = 0; e < d; ++e) o[e] *= inv;
            }
    free(scratch);
    return 0;
}
