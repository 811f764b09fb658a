/* The decode step's small ops on the CPU, fused (fp32): the CPU side of
 * engine/fused_step.py, as kernels/rms_norm.py and kernels/rope_cache.py are
 * its CUDA side.
 *
 * In eager PyTorch each of these is several operators on a few kilobytes
 * (an RMSNorm is six), each with its own dispatch cost whatever its size.
 * Here each is one call, and the decode step gets 1.10-1.14x faster
 * (benchmarks/decode.py, results/decode-cpu8-2026-11-24.json). Rows are independent and each sum runs in a
 * fixed order, so a candidate's result does not depend on how many come
 * with it. Built with cpu_rows.c into one library by cpu_rows.py.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_vec.h"

#define MAX_HEAD_DIM 1024

/* 1 / sqrt(mean(v^2) + eps), with eight partial sums (vectorizable, fixed order). */
static float rms_scale(const float *v, int64_t n, float eps) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += v[i + j] * v[i + j];
    float s = 0.0f;
    for (int j = 0; j < 8; ++j) s += acc[j];
    for (; i < n; ++i) s += v[i] * v[i];
    return 1.0f / sqrtf(s / (float)n + eps);
}

/* Per row r of [rows, d]:
 *   s = x + (wd ? rmsnorm(delta) * wd : delta)   (written to sum; skipped without delta: s = x)
 *   out = rmsnorm(s) * wo                         (skipped without wo)
 * Weights are the norms' effective weights (Gemma's 1 + w already added). */
int tealtab_add_rms_norm(const float *x, const float *delta, const float *wd, const float *wo, float *sum,
                         float *out, int64_t rows, int64_t d, float eps) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *src = x + r * d;
        if (delta) {
            const float *dr = delta + r * d;
            float *sr = sum + r * d;
            if (wd) {
                float sc = rms_scale(dr, d, eps);
                for (int64_t i = 0; i < d; ++i) sr[i] = src[i] + (dr[i] * sc) * wd[i];
            } else {
                for (int64_t i = 0; i < d; ++i) sr[i] = src[i] + dr[i];
            }
            src = sr;
        }
        if (wo) {
            float sc = rms_scale(src, d, eps);
            float *o = out + r * d;
            for (int64_t i = 0; i < d; ++i) o[i] = (src[i] * sc) * wo[i];
        }
    }
    return 0;
}

/* One head: optional RMSNorm with weight w, then RoPE's half rotation
 * dst = x cos + concat(-x[d/2:], x[:d/2]) sin. */
static void norm_rope(const float *src, const float *w, float eps, const float *cs, const float *sn, int64_t d,
                      float *dst) {
    float normed[MAX_HEAD_DIM];
    const float *x = src;
    if (w) {
        float sc = rms_scale(src, d, eps);
        for (int64_t i = 0; i < d; ++i) normed[i] = (src[i] * sc) * w[i];
        x = normed;
    }
    int64_t half = d / 2;
    for (int64_t i = 0; i < half; ++i) dst[i] = x[i] * cs[i] + (-x[i + half]) * sn[i];
    for (int64_t i = half; i < d; ++i) dst[i] = x[i] * cs[i] + x[i - half] * sn[i];
}

/* qkv [n, (h + 2 hkv) d] -> q [n, h, d]; k (rotated) and v to the cache:
 * candidate c, KV head j at gk + c * stride_n + j * stride_h (gk, gv point at the step's slot). */
int tealtab_rope_qkv(const float *qkv, const float *cs, const float *sn, const float *qw, const float *kw, float eps,
                     int64_t n, int64_t h, int64_t hkv, int64_t d, float *q, float *gk, float *gv,
                     int64_t stride_n, int64_t stride_h) {
    if (d > MAX_HEAD_DIM || d % 2) return -1;
    int64_t width = (h + 2 * hkv) * d;
    for (int64_t c = 0; c < n; ++c) {
        const float *row = qkv + c * width;
        for (int64_t j = 0; j < h; ++j) norm_rope(row + j * d, qw, eps, cs, sn, d, q + (c * h + j) * d);
        for (int64_t j = 0; j < hkv; ++j) {
            norm_rope(row + (h + j) * d, kw, eps, cs, sn, d, gk + c * stride_n + j * stride_h);
            memcpy(gv + c * stride_n + j * stride_h, row + (h + hkv + j) * d, (size_t)d * sizeof(float));
        }
    }
    return 0;
}

/* ---- The sampler's row statistics: argmax and log-sum-exp of logits ----
 *
 * Every decode step samples from logits over the whole vocabulary (262144
 * for Gemma 3): the greedy token (argmax) and the chosen token's log
 * probability (logsumexp). On 2 cores torch's argmax took ~450 us and its
 * logsumexp ~150 us a row, several percent of the step. Here each row is cut
 * into fixed chunks of STAT_CHUNK (parts for cpu_pool.c), each chunk keeps
 * its max and sum(exp(x - max)), and the chunks merge in order (the argmax
 * is then sought in the first chunk holding the max): the result does not
 * depend on the thread count. exp is a
 * polynomial (relative error ~2e-7) on 16 lanes, as glibc's scalar expf
 * would take milliseconds a row. */
typedef void (*tealtab_part_fn)(void *ctx, int64_t part);
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts);

#define STAT_CHUNK 16384
#define MAX_STAT_CHUNKS 4096
typedef struct {
    const float *x;
    int64_t v, ld, chunks;
    float *cmax, *csum;
} stat_job;

/* One chunk: its max and sum(exp(x - max)); the sum is NaN where the chunk
 * holds NaN or +inf (x - inf is NaN), which the vector max passes over. */
static void stat_part(void *ctx, int64_t part) {
    const stat_job *j = (const stat_job *)ctx;
    const int64_t row = part / j->chunks, c = part % j->chunks;
    const int64_t lo = c * STAT_CHUNK, hi = lo + STAT_CHUNK < j->v ? lo + STAT_CHUNK : j->v;
    const float *x = j->x + row * j->ld;
    const vf16 ninf = (vf16){0} - INFINITY;
    /* Four independent maxima: one compare-and-select chain would cost its latency per vector. */
    vf16 vm[4] = {ninf, ninf, ninf, ninf};
    int64_t i = lo;
    for (; i + 64 <= hi; i += 64)
        for (int u = 0; u < 4; ++u) {
            vf16 xv;
            __builtin_memcpy(&xv, x + i + 16 * u, sizeof xv);
            vm[u] = max16(xv, vm[u]);
        }
    float m = -INFINITY;
    for (int u = 0; u < 4; ++u)
        for (int l = 0; l < 16; ++l) m = vm[u][l] > m ? vm[u][l] : m;
    for (int64_t k = i; k < hi; ++k) m = x[k] > m ? x[k] : m;
    /* A chunk of -inf (and NaN) still takes the pass, from 0, so that its NaN shows. */
    const float base = m > -INFINITY ? m : 0.0f;
    float s = 0.0f;
    {
        vf16 acc[2] = {{0}, {0}};
        for (i = lo; i + 32 <= hi; i += 32)
            for (int u = 0; u < 2; ++u) {
                vf16 xv;
                __builtin_memcpy(&xv, x + i + 16 * u, sizeof xv);
                acc[u] += exp_nonpositive(xv - base);
            }
        for (; i < hi; ++i) {
            vf16 one = ninf; /* the tail, one lane at a time */
            one[0] = x[i];
            acc[0] += exp_nonpositive(one - base);
        }
        acc[0] += acc[1];
        for (int l = 0; l < 16; ++l) s += acc[0][l];
    }
    j->cmax[part] = m, j->csum[part] = s;
}

/* x [rows][ld] fp32, v columns -> idx[r] = first argmax, lse[r] = log sum exp.
 * Returns 0; 1 where a row holds NaN or inf (the caller uses torch's ops,
 * whose conventions cover them); -1 for a shape it does not take. */
int tealtab_argmax_lse(const float *x, int64_t rows, int64_t v, int64_t ld, int64_t *idx, float *lse) {
    if (rows < 1 || v < 1 || ld < v) return -1;
    const int64_t chunks = (v + STAT_CHUNK - 1) / STAT_CHUNK;
    if (rows * chunks > MAX_STAT_CHUNKS) return -1;
    float cmax[MAX_STAT_CHUNKS], csum[MAX_STAT_CHUNKS];
    stat_job j = {x, v, ld, chunks, cmax, csum};
    tealtab_parallel(stat_part, &j, rows * chunks);
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r * chunks;
        float m = -INFINITY, s = 0.0f;
        int64_t first = 0; /* the first chunk holding the max */
        for (int64_t c = 0; c < chunks; ++c) {
            if (!(csum[b + c] == csum[b + c])) return 1;
            if (cmax[b + c] > m) m = cmax[b + c], first = c;
        }
        if (m == -INFINITY) { /* every logit -inf: torch's argmax 0, logsumexp -inf */
            idx[r] = 0, lse[r] = -INFINITY;
            continue;
        }
        const float *row = x + r * ld;
        int64_t at = first * STAT_CHUNK;
        while (!(row[at] == m)) ++at;
        idx[r] = at;
        for (int64_t c = 0; c < chunks; ++c) s += cmax[b + c] == -INFINITY ? 0.0f : csum[b + c] * expf(cmax[b + c] - m);
        lse[r] = m + logf(s);
    }
    return 0;
}

/* ---- A gated MLP's middle: act(gate) * up ----
 * Both activations are x * sigmoid(z): SiLU with z = x, tanh-approximated
 * GELU with z = 2 sqrt(2/pi) (x + 0.044715 x^3), since 0.5 (1 + tanh(u)) =
 * sigmoid(2u). sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e) with e = exp(-|z|),
 * which never overflows. One call instead of torch's three operators
 * (chunk, activation, product), each a dispatch of its own. */
static inline vf16 gate16(vf16 x, int gelu) {
    const vf16 zero = {0};
    const vf16 z = gelu ? (x + x * x * x * 0.044715f) * 1.5957691216057308f : x;
    const vf16 e = exp_nonpositive(max16(zero - z, z) * -1.0f); /* exp(-|z|) */
    const vf16 one = zero + 1.0f;
    return x * (select16(z >= 0.0f, one, e) / (one + e));
}

/* h [rows][2 inter] = gate | up -> out [rows][inter] = act(gate) * up;
 * activation 0: SiLU, 1: tanh-approximated GELU. Returns 0, -1 for another. */
int tealtab_gated_act(const float *h, int64_t rows, int64_t inter, int activation, float *out) {
    if (activation != 0 && activation != 1) return -1;
    for (int64_t r = 0; r < rows; ++r) {
        const float *gate = h + r * 2 * inter, *up = gate + inter;
        float *o = out + r * inter;
        int64_t i = 0;
        for (; i + 16 <= inter; i += 16) store16(o + i, gate16(load16(gate + i), activation) * load16(up + i));
        for (; i < inter; ++i) {
            vf16 one = {0};
            one[0] = gate[i];
            o[i] = gate16(one, activation)[0] * up[i];
        }
    }
    return 0;
}
