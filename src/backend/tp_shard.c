/*
 * tp_shard.c: the tensor-parallel split of a model and each rank's share
 * (see tp_shard.h).
 */
#include "tp_shard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

/* ==== the split ==== */

int nc_tp_split_plan(const nc_model_config *c, int n, nc_tp_split *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || n > NC_TP_MAX_RANKS)
        return nc_fail("tensor parallel over %d GPUs: 1 to %d are supported", n, NC_TP_MAX_RANKS);
    int Hkv = c->n_kv_head, G = c->n_head / c->n_kv_head;
    if (Hkv < n)
        return nc_fail("tensor parallel over %d GPUs: the model has %d kv heads, and each GPU needs at least one",
                       n, Hkv);
    if (c->mlp_hidden % NC_TP_MLP_GRANULE)
        return nc_fail("tensor parallel: the MLP width %d is not a multiple of %d", c->mlp_hidden,
                       NC_TP_MLP_GRANULE);
    int granules = c->mlp_hidden / NC_TP_MLP_GRANULE;
    if (granules < n)
        return nc_fail("tensor parallel over %d GPUs: the MLP has only %d runs of %d units", n, granules,
                       NC_TP_MLP_GRANULE);
    out->n = n;
    for (int r = 0; r < n; r++) {
        out->kv0[r + 1] = out->kv0[r] + Hkv / n + (r < Hkv % n ? 1 : 0);
        out->head0[r + 1] = out->kv0[r + 1] * G;
    }
    /* Weights per layer, in units of n_embd: a kv head brings G query rows,
     * a key and a value row (of D each) and G * D columns of attn.c_proj;
     * an MLP granule 64 rows of c_fc and 64 columns of c_proj. Each rank
     * gets the granules that bring it closest to an equal share. */
    double per_head = (2.0 * G + 2.0) * c->head_dim, per_granule = 2.0 * NC_TP_MLP_GRANULE;
    double target = (Hkv * per_head + granules * per_granule) / n;
    double want[NC_TP_MAX_RANKS];
    int g[NC_TP_MAX_RANKS], sum = 0;
    for (int r = 0; r < n; r++) {
        want[r] = (target - (out->kv0[r + 1] - out->kv0[r]) * per_head) / per_granule;
        g[r] = NC_MAX(1, (int)floor(want[r]));
        sum += g[r];
    }
    while (sum != granules) {
        /* Largest remainder first (the first rank on ties); taking back, the
         * most over-served rank that can spare one. */
        int pick = -1;
        for (int r = 0; r < n; r++) {
            double gap = want[r] - g[r];
            if (sum > granules && g[r] == 1) continue;
            if (pick < 0 || (sum < granules ? gap > want[pick] - g[pick] : gap < want[pick] - g[pick])) pick = r;
        }
        g[pick] += sum < granules ? 1 : -1;
        sum += sum < granules ? 1 : -1;
    }
    for (int r = 0; r < n; r++) out->mlp0[r + 1] = out->mlp0[r] + g[r] * NC_TP_MLP_GRANULE;
    return 0;
}

/* ==== a rank's share ==== */

/* Rows [r0, r1) of a 2-D tensor (elements of a 1-D one: an 8-bit
 * matrix's row scales), as a view into its memory. */
static const nc_tensor *rows_view(nc_tensor_set *set, const nc_tensor *t, int64_t r0, int64_t r1) {
    NC_ASSERT((t->ndim == 1 || t->ndim == 2) && r0 >= 0 && r1 <= t->shape[0] && r0 < r1);
    size_t row = (size_t)(t->ndim == 2 ? t->shape[1] : 1) * nc_dtype_size(t->dtype);
    int64_t shape[2] = {r1 - r0, t->ndim == 2 ? t->shape[1] : 0};
    if (nc_tensor_set_add(set, t->name, t->dtype, t->ndim, shape, (const char *)t->data + (size_t)r0 * row))
        return NULL;
    return nc_tensor_set_at(set, nc_tensor_set_count(set) - 1);
}

/* Columns [c0, c1) of a 2-D tensor, copied into a buffer the set owns. */
static const nc_tensor *cols_copy(nc_tensor_set *set, const nc_tensor *t, int64_t c0, int64_t c1) {
    NC_ASSERT(t->ndim == 2 && c0 >= 0 && c1 <= t->shape[1] && c0 < c1);
    size_t es = nc_dtype_size(t->dtype), width = (size_t)(c1 - c0) * es, row = (size_t)t->shape[1] * es;
    char *buf = malloc((size_t)t->shape[0] * width);
    if (!buf) {
        nc_fail("tensor parallel: out of memory copying a slice of %s", t->name);
        return NULL;
    }
    for (int64_t i = 0; i < t->shape[0]; i++)
        memcpy(buf + (size_t)i * width, (const char *)t->data + (size_t)i * row + (size_t)c0 * es, width);
    nc_tensor_set_keep_buffer(set, buf);
    int64_t shape[2] = {t->shape[0], c1 - c0};
    if (nc_tensor_set_add(set, t->name, t->dtype, 2, shape, buf)) return NULL;
    return nc_tensor_set_at(set, nc_tensor_set_count(set) - 1);
}

static float *copy_floats(const float *src, int n) {
    if (!src) return NULL;
    float *dst = nc_xmalloc((size_t)n * sizeof *dst);
    memcpy(dst, src, (size_t)n * sizeof *dst);
    return dst;
}

/* A whole tensor, as a view (the replicated ones). */
static const nc_tensor *whole(nc_tensor_set *set, const nc_tensor *t) {
    if (!t) return NULL;
    if (nc_tensor_set_add(set, t->name, t->dtype, t->ndim, t->shape, t->data)) return NULL;
    return nc_tensor_set_at(set, nc_tensor_set_count(set) - 1);
}

/* The layer's matrices cut to rank r's heads and MLP units; false (with
 * nc_error()) when a copy fails. */
static bool shard_layer(nc_tensor_set *set, const nc_layer_weights *w, const nc_tp_split *sp, int r, int D,
                        nc_layer_weights *out) {
    int64_t q0 = (int64_t)sp->head0[r] * D, q1 = (int64_t)sp->head0[r + 1] * D;
    int64_t k0 = (int64_t)sp->kv0[r] * D, k1 = (int64_t)sp->kv0[r + 1] * D;
    int64_t f0 = sp->mlp0[r], f1 = sp->mlp0[r + 1];
    memset(out, 0, sizeof *out);
    out->c_q = rows_view(set, w->c_q, q0, q1);
    out->c_k = rows_view(set, w->c_k, k0, k1);
    out->c_v = rows_view(set, w->c_v, k0, k1);
    out->attn_proj = cols_copy(set, w->attn_proj, q0, q1);
    out->mlp_fc = rows_view(set, w->mlp_fc, f0, f1);
    out->mlp_proj = cols_copy(set, w->mlp_proj, f0, f1);
    if (w->ve_gate) out->ve_gate = rows_view(set, w->ve_gate, sp->kv0[r], sp->kv0[r + 1]);
    if (w->value_embed) out->value_embed = cols_copy(set, w->value_embed, k0, k1);
    bool ok = out->c_q && out->c_k && out->c_v && out->attn_proj && out->mlp_fc && out->mlp_proj &&
              (!w->ve_gate || out->ve_gate) && (!w->value_embed || out->value_embed);
    if (!ok || !w->scale.c_q) return ok;
    /* 8-bit matrices: a scale per output row, so the column-parallel
     * matrices' scales split with their rows and the row-parallel ones keep
     * all of theirs (every rank still writes all C outputs). */
    nc_layer_scales *sc = &out->scale;
    sc->c_q = rows_view(set, w->scale.c_q, q0, q1);
    sc->c_k = rows_view(set, w->scale.c_k, k0, k1);
    sc->c_v = rows_view(set, w->scale.c_v, k0, k1);
    sc->attn_proj = whole(set, w->scale.attn_proj);
    sc->mlp_fc = rows_view(set, w->scale.mlp_fc, f0, f1);
    sc->mlp_proj = whole(set, w->scale.mlp_proj);
    return sc->c_q && sc->c_k && sc->c_v && sc->attn_proj && sc->mlp_fc && sc->mlp_proj;
}

nc_model *nc_tp_shard(const nc_model *m, const nc_tp_split *sp, int r) {
    NC_ASSERT(r >= 0 && r < sp->n);
    const nc_model_config *c = &m->cfg;
    nc_model *s = nc_xcalloc(1, sizeof *s);
    s->cfg = *c;
    s->cfg.n_head = sp->head0[r + 1] - sp->head0[r];
    s->cfg.n_kv_head = sp->kv0[r + 1] - sp->kv0[r];
    s->cfg.mlp_hidden = sp->mlp0[r + 1] - sp->mlp0[r];
    s->weights = m->weights;
    s->tensors = nc_tensor_set_new();
    s->layers = nc_xcalloc((size_t)c->n_layer, sizeof *s->layers);
    s->resid_lambdas = copy_floats(m->resid_lambdas, c->n_layer);
    s->x0_lambdas = copy_floats(m->x0_lambdas, c->n_layer);
    s->smear_lambda = m->smear_lambda;
    s->backout_lambda = m->backout_lambda;
    char source[512];
    snprintf(source, sizeof source, "%s, tensor-parallel rank %d of %d", m->source ? m->source : "model", r, sp->n);
    s->source = nc_xstrdup(source);
    s->format = nc_xstrdup(m->format ? m->format : "");
    bool ok = (s->wte = whole(s->tensors, m->wte)) && (s->lm_head = whole(s->tensors, m->lm_head)) &&
              (!m->lm_head_scale || (s->lm_head_scale = whole(s->tensors, m->lm_head_scale))) &&
              (!m->smear_gate || (s->smear_gate = whole(s->tensors, m->smear_gate)));
    for (int l = 0; l < c->n_layer && ok; l++)
        ok = shard_layer(s->tensors, &m->layers[l], sp, r, c->head_dim, &s->layers[l]);
    if (!ok) {
        nc_model_free(s);
        return NULL;
    }
    return s;
}
