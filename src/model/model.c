/*
 * model.c: from a tensor set (nanochat state-dict names) and the sizes from
 * meta/config to an nc_model: recognises the architecture generation from
 * the tensors present (docs/model.md, Generations), fills in the constants it implies,
 * checks every tensor's shape and dtype, and refuses anything it does not
 * know with a message naming the offending tensor.
 *
 * Mirrors nanochat/gpt.py's GPT.__init__: which parameters exist and their
 * shapes (`transformer.wte`, `transformer.h.{l}.attn.c_q/c_k/c_v/c_proj`,
 * `mlp.c_fc/c_proj`, `lm_head`, V2+ `resid_lambdas`/`x0_lambdas`, V3+
 * `value_embeds.{l}` and `attn.ve_gate` on alternating layers, V6
 * `smear_gate`, `smear_lambda`, `backout_lambda`).
 */
#include "model.h"

#include <ctype.h>
#include <float.h>
#include <stdio.h>
#include <string.h>

#include "../util/common.h"

const char *nc_generation_name(nc_generation g) {
    switch (g) {
    case NC_GEN_V1: return "V1";
    case NC_GEN_V2: return "V2";
    case NC_GEN_V3: return "V3";
    case NC_GEN_V4: return "V4";
    case NC_GEN_V5: return "V5";
    case NC_GEN_V6: return "V6";
    default: return "unknown";
    }
}

/* ==== config queries ==== */

int nc_config_window(const nc_model_config *c, int layer) {
    NC_ASSERT(layer >= 0 && layer < c->n_layer);
    if (c->generation == NC_GEN_V1) return INT32_MAX;
    size_t np = strlen(c->window_pattern);
    NC_ASSERT(np > 0);
    char kind = c->window_pattern[layer % np];
    if (layer == c->n_layer - 1) kind = 'L'; /* nanochat: the last layer always sees the full context */
    if (kind == 'L') return c->sequence_len;
    int s = c->sequence_len;
    switch (c->generation) {
    case NC_GEN_V5: return (s + 3 * 128 - 1) / (3 * 128) * 128; /* ceil(seq/3/128)*128 */
    case NC_GEN_V6: return (s + 4 * 128 - 1) / (4 * 128) * 128; /* ceil(seq/4/128)*128 */
    default: return s / 2;                                        /* V2-V4 */
    }
}

bool nc_config_has_value_embed(const nc_model_config *c, int layer) {
    return c->has_value_embeds && layer % 2 == (c->n_layer - 1) % 2;
}

int64_t nc_config_param_count(const nc_model_config *c) {
    int64_t C = c->n_embd, L = c->n_layer, Vp = c->padded_vocab;
    int64_t qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_kv_head * c->head_dim;
    int64_t F = c->mlp_hidden;
    int64_t per_layer = qd * C + 2 * kvd * C + C * qd + F * C + C * F;
    int64_t n = 2 * Vp * C + L * per_layer;
    if (c->has_lambdas) n += 2 * L;
    for (int l = 0; l < c->n_layer; l++)
        if (nc_config_has_value_embed(c, l)) n += Vp * kvd + (int64_t)c->n_kv_head * c->ve_gate_channels;
    if (c->has_smear) n += c->smear_channels + 2;
    return n;
}

/* ==== generation detection ==== */

static bool has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Recognises the generation from the tensor names present (docs/formats.md,
 * Recognising the generation). */
static int detect_generation(const nc_tensor_set *ts, nc_generation *out) {
    bool resid = nc_tensor_set_find(ts, "resid_lambdas") != NULL;
    bool x0 = nc_tensor_set_find(ts, "x0_lambdas") != NULL;
    bool smear_g = nc_tensor_set_find(ts, "smear_gate.weight") != NULL;
    bool smear_l = nc_tensor_set_find(ts, "smear_lambda") != NULL;
    bool backout = nc_tensor_set_find(ts, "backout_lambda") != NULL;
    const nc_tensor *gate = NULL, *ve = NULL;
    for (int i = 0; i < nc_tensor_set_count(ts); i++) {
        const nc_tensor *t = nc_tensor_set_at(ts, i);
        if (!gate && has_suffix(t->name, ".attn.ve_gate.weight")) gate = t;
        if (!ve && has_prefix(t->name, "value_embeds.")) ve = t;
    }
    if (!nc_tensor_set_find(ts, "transformer.wte.weight"))
        return nc_fail("not a nanochat model: no tensor 'transformer.wte.weight' (%d tensors, first '%s')",
                       nc_tensor_set_count(ts),
                       nc_tensor_set_count(ts) ? nc_tensor_set_at(ts, 0)->name : "none");
    if (resid != x0)
        return nc_fail("unknown architecture: '%s' present without '%s'",
                       resid ? "resid_lambdas" : "x0_lambdas", resid ? "x0_lambdas" : "resid_lambdas");
    if ((gate != NULL) != (ve != NULL))
        return nc_fail("unknown architecture: '%s' present without any %s", gate ? gate->name : ve->name,
                       gate ? "value_embeds.*" : "attn.ve_gate");
    if (!(smear_g == smear_l && smear_l == backout))
        return nc_fail("unknown architecture: smear_gate.weight/smear_lambda/backout_lambda must all be "
                       "present (V6) or all absent; found %s%s%s",
                       smear_g ? "smear_gate.weight " : "", smear_l ? "smear_lambda " : "",
                       backout ? "backout_lambda" : "");
    if (!resid) {
        if (ve || smear_g)
            return nc_fail("unknown architecture: '%s' present but no resid_lambdas/x0_lambdas",
                           ve ? ve->name : "smear_gate.weight");
        *out = NC_GEN_V1;
        return 0;
    }
    if (!ve) {
        if (smear_g) return nc_fail("unknown architecture: smear_gate present without value embeddings");
        *out = NC_GEN_V2;
        return 0;
    }
    if (gate->ndim != 2)
        return nc_fail("tensor '%s' has %d dimensions, expected 2", gate->name, gate->ndim);
    int64_t ch = gate->shape[1];
    if (ch == 32 && !smear_g) {
        *out = NC_GEN_V3; /* caller resolves V3 vs V4 */
        return 0;
    }
    if (ch == 12) {
        *out = smear_g ? NC_GEN_V6 : NC_GEN_V5;
        return 0;
    }
    return nc_fail("unknown architecture: '%s' has %lld input channels%s (known: 32 for V3/V4, 12 for V5/V6)",
                   gate->name, (long long)ch, smear_g ? " with smear" : "");
}

/* Resolves the detected family against an explicit generation in `sizes`
 * (needed to tell V3 from V4, which differ only in the softcap). */
static int resolve_generation(nc_generation detected, nc_generation requested, nc_generation *out) {
    if (detected == NC_GEN_V3) {
        if (requested == NC_GEN_V3 || requested == NC_GEN_V4) {
            *out = requested;
            return 0;
        }
        return nc_fail("this checkpoint is nanochat V3 or V4 (value embeddings with a 32-channel ve_gate); "
                       "the two differ only in the logit softcap (15 vs 20) and cannot be told apart from "
                       "the tensors, so it is refused rather than guessed");
    }
    if (requested != NC_GEN_UNKNOWN && requested != detected)
        return nc_fail("the tensors say nanochat %s but %s was requested", nc_generation_name(detected),
                       nc_generation_name(requested));
    *out = detected;
    return 0;
}

/* Fills in the constants that the generation implies (docs/model.md, Generations). */
static void set_generation_constants(nc_model_config *c, nc_generation g) {
    c->generation = g;
    c->rope_base = (g >= NC_GEN_V5) ? 100000.0f : 10000.0f;
    c->softcap = (g == NC_GEN_V4) ? 20.0f : 15.0f;
    c->qk_scale = g == NC_GEN_V5 ? 1.15f : g == NC_GEN_V6 ? 1.2f : 1.0f;
    /* nanochat calls F.rms_norm without eps, so PyTorch uses FLT_EPSILON. */
    c->norm_eps = FLT_EPSILON;
    c->rope_tables_bf16 = (g == NC_GEN_V1);
    c->has_lambdas = g >= NC_GEN_V2;
    c->has_value_embeds = g >= NC_GEN_V3;
    c->ve_gate_channels = g >= NC_GEN_V5 ? 12 : g >= NC_GEN_V3 ? 32 : 0;
    c->ve_gate_scale = g >= NC_GEN_V5 ? 3.0f : g >= NC_GEN_V3 ? 2.0f : 0.0f;
    c->has_smear = g == NC_GEN_V6;
    c->smear_channels = g == NC_GEN_V6 ? 24 : 0;
}

/* ==== size validation ==== */

static int check_sizes(const nc_model_config *s) {
    if (s->n_layer < 1 || s->n_layer > 4096) return nc_fail("n_layer %d out of range (1..4096)", s->n_layer);
    if (s->n_embd < 1 || s->n_embd > (1 << 20)) return nc_fail("n_embd %d out of range", s->n_embd);
    if (s->n_head < 1 || s->n_embd % s->n_head)
        return nc_fail("n_head %d does not divide n_embd %d", s->n_head, s->n_embd);
    if ((s->n_embd / s->n_head) % 2)
        return nc_fail("head dim %d (n_embd / n_head) must be even for rotary embeddings", s->n_embd / s->n_head);
    if (s->n_kv_head < 1 || s->n_kv_head > s->n_head || s->n_head % s->n_kv_head)
        return nc_fail("n_kv_head %d must divide n_head %d", s->n_kv_head, s->n_head);
    if (s->vocab_size < 1 || s->vocab_size > (1 << 24)) return nc_fail("vocab_size %d out of range", s->vocab_size);
    if (s->sequence_len < 1 || s->sequence_len > (1 << 24))
        return nc_fail("sequence_len %d out of range", s->sequence_len);
    return 0;
}

static int set_window_pattern(nc_model_config *c, const char *given) {
    if (c->generation == NC_GEN_V1) {
        for (const char *p = given; *p; p++)
            if (toupper((unsigned char)*p) != 'L')
                return nc_fail("meta has window_pattern '%s' but the tensors are V1 (no resid_lambdas), "
                               "which only knows full attention: unknown architecture", given);
        snprintf(c->window_pattern, sizeof c->window_pattern, "L");
        return 0;
    }
    /* nanochat's default since V2 (docs/model.md, Attention). */
    if (!*given) given = "SSSL";
    size_t n = strlen(given);
    if (n >= sizeof c->window_pattern) return nc_fail("window_pattern '%.40s...' too long", given);
    for (size_t i = 0; i < n; i++) {
        char ch = (char)toupper((unsigned char)given[i]);
        if (ch != 'S' && ch != 'L') return nc_fail("window_pattern '%s' may only contain S and L", given);
        c->window_pattern[i] = ch;
    }
    c->window_pattern[n] = 0;
    return 0;
}

/* ==== tensor checks ==== */

typedef struct {
    const nc_tensor_set *ts;
    const char **names; /* every expected name, to spot unexpected tensors */
    int n_names, cap;
    char gen[8];
    int n_layer;
} checker;

static void remember(checker *ck, const char *name) {
    if (ck->n_names == ck->cap) {
        ck->cap = ck->cap ? 2 * ck->cap : 64;
        ck->names = nc_xrealloc(ck->names, (size_t)ck->cap * sizeof(char *));
    }
    ck->names[ck->n_names++] = name;
}

static void shape_text(const nc_tensor *t, char *buf, size_t cap) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < t->ndim && off < cap - 24; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
}

/* The tensor `name` with shape [d0] (ndim 1) or [d0, d1], any dtype. */
static const nc_tensor *expect_shape(checker *ck, const char *name, int ndim, int64_t d0, int64_t d1) {
    const nc_tensor *t = nc_tensor_set_find(ck->ts, name);
    if (!t) {
        nc_fail("checkpoint lacks tensor '%s' (expected in a nanochat %s model)", name, ck->gen);
        return NULL;
    }
    remember(ck, t->name);
    int64_t want[2] = {d0, d1};
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[128], exp[64];
        shape_text(t, got, sizeof got);
        if (ndim == 1) snprintf(exp, sizeof exp, "%lld", (long long)d0);
        else snprintf(exp, sizeof exp, "%lld, %lld", (long long)d0, (long long)d1);
        nc_fail("tensor '%s' has shape [%s], expected [%s] from the config", name, got, exp);
        return NULL;
    }
    return t;
}

static bool is_float(nc_dtype d) { return d == NC_DTYPE_F32 || d == NC_DTYPE_BF16 || d == NC_DTYPE_F16; }
static bool is_8bit(nc_dtype d) { return d == NC_DTYPE_I8 || d == NC_DTYPE_F8_E4M3; }

/* A float tensor (embeddings, gates, lambdas). */
static const nc_tensor *expect(checker *ck, const char *name, int ndim, int64_t d0, int64_t d1) {
    const nc_tensor *t = expect_shape(ck, name, ndim, d0, d1);
    if (t && !is_float(t->dtype)) {
        nc_fail("tensor '%s' has dtype %s; weights must be f32, bf16 or f16", name, nc_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

/* A linear layer's weight [d0, d1]: float, or 8-bit (i8 / f8_e4m3) with its
 * per-row scale `<name>_scale`, f32 [d0], finite and >= 0, in *scale. */
static const nc_tensor *expect_matrix(checker *ck, const char *name, int64_t d0, int64_t d1,
                                      const nc_tensor **scale) {
    *scale = NULL;
    const nc_tensor *t = expect_shape(ck, name, 2, d0, d1);
    if (!t || is_float(t->dtype)) return t;
    if (!is_8bit(t->dtype)) {
        nc_fail("tensor '%s' has dtype %s; linear weights must be f32, bf16, f16, or i8 / f8_e4m3 with a scale",
                name, nc_dtype_name(t->dtype));
        return NULL;
    }
    char sname[160];
    snprintf(sname, sizeof sname, "%s_scale", name);
    const nc_tensor *s = nc_tensor_set_find(ck->ts, sname);
    if (!s) {
        nc_fail("tensor '%s' is %s but its scale '%s' is missing (8-bit weights need one f32 scale per row)",
                name, nc_dtype_name(t->dtype), sname);
        return NULL;
    }
    remember(ck, s->name);
    if (s->dtype != NC_DTYPE_F32 || s->ndim != 1 || s->shape[0] != d0) {
        char got[128];
        shape_text(s, got, sizeof got);
        nc_fail("scale '%s' is %s [%s]; it must be f32 [%lld], one per row of '%s'", sname,
                nc_dtype_name(s->dtype), got, (long long)d0, name);
        return NULL;
    }
    const float *v = s->data;
    for (int64_t r = 0; r < d0; r++)
        if (!(v[r] >= 0 && v[r] <= FLT_MAX)) {
            nc_fail("scale '%s' row %lld is %g; scales must be finite and non-negative", sname, (long long)r,
                    (double)v[r]);
            return NULL;
        }
    *scale = s;
    return t;
}

static int check_unexpected(checker *ck) {
    for (int i = 0; i < nc_tensor_set_count(ck->ts); i++) {
        const char *name = nc_tensor_set_at(ck->ts, i)->name;
        bool known = false;
        for (int j = 0; j < ck->n_names && !known; j++) known = ck->names[j] == name;
        if (!known)
            return nc_fail("unexpected tensor '%s' for a nanochat %s model with n_layer=%d: unknown architecture",
                           name, ck->gen, ck->n_layer);
    }
    return 0;
}

/* ==== weight formats ==== */

static const struct {     /* indexed by nc_weight_format */
    nc_weight_format format;
    const char *name;      /* --weights */
    const char *meta;      /* NC_QUANT_META_FORMAT in files */
    nc_dtype dtype;
} formats[] = {
    {NC_WEIGHTS_FLOAT, "bf16", NULL, NC_DTYPE_BF16},
    {NC_WEIGHTS_INT8, "int8", "int8", NC_DTYPE_I8},
    {NC_WEIGHTS_FP8, "fp8", "fp8_e4m3", NC_DTYPE_F8_E4M3},
};

const char *nc_weight_format_name(nc_weight_format f) {
    for (size_t i = 0; i < NC_ARRAY_LEN(formats); i++)
        if (formats[i].format == f) return formats[i].name;
    return "?";
}

int nc_weight_format_parse(const char *name, nc_weight_format *out) {
    for (size_t i = 0; i < NC_ARRAY_LEN(formats); i++)
        if (!strcmp(name, formats[i].name)) {
            *out = formats[i].format;
            return 0;
        }
    return nc_fail("unknown weight format '%s' (expected bf16, int8 or fp8)", name);
}

nc_dtype nc_weight_format_dtype(nc_weight_format f) {
    NC_ASSERT(f > NC_WEIGHTS_FLOAT && f < (int)NC_ARRAY_LEN(formats));
    return formats[f].dtype;
}

const char *nc_weight_format_meta(nc_weight_format f) {
    NC_ASSERT(f > NC_WEIGHTS_FLOAT && f < (int)NC_ARRAY_LEN(formats));
    return formats[f].meta;
}

/* The format of one matrix from its dtype. */
static nc_weight_format format_of(const nc_tensor *t) {
    for (size_t i = 1; i < NC_ARRAY_LEN(formats); i++)
        if (formats[i].dtype == t->dtype) return formats[i].format;
    return NC_WEIGHTS_FLOAT;
}

/* Every layer matrix in one format, lm_head in it or float, and an 8-bit
 * set's metadata naming that format with the scheme and version this
 * engine implements. Sets m->weights. */
static int check_weight_format(nc_model *m, const nc_tensor_set *ts) {
    const nc_layer_weights *w0 = &m->layers[0];
    nc_weight_format f = format_of(w0->c_q);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const nc_layer_weights *w = &m->layers[l];
        const nc_tensor *mats[] = {w->c_q, w->c_k, w->c_v, w->attn_proj, w->mlp_fc, w->mlp_proj};
        for (size_t i = 0; i < NC_ARRAY_LEN(mats); i++)
            if (format_of(mats[i]) != f)
                return nc_fail("tensor '%s' is %s but '%s' is %s: every layer matrix must have the same format",
                               mats[i]->name, nc_dtype_name(mats[i]->dtype), w0->c_q->name,
                               nc_dtype_name(w0->c_q->dtype));
    }
    nc_weight_format head = format_of(m->lm_head);
    if (head != NC_WEIGHTS_FLOAT && head != f)
        return nc_fail("tensor 'lm_head.weight' is %s but the layers' matrices are %s", nc_dtype_name(m->lm_head->dtype),
                       nc_dtype_name(w0->c_q->dtype));
    if (f == NC_WEIGHTS_FLOAT && head != NC_WEIGHTS_FLOAT)
        return nc_fail("tensor 'lm_head.weight' is 8-bit but the layers' matrices are float; unknown layout");
    m->weights = f;
    if (f == NC_WEIGHTS_FLOAT) return 0;
    const char *want = formats[f].meta;
    const char *fmt = nc_tensor_set_meta(ts, NC_QUANT_META_FORMAT);
    const char *scheme = nc_tensor_set_meta(ts, NC_QUANT_META_SCHEME);
    const char *version = nc_tensor_set_meta(ts, NC_QUANT_META_VERSION);
    if (!fmt)
        return nc_fail("8-bit weights (%s) without the metadata entry \"" NC_QUANT_META_FORMAT "\" that names "
                       "their format: not a file written by `nanochat quantize`", nc_dtype_name(w0->c_q->dtype));
    bool known = false;
    for (size_t i = 1; i < NC_ARRAY_LEN(formats); i++) known |= !strcmp(fmt, formats[i].meta);
    if (!known)
        return nc_fail("unknown weight format \"%s\" in the metadata (this engine knows int8 and fp8_e4m3)", fmt);
    if (strcmp(fmt, want))
        return nc_fail("the metadata says the weights are %s but tensor '%s' is %s", fmt, w0->c_q->name,
                       nc_dtype_name(w0->c_q->dtype));
    if (!scheme || strcmp(scheme, NC_QUANT_SCHEME))
        return nc_fail("unknown quantisation scheme \"%s\" in the metadata (this engine knows \"" NC_QUANT_SCHEME
                       "\")", scheme ? scheme : "(none)");
    if (!version || strcmp(version, NC_QUANT_VERSION))
        return nc_fail("8-bit format version \"%s\" in the metadata; this engine reads version " NC_QUANT_VERSION,
                       version ? version : "(none)");
    return 0;
}

static float *copy_f32(const nc_tensor *t) {
    int64_t n = nc_tensor_numel(t);
    float *out = nc_xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) out[i] = nc_tensor_get_f32(t, i);
    return out;
}

/* Looks up and checks every weight of the generation; fills m. */
static int bind_weights(nc_model *m, checker *ck) {
    const nc_model_config *c = &m->cfg;
    int64_t C = c->n_embd, Vp = c->padded_vocab, F = c->mlp_hidden;
    int64_t qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_kv_head * c->head_dim;
    char name[128];
    if (!(m->wte = expect(ck, "transformer.wte.weight", 2, Vp, C))) return -1;
    if (!(m->lm_head = expect_matrix(ck, "lm_head.weight", Vp, C, &m->lm_head_scale))) return -1;
    m->layers = nc_xcalloc((size_t)c->n_layer, sizeof(nc_layer_weights));
    for (int l = 0; l < c->n_layer; l++) {
        nc_layer_weights *w = &m->layers[l];
        nc_layer_scales *sc = &w->scale;
        struct {
            const nc_tensor **slot, **scale;
            const char *suffix;
            int64_t d0, d1;
        } mats[] = {
            {&w->c_q, &sc->c_q, "attn.c_q", qd, C},
            {&w->c_k, &sc->c_k, "attn.c_k", kvd, C},
            {&w->c_v, &sc->c_v, "attn.c_v", kvd, C},
            {&w->attn_proj, &sc->attn_proj, "attn.c_proj", C, qd},
            {&w->mlp_fc, &sc->mlp_fc, "mlp.c_fc", F, C},
            {&w->mlp_proj, &sc->mlp_proj, "mlp.c_proj", C, F},
        };
        for (size_t i = 0; i < NC_ARRAY_LEN(mats); i++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s.weight", l, mats[i].suffix);
            if (!(*mats[i].slot = expect_matrix(ck, name, mats[i].d0, mats[i].d1, mats[i].scale))) return -1;
        }
        if (nc_config_has_value_embed(c, l)) {
            snprintf(name, sizeof name, "transformer.h.%d.attn.ve_gate.weight", l);
            if (!(w->ve_gate = expect(ck, name, 2, c->n_kv_head, c->ve_gate_channels))) return -1;
            snprintf(name, sizeof name, "value_embeds.%d.weight", l);
            if (!(w->value_embed = expect(ck, name, 2, Vp, kvd))) return -1;
        }
    }
    if (c->has_lambdas) {
        const nc_tensor *r = expect(ck, "resid_lambdas", 1, c->n_layer, 0);
        const nc_tensor *x = r ? expect(ck, "x0_lambdas", 1, c->n_layer, 0) : NULL;
        if (!x) return -1;
        m->resid_lambdas = copy_f32(r);
        m->x0_lambdas = copy_f32(x);
    }
    if (c->has_smear) {
        const nc_tensor *sl, *bl;
        if (!(m->smear_gate = expect(ck, "smear_gate.weight", 2, 1, c->smear_channels))) return -1;
        if (!(sl = expect(ck, "smear_lambda", 1, 1, 0))) return -1;
        if (!(bl = expect(ck, "backout_lambda", 1, 1, 0))) return -1;
        m->smear_lambda = nc_tensor_get_f32(sl, 0);
        m->backout_lambda = nc_tensor_get_f32(bl, 0);
    }
    if (check_unexpected(ck)) return -1;
    return check_weight_format(m, ck->ts);
}

/* ==== construction ==== */

nc_model *nc_model_from_tensors(nc_tensor_set *tensors, const nc_model_config *sizes, const char *source,
                                const char *format) {
    if (check_sizes(sizes)) return NULL;
    nc_generation detected = NC_GEN_UNKNOWN, gen = NC_GEN_UNKNOWN;
    if (detect_generation(tensors, &detected) || resolve_generation(detected, sizes->generation, &gen))
        return NULL;

    nc_model *m = nc_xcalloc(1, sizeof *m);
    nc_model_config *c = &m->cfg;
    c->n_layer = sizes->n_layer;
    c->n_embd = sizes->n_embd;
    c->n_head = sizes->n_head;
    c->n_kv_head = sizes->n_kv_head;
    c->head_dim = c->n_embd / c->n_head;
    c->mlp_hidden = 4 * c->n_embd;
    c->vocab_size = sizes->vocab_size;
    c->sequence_len = sizes->sequence_len;
    set_generation_constants(c, gen);
    if (set_window_pattern(c, sizes->window_pattern)) goto fail;

    /* Newer runs pad wte/lm_head/value_embeds rows to a multiple of 64. */
    const nc_tensor *wte = nc_tensor_set_find(tensors, "transformer.wte.weight");
    int64_t rows = wte->ndim == 2 ? wte->shape[0] : -1;
    int64_t padded = ((int64_t)c->vocab_size + 63) / 64 * 64;
    if (rows != c->vocab_size && rows != padded) {
        nc_fail("transformer.wte.weight has %lld rows; vocab_size %d from the config needs %d (or %lld "
                "when padded to a multiple of 64)", (long long)rows, c->vocab_size, c->vocab_size,
                (long long)padded);
        goto fail;
    }
    c->padded_vocab = (int)rows;

    checker ck = {.ts = tensors, .n_layer = c->n_layer};
    snprintf(ck.gen, sizeof ck.gen, "%s", nc_generation_name(gen));
    int rc = bind_weights(m, &ck);
    free(ck.names);
    if (rc) goto fail;

    m->tensors = tensors;
    m->source = nc_xstrdup(source ? source : "");
    m->format = nc_xstrdup(format ? format : "");
    return m;
fail:
    free(m->layers);
    free(m->resid_lambdas);
    free(m->x0_lambdas);
    free(m);
    return NULL;
}

void nc_model_free(nc_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->resid_lambdas);
    free(m->x0_lambdas);
    nc_tensor_set_free(m->tensors);
    free(m->source);
    free(m->format);
    free(m);
}
