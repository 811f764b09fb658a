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
