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

#define CHUNK 128
#define MAX_QUERIES 128 /* candidates x query heads per KV head, in one prompt part */
#define MAX_CHUNKS 2048 /* a query's chunks (262144 rows) */

typedef void (*tealtab_part_fn)(void *ctx, int64_t part);
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts);

/* GCC/clang vector extensions: 8 floats, whatever the vector unit. */
typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum(v8 a) { return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])); }

/* q . k * scale for one query row (d a multiple of 8): one accumulator over
 * d in order, as dot4 sums each of its four, so a query's scores have the
 * same bits whether it falls in a group of four or not. */
static inline float dot(const float *q, const float *k, int64_t d, float scale) {
    v8 acc = {0};
    for (int64_t e = 0; e < d; e += 8) acc += load8(q + e) * load8(k + e);
    return hsum(acc) * scale;
}

/* Four queries' dots with one key (read once for the four), each as dot() sums it. */
static inline void dot4(const float *q0, const float *q1, const float *q2, const float *q3, const float *k,
                        int64_t d, float scale, float *dst) {
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int64_t e = 0; e < d; e += 8) {
        const v8 kv = load8(k + e);
        a0 += load8(q0 + e) * kv, a1 += load8(q1 + e) * kv, a2 += load8(q2 + e) * kv, a3 += load8(q3 + e) * kv;
    }
    dst[0] = hsum(a0) * scale, dst[1] = hsum(a1) * scale, dst[2] = hsum(a2) * scale, dst[3] = hsum(a3) * scale;
}

/* o += p * v over d (a multiple of 8). */
static inline void axpy(float *o, float p, const float *v, int64_t d) {
    v8 pv = {p, p, p, p, p, p, p, p};
    for (int64_t e = 0; e < d; e += 8) {
        v8 r = load8(o + e) + pv * load8(v + e);
        __builtin_memcpy(o + e, &r, sizeof r);
    }
}

/* o += p0 v0 + p1 v1 + p2 v2 + p3 v3 over d: o read and written once for four rows. */
static inline void axpy4(float *o, const float *p, const float *v0, const float *v1, const float *v2,
                         const float *v3, int64_t d) {
    const v8 p0 = {p[0], p[0], p[0], p[0], p[0], p[0], p[0], p[0]}, p1 = {p[1], p[1], p[1], p[1], p[1], p[1], p[1], p[1]};
    const v8 p2 = {p[2], p[2], p[2], p[2], p[2], p[2], p[2], p[2]}, p3 = {p[3], p[3], p[3], p[3], p[3], p[3], p[3], p[3]};
    for (int64_t e = 0; e < d; e += 8) {
        v8 r = load8(o + e) + ((p0 * load8(v0 + e) + p1 * load8(v1 + e)) + (p2 * load8(v2 + e) + p3 * load8(v3 + e)));
        __builtin_memcpy(o + e, &r, sizeof r);
    }
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
    for (int64_t t = 0; t < len; ++t) {
        const float *kt = k + (t0 + t) * d;
        int64_t r = 0;
        for (; r + 4 <= nq; r += 4) {
            float four[4];
            dot4(q + qoff[r] * d, q + qoff[r + 1] * d, q + qoff[r + 2] * d, q + qoff[r + 3] * d, kt, d, a->scale,
                 four);
            s[r][t] = four[0], s[r + 1][t] = four[1], s[r + 2][t] = four[2], s[r + 3][t] = four[3];
        }
        for (; r < nq; ++r) s[r][t] = dot(q + qoff[r] * d, kt, d, a->scale);
    }
    for (int64_t r = 0; r < nq; ++r) {
        float m = -INFINITY, l = 0.0f;
        for (int64_t t = 0; t < len; ++t) m = s[r][t] > m ? s[r][t] : m;
        for (int64_t t = 0; t < len; ++t) {
            s[r][t] = expf(s[r][t] - m);
            l += s[r][t];
        }
        a->m[slot0 + r] = m, a->l[slot0 + r] = l;
        float *o = a->o + (slot0 + r) * d;
        for (int64_t e = 0; e < d; ++e) o[e] = 0.0f;
    }
    int64_t t = 0;
    for (; t + 4 <= len; t += 4) {
        const float *vt = v + (t0 + t) * d;
        for (int64_t r = 0; r < nq; ++r) {
            const float p[4] = {s[r][t], s[r][t + 1], s[r][t + 2], s[r][t + 3]};
            axpy4(a->o + (slot0 + r) * d, p, vt, vt + d, vt + 2 * d, vt + 3 * d, d);
        }
    }
    for (; t < len; ++t) {
        const float *vt = v + (t0 + t) * d;
        for (int64_t r = 0; r < nq; ++r) axpy(a->o + (slot0 + r) * d, s[r][t], vt, d);
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
