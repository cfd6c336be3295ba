/*
 * quantize.c: float layer matrices -> int8 / fp8 with per-row scales, in
 * place in a model (quantize.h; the formats: docs/quantization.md).
 *
 * All matrices are quantised into one new 2 MB-page arena (CPU decode
 * streams them every token, util/hugepage.h) and one array of scales, rows
 * split over a thread pool, before anything in the model changes: a
 * failure (a non-finite weight, no memory) leaves the model as it was. Then
 * each tensor is retyped in place (so every pointer to it, the model's
 * included, sees the 8-bit data), its `<name>_scale` tensor is added and
 * the set's metadata names the format, so the model is exactly what
 * loading a `nanochat quantize` file gives.
 */
#include "quantize.h"

#include <float.h>
#include <stdio.h>
#include <string.h>

#include "../util/common.h"
#include "../util/hugepage.h"
#include "../util/mmap_file.h"
#include "../util/numeric.h"
#include "../util/threadpool.h"

/* ==== one row ====
 *
 * Loops run over groups of 8, one step at a time over the group, with 8
 * independent accumulators: the shape GCC vectorises at -O2 (a plain
 * element loop stayed scalar, one division and one dependent maximum per
 * weight, ~4x slower). */

enum { LANES = 8 };

/* max |w| of the row; *finite is false if it holds an infinity or a NaN
 * (w - w is then NaN, which a max would silently skip). */
static float row_absmax(const float *w, int64_t n, bool *finite) {
    float m[LANES] = {0}, z[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float a = w[i + j] < 0 ? -w[i + j] : w[i + j];
            m[j] = a > m[j] ? a : m[j];
            z[j] += w[i + j] - w[i + j];
        }
    for (; i < n; i++) {
        float a = w[i] < 0 ? -w[i] : w[i];
        m[0] = a > m[0] ? a : m[0];
        z[0] += w[i] - w[i];
    }
    float mx = 0, zs = 0;
    for (int j = 0; j < LANES; j++) {
        mx = m[j] > mx ? m[j] : mx;
        zs += z[j];
    }
    *finite = zs == 0;
    return mx;
}

static void quantize_int8(const float *w, int64_t n, float s, int8_t *q) {
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        float v[LANES];
        for (int j = 0; j < LANES; j++) v[j] = nc_rint_small(w[i + j] / s);
        for (int j = 0; j < LANES; j++) v[j] = v[j] > 127.0f ? 127.0f : v[j];
        for (int j = 0; j < LANES; j++) v[j] = v[j] < -127.0f ? -127.0f : v[j];
        for (int j = 0; j < LANES; j++) q[i + j] = (int8_t)(int32_t)v[j];
    }
    for (; i < n; i++) {
        float v = nc_rint_small(w[i] / s);
        q[i] = (int8_t)(int32_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
}

static void quantize_fp8(const float *w, int64_t n, float s, uint8_t *q) {
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        float v[LANES];
        for (int j = 0; j < LANES; j++) v[j] = w[i + j] / s;
        for (int j = 0; j < LANES; j++) q[i + j] = nc_f32_to_f8e4m3(v[j]);
    }
    for (; i < n; i++) q[i] = nc_f32_to_f8e4m3(w[i] / s);
}

bool nc_quantize_row_scale(const float *w, int64_t n, nc_weight_format f, float *scale) {
    bool finite;
    float amax = row_absmax(w, n, &finite);
    *scale = amax / (f == NC_WEIGHTS_INT8 ? 127.0f : NC_F8E4M3_MAX);
    return finite;
}

/* The row's scale (0 for a row of zeros, whose q are all 0); false if the
 * row is not finite (nothing written then). */
static bool quantize_row(const float *w, int64_t n, nc_weight_format f, void *q, float *scale) {
    float s;
    if (!nc_quantize_row_scale(w, n, f, &s)) return false;
    *scale = s;
    if (s == 0) memset(q, 0, (size_t)n);
    else if (f == NC_WEIGHTS_INT8) quantize_int8(w, n, s, q);
    else quantize_fp8(w, n, s, q);
    return true;
}

float nc_quantize_row_int8(const float *w, int64_t n, int8_t *q) {
    float s = 0;
    NC_ASSERT(quantize_row(w, n, NC_WEIGHTS_INT8, q, &s));
    return s;
}

float nc_quantize_row_fp8(const float *w, int64_t n, uint8_t *q) {
    float s = 0;
    NC_ASSERT(quantize_row(w, n, NC_WEIGHTS_FP8, q, &s));
    return s;
}

/* ==== a whole model ==== */

typedef struct {
    const nc_tensor *src;   /* float [rows, cols] */
    const nc_tensor **scale_slot; /* where the model keeps its scale tensor */
    int layer;              /* -1 for lm_head */
    nc_qmatrix which;
    uint8_t *q;             /* [rows, cols] in the arena */
    float *scale;           /* [rows] */
    int64_t first_row;      /* of this matrix among all rows of the job */
} qmatrix;

typedef struct {
    qmatrix *mats;
    int n_mats;
    nc_weight_format f;
    int64_t total_rows;
    float *scratch;         /* [n_threads, max_cols]: a row converted to fp32 */
    int64_t max_cols;
    int failed;             /* 0, or 1 + the matrix with a non-finite value */
    int64_t failed_row;
} qjob;

const float *nc_quantize_row_f32(const nc_tensor *t, int64_t r, float *buf) {
    int64_t n = t->shape[1];
    switch (t->dtype) {
    case NC_DTYPE_F32: return (const float *)t->data + r * n;
    case NC_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)t->data + r * n;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)p[i] << 16;
            memcpy(&buf[i], &u, 4);
        }
        return buf;
    }
    default: {
        const uint16_t *p = (const uint16_t *)t->data + r * n;
        for (int64_t i = 0; i < n; i++) buf[i] = nc_f16_to_f32(p[i]);
        return buf;
    }
    }
}

static void quantize_worker(void *ctx, int task, int n_tasks, int thread) {
    qjob *j = ctx;
    long lo, hi;
    nc_split_range((long)j->total_rows, n_tasks, task, 1, &lo, &hi);
    float *buf = j->scratch + (int64_t)thread * j->max_cols;
    int k = 0;
    for (int64_t g = lo; g < hi; g++) {
        while (g >= j->mats[k].first_row + j->mats[k].src->shape[0]) k++;
        qmatrix *qm = &j->mats[k];
        int64_t r = g - qm->first_row, n = qm->src->shape[1];
        const float *w = nc_quantize_row_f32(qm->src, r, buf);
        if (!quantize_row(w, n, j->f, qm->q + r * n, &qm->scale[r])) {
            int expected = 0;
            if (__atomic_compare_exchange_n(&j->failed, &expected, k + 1, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                j->failed_row = r;
        }
    }
}

/* The matrices to convert, with the slots of their scales. */
static int list_matrices(nc_model *m, bool lm_head, qmatrix *out) {
    int n = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        nc_layer_weights *w = &m->layers[l];
        nc_layer_scales *s = &w->scale;
        const nc_tensor *mats[] = {w->c_q, w->c_k, w->c_v, w->attn_proj, w->mlp_fc, w->mlp_proj};
        const nc_tensor **slots[] = {&s->c_q, &s->c_k, &s->c_v, &s->attn_proj, &s->mlp_fc, &s->mlp_proj};
        for (size_t i = 0; i < NC_ARRAY_LEN(mats); i++)
            out[n++] = (qmatrix){.src = mats[i], .scale_slot = slots[i], .layer = l, .which = (nc_qmatrix)i};
    }
    if (lm_head)
        out[n++] = (qmatrix){.src = m->lm_head, .scale_slot = &m->lm_head_scale, .layer = -1,
                             .which = NC_QMATRIX_LM_HEAD};
    return n;
}

/* Round to nearest: every matrix's rows split over a pool. */
static int round_to_nearest(qjob *j, int n_threads) {
    nc_threadpool *pool = nc_threadpool_new(n_threads);
    if (!pool) return -1;
    int n = nc_threadpool_size(pool);
    j->scratch = nc_xmalloc((size_t)n * (size_t)j->max_cols * sizeof(float));
    nc_threadpool_run(pool, quantize_worker, j, 4 * n);
    free(j->scratch);
    nc_threadpool_free(pool);
    if (j->failed)
        return nc_fail("tensor '%s' row %lld holds a non-finite value; it cannot be quantised",
                       j->mats[j->failed - 1].src->name, (long long)j->failed_row);
    return 0;
}

/* Another rounding: one matrix at a time, in listing order. */
static int round_with(const qjob *j, const nc_quant_rounding *r) {
    for (int i = 0; i < j->n_mats; i++) {
        const qmatrix *m = &j->mats[i];
        if (r->round(r->ctx, m->layer, m->which, m->src, j->f, m->q, m->scale)) return -1;
    }
    return 0;
}

int nc_model_quantize(nc_model *m, nc_weight_format f, bool lm_head, int n_threads) {
    return nc_model_quantize_rounded(m, f, lm_head, n_threads, NULL);
}

int nc_model_quantize_rounded(nc_model *m, nc_weight_format f, bool lm_head, int n_threads,
                              const nc_quant_rounding *rounding) {
    if (f == NC_WEIGHTS_FLOAT || f == m->weights) return 0;
    if (m->weights != NC_WEIGHTS_FLOAT)
        return nc_fail("the weights are already %s; --weights %s needs the float (bf16/fp32) checkpoint",
                       nc_weight_format_name(m->weights), nc_weight_format_name(f));
    qmatrix *mats = nc_xcalloc((size_t)(6 * m->cfg.n_layer + 1), sizeof *mats);
    qjob j = {.mats = mats, .n_mats = list_matrices(m, lm_head, mats), .f = f};
    size_t arena_bytes = 0;
    for (int i = 0; i < j.n_mats; i++) {
        mats[i].first_row = j.total_rows;
        j.total_rows += mats[i].src->shape[0];
        j.max_cols = NC_MAX(j.max_cols, mats[i].src->shape[1]);
        arena_bytes += ((size_t)nc_tensor_numel(mats[i].src) + 63) & ~(size_t)63;
    }
    uint8_t *arena = nc_alloc_huge(arena_bytes);
    float *scales = malloc((size_t)j.total_rows * sizeof(float));
    int rc = 0;
    if (!arena || !scales) {
        rc = nc_fail("out of memory for %zu MB of %s weights", arena_bytes >> 20, nc_weight_format_name(f));
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < j.n_mats; i++) {
        mats[i].q = arena + off;
        mats[i].scale = scales + mats[i].first_row;
        off += ((size_t)nc_tensor_numel(mats[i].src) + 63) & ~(size_t)63;
    }
    rc = rounding ? round_with(&j, rounding) : round_to_nearest(&j, n_threads);
    if (rc) goto done;

    nc_tensor_set *ts = m->tensors;
    nc_dtype dtype = nc_weight_format_dtype(f);
    for (int i = 0; i < j.n_mats; i++) {
        const nc_tensor *t = mats[i].src;
        char name[192];
        snprintf(name, sizeof name, "%s_scale", t->name);
        NC_ASSERT(nc_tensor_set_add(ts, name, NC_DTYPE_F32, 1, &t->shape[0], mats[i].scale) == 0);
        *mats[i].scale_slot = nc_tensor_set_find(ts, name);
        const void *old = t->data;
        size_t old_bytes = t->nbytes;
        nc_tensor_set_retype(ts, t, dtype, mats[i].q);
        if (nc_tensor_set_in_mapping(ts, old, old_bytes)) nc_release_pages(old, old_bytes);
    }
    nc_tensor_set_keep_buffer(ts, arena);
    nc_tensor_set_keep_buffer(ts, scales);
    arena = NULL;
    scales = NULL;
    nc_tensor_set_set_meta(ts, NC_QUANT_META_FORMAT, nc_weight_format_meta(f));
    nc_tensor_set_set_meta(ts, NC_QUANT_META_SCHEME, NC_QUANT_SCHEME);
    nc_tensor_set_set_meta(ts, NC_QUANT_META_VERSION, NC_QUANT_VERSION);
    nc_tensor_set_set_meta(ts, NC_QUANT_META_ROUNDING, rounding ? rounding->name : "nearest");
    m->weights = f;
done:
    free(arena);
    free(scales);
    free(mats);
    return rc;
}
