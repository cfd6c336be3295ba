/*
 * test_multi_device.c: the host side of running one model on several
 * GPUs, which the CPU can check: device names (backend.h), the
 * tensor-parallel split (tp_shard.h) against splits worked out by hand,
 * and each rank's share of a small model against the full model's
 * elements at hand-computed positions.
 *
 * The split's expected values come from docs/multi-device.md's rule, done
 * by hand: kv heads dealt out evenly, the first ranks taking one more; then
 * 64-unit MLP granules so that each rank's weights per layer, in units of
 * n_embd (4 D per head without GQA, 128 per granule), come as close as
 * possible to the total over N; fractions go to the largest remainders,
 * the first rank on ties.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/tp_shard.h"
#include "check.h"
#include "model/loader.h"
#include "model/quantize.h"
#include "util/common.h"

/* ==== device names ==== */

static void test_device_names(void) {
    struct {
        const char *name, *kind;
        int n, gpus[4];
    } good[] = {
        {"cpu", "cpu", 0, {0}},
        {"auto", "auto", 1, {0}},
        {"cuda", "cuda", 1, {0}},
        {"cuda:3", "cuda", 1, {3}},
        {"cuda:0+1", "cuda", 2, {0, 1}},
        {"cuda:2+3+0+1", "cuda", 4, {2, 3, 0, 1}},
    };
    for (size_t i = 0; i < NC_ARRAY_LEN(good); i++) {
        nc_device_name d;
        int rc = nc_device_name_parse(good[i].name, &d);
        CHECK(rc == 0, "%s: %s", good[i].name, nc_error());
        CHECK(!strcmp(d.kind, good[i].kind) && d.n_gpus == good[i].n, "%s: kind %s, %d GPUs", good[i].name, d.kind,
              d.n_gpus);
        for (int k = 0; k < good[i].n && k < d.n_gpus; k++)
            CHECK(d.gpus[k] == good[i].gpus[k], "%s: GPU %d is %d", good[i].name, k, d.gpus[k]);
    }
    struct {
        const char *name, *says;
    } bad[] = {
        {"", "empty"},         {"gpu", "unknown device"}, {"cuda0", "unknown device"}, {"cuda:", "GPU number"},
        {"cuda:x", "GPU number"}, {"cuda:-1", "GPU number"}, {"cuda:1+", "GPU number"}, {"cuda:0+0", "twice"},
        {"cuda:1,2", "joined by '+'"}, {"cuda: 1", "GPU number"},
        {"cuda:0+1+2+3+4+5+6+7+8+9+10+11+12+13+14+15+16", "at most 16"},
    };
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) {
        nc_device_name d;
        CHECK(nc_device_name_parse(bad[i].name, &d) < 0 && strstr(nc_error(), bad[i].says),
              "'%s' is refused saying '%s': %s", bad[i].name, bad[i].says, nc_error());
    }
}

/* ==== the split ==== */

static nc_model_config shape(int C, int H, int Hkv) {
    nc_model_config c;
    memset(&c, 0, sizeof c);
    c.n_layer = 2;
    c.n_embd = C;
    c.n_head = H;
    c.n_kv_head = Hkv;
    c.head_dim = 128;
    c.mlp_hidden = 4 * C;
    return c;
}

static void expect_split(const char *what, const nc_model_config *c, int n, const int *kv0, const int *head0,
                         const int *mlp0) {
    nc_tp_split sp;
    int rc = nc_tp_split_plan(c, n, &sp);
    CHECK(rc == 0 && sp.n == n, "%s: %s", what, nc_error());
    if (rc) return;
    for (int r = 0; r <= n; r++) {
        CHECK(sp.kv0[r] == kv0[r], "%s: kv0[%d] = %d, want %d", what, r, sp.kv0[r], kv0[r]);
        CHECK(sp.head0[r] == head0[r], "%s: head0[%d] = %d, want %d", what, r, sp.head0[r], head0[r]);
        CHECK(sp.mlp0[r] == mlp0[r], "%s: mlp0[%d] = %d, want %d", what, r, sp.mlp0[r], mlp0[r]);
    }
}

static void test_split(void) {
    nc_model_config d34 = shape(2176, 17, 17), d20 = shape(1280, 10, 10), gqa = shape(512, 4, 2);
    /* d34 over 2: 9 + 8 heads (36 and 32 units), 136 granules, 102 units each: 66 + 70 granules. */
    expect_split("d34 / 2", &d34, 2, (int[]){0, 9, 17}, (int[]){0, 9, 17}, (int[]){0, 4224, 8704});
    /* d34 over 4: 5 4 4 4 heads (20 16 16 16), 51 units each: 31 35 35 35 granules. */
    expect_split("d34 / 4", &d34, 4, (int[]){0, 5, 9, 13, 17}, (int[]){0, 5, 9, 13, 17},
                 (int[]){0, 1984, 4224, 6464, 8704});
    /* d34 over 5: 4 4 3 3 3 heads, 40.8 units each: wants 24.8 24.8 28.8 28.8 28.8 granules,
     * floors 24 24 28 28 28 (132), the four left to the first four ranks. */
    expect_split("d34 / 5", &d34, 5, (int[]){0, 4, 8, 11, 14, 17}, (int[]){0, 4, 8, 11, 14, 17},
                 (int[]){0, 1600, 3200, 5056, 6912, 8704});
    /* d20 over 4: 3 3 2 2 heads (12 12 8 8), 80 granules, 30 units each: 18 18 22 22. */
    expect_split("d20 / 4", &d20, 4, (int[]){0, 3, 6, 8, 10}, (int[]){0, 3, 6, 8, 10},
                 (int[]){0, 1152, 2304, 3712, 5120});
    /* GQA, 2 query heads per kv head: a kv head is 2*2+2 = 6 D = 6 units; 32 granules; even. */
    expect_split("gqa / 2", &gqa, 2, (int[]){0, 1, 2}, (int[]){0, 2, 4}, (int[]){0, 1024, 2048});
    expect_split("d34 / 1", &d34, 1, (int[]){0, 17}, (int[]){0, 17}, (int[]){0, 8704});

    nc_tp_split sp;
    CHECK(nc_tp_split_plan(&gqa, 3, &sp) < 0 && strstr(nc_error(), "2 kv heads"), "3 ranks, 2 kv heads: %s",
          nc_error());
    CHECK(nc_tp_split_plan(&d34, 0, &sp) < 0 && strstr(nc_error(), "1 to 16"), "0 ranks: %s", nc_error());
    nc_model_config odd = d20;
    odd.mlp_hidden = 5000;
    CHECK(nc_tp_split_plan(&odd, 2, &sp) < 0 && strstr(nc_error(), "multiple of 64"), "MLP 5000: %s", nc_error());
    nc_model_config narrow = shape(128, 8, 8);
    narrow.mlp_hidden = 64 * 3;
    CHECK(nc_tp_split_plan(&narrow, 4, &sp) < 0 && strstr(nc_error(), "only 3 runs"), "3 granules, 4 ranks: %s",
          nc_error());
}

/* ==== a rank's share ==== */

/* A hand-made V3-like model, one layer: C 8, D 4, 2 heads, 2 kv heads, MLP
 * 128, padded vocab 5, value embeddings and their gate; every float is
 * 1000 * (its tensor's number) + its flat index, so a wrong slice shows. */
enum { C = 8, D = 4, H = 2, F = 128, VP = 5, VE_CH = 3 };

typedef struct {
    nc_model m;
    nc_layer_weights layer;
    nc_tensor t[10];
    float *data[10];
} toy_model;

static const nc_tensor *toy_tensor(toy_model *tm, int k, const char *name, int64_t rows, int64_t cols) {
    nc_tensor *t = &tm->t[k];
    float *d = malloc((size_t)(rows * cols) * sizeof *d);
    for (int64_t i = 0; i < rows * cols; i++) d[i] = (float)(1000 * k + i);
    tm->data[k] = d;
    t->name = (char *)name;
    t->dtype = NC_DTYPE_F32;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->data = d;
    t->nbytes = (size_t)(rows * cols) * sizeof *d;
    return t;
}

static void toy_init(toy_model *tm) {
    memset(tm, 0, sizeof *tm);
    nc_model_config *c = &tm->m.cfg;
    c->n_layer = 1, c->n_embd = C, c->n_head = H, c->n_kv_head = H, c->head_dim = D, c->mlp_hidden = F;
    c->padded_vocab = c->vocab_size = VP;
    c->has_value_embeds = true;
    c->ve_gate_channels = VE_CH;
    tm->m.wte = toy_tensor(tm, 0, "wte", VP, C);
    tm->m.lm_head = toy_tensor(tm, 1, "lm_head", VP, C);
    nc_layer_weights *w = &tm->layer;
    w->c_q = toy_tensor(tm, 2, "c_q", H * D, C);
    w->c_k = toy_tensor(tm, 3, "c_k", H * D, C);
    w->c_v = toy_tensor(tm, 4, "c_v", H * D, C);
    w->attn_proj = toy_tensor(tm, 5, "attn_proj", C, H * D);
    w->mlp_fc = toy_tensor(tm, 6, "mlp_fc", F, C);
    w->mlp_proj = toy_tensor(tm, 7, "mlp_proj", C, F);
    w->value_embed = toy_tensor(tm, 8, "value_embed", VP, H * D);
    w->ve_gate = toy_tensor(tm, 9, "ve_gate", H, VE_CH);
    tm->m.layers = w;
    static float lambdas[1] = {0.5f};
    tm->m.resid_lambdas = lambdas;
    tm->m.source = "toy";
    tm->m.format = "hand-made";
}

static void toy_free(toy_model *tm) {
    for (int k = 0; k < 10; k++) free(tm->data[k]);
}

/* Element (i, j) of a share equals the full tensor k's element (i + r0, j + c0). */
static void expect_slice(const char *what, int r, const nc_tensor *t, int k, int64_t rows, int64_t cols,
                         int64_t full_cols, int64_t r0, int64_t c0) {
    CHECK(t && t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols, "rank %d %s: shape %lld x %lld", r,
          what, t ? (long long)t->shape[0] : -1LL, t ? (long long)t->shape[1] : -1LL);
    if (!t || t->shape[0] != rows || t->shape[1] != cols) return;
    const float *v = t->data;
    int bad = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            bad += v[i * cols + j] != (float)(1000 * k + (i + r0) * full_cols + j + c0);
    CHECK(bad == 0, "rank %d %s: %d elements differ from the full tensor's", r, what, bad);
}

static void test_shard(void) {
    toy_model tm;
    toy_init(&tm);
    nc_tp_split sp;
    /* 2 heads of 4 units (4 D = 16 per head in n_embd units) and 2 granules of 128: 144 each, one granule each. */
    CHECK(nc_tp_split_plan(&tm.m.cfg, 2, &sp) == 0 && sp.mlp0[1] == 64, "toy split: %s", nc_error());
    for (int r = 0; r < 2; r++) {
        nc_model *s = nc_tp_shard(&tm.m, &sp, r);
        CHECK(s != NULL, "rank %d: %s", r, nc_error());
        if (!s) continue;
        CHECK(s->cfg.n_head == 1 && s->cfg.n_kv_head == 1 && s->cfg.mlp_hidden == 64 && s->cfg.n_embd == C &&
                  s->cfg.head_dim == D,
              "rank %d config: H %d Hkv %d F %d", r, s->cfg.n_head, s->cfg.n_kv_head, s->cfg.mlp_hidden);
        const nc_layer_weights *w = &s->layers[0];
        expect_slice("wte", r, s->wte, 0, VP, C, C, 0, 0);
        expect_slice("lm_head", r, s->lm_head, 1, VP, C, C, 0, 0);
        expect_slice("c_q", r, w->c_q, 2, D, C, C, r * D, 0);
        expect_slice("c_k", r, w->c_k, 3, D, C, C, r * D, 0);
        expect_slice("c_v", r, w->c_v, 4, D, C, C, r * D, 0);
        expect_slice("attn_proj", r, w->attn_proj, 5, C, D, H * D, 0, r * D);
        expect_slice("mlp_fc", r, w->mlp_fc, 6, 64, C, C, r * 64, 0);
        expect_slice("mlp_proj", r, w->mlp_proj, 7, C, 64, F, 0, r * 64);
        expect_slice("value_embed", r, w->value_embed, 8, VP, D, H * D, 0, r * D);
        expect_slice("ve_gate", r, w->ve_gate, 9, 1, VE_CH, VE_CH, r, 0);
        CHECK(s->resid_lambdas && s->resid_lambdas != tm.m.resid_lambdas && s->resid_lambdas[0] == 0.5f,
              "rank %d: its own copy of the lambdas", r);
        CHECK(s->source && strstr(s->source, "rank"), "rank %d source: %s", r, s->source ? s->source : "(null)");
        nc_model_free(s);
    }
    toy_free(&tm);
}

/* ==== an 8-bit model's share ==== */

/* Elements (i, j) of share `t` [rows, cols] are the full tensor's (i + r0,
 * j + c0), byte for byte (a 1-D tensor is one column). */
static void expect_bytes(const char *what, const char *fmt, int r, const nc_tensor *t, const nc_tensor *full,
                         int64_t rows, int64_t r0, int64_t c0) {
    int64_t cols = full->ndim == 2 ? t->shape[1] : 1, full_cols = full->ndim == 2 ? full->shape[1] : 1;
    CHECK(t->dtype == full->dtype && t->ndim == full->ndim && t->shape[0] == rows, "%s rank %d %s: shape/dtype",
          fmt, r, what);
    if (t->dtype != full->dtype || t->shape[0] != rows) return;
    size_t es = nc_dtype_size(t->dtype);
    int bad = 0;
    for (int64_t i = 0; i < rows; i++)
        bad += memcmp((const char *)t->data + (size_t)(i * cols) * es,
                      (const char *)full->data + (size_t)((i + r0) * full_cols + c0) * es, (size_t)cols * es) != 0;
    CHECK(bad == 0, "%s rank %d %s: %d rows differ from the full tensor's", fmt, r, what, bad);
}

/* int8 and fp8 models (lm_head 8-bit too) over 2 ranks: each matrix's
 * rows or columns as the float split takes them, and its row scales with
 * its rows: sliced for c_q / c_k / c_v / mlp_fc, whole for attn_proj /
 * mlp_proj (whose rows, the C outputs, every rank writes) and lm_head. */
static void test_shard_8bit(void) {
    enum { QC = 128, QD = 64, QF = 4 * QC };
    const nc_weight_format formats[] = {NC_WEIGHTS_INT8, NC_WEIGHTS_FP8};
    for (size_t f = 0; f < NC_ARRAY_LEN(formats); f++) {
        const char *fmt = nc_weight_format_name(formats[f]);
        nc_model *m = nc_model_random("1,128,2,2,64", 7);
        CHECK(m && nc_model_quantize(m, formats[f], true, 1) == 0, "%s: %s", fmt, nc_error());
        if (!m || m->weights != formats[f]) {
            nc_model_free(m);
            continue;
        }
        nc_tp_split sp;
        /* Heads of 4 D = 256 units each, 8 granules of 128: 768 a rank, one head and 4 granules. */
        CHECK(nc_tp_split_plan(&m->cfg, 2, &sp) == 0 && sp.head0[1] == 1 && sp.mlp0[1] == 256, "%s split: %s",
              fmt, nc_error());
        const nc_layer_weights *w = &m->layers[0];
        for (int r = 0; r < 2; r++) {
            nc_model *s = nc_tp_shard(m, &sp, r);
            CHECK(s != NULL, "%s rank %d: %s", fmt, r, nc_error());
            if (!s) continue;
            const nc_layer_weights *sw = &s->layers[0];
            CHECK(s->weights == formats[f] && s->lm_head_scale && sw->scale.c_q && sw->scale.mlp_proj,
                  "%s rank %d: an 8-bit share with its scales", fmt, r);
            if (s->lm_head_scale && sw->scale.c_q && sw->scale.mlp_proj) {
                expect_bytes("lm_head", fmt, r, s->lm_head, m->lm_head, 64, 0, 0);
                expect_bytes("lm_head scale", fmt, r, s->lm_head_scale, m->lm_head_scale, 64, 0, 0);
                expect_bytes("c_q", fmt, r, sw->c_q, w->c_q, QD, r * QD, 0);
                expect_bytes("c_q scale", fmt, r, sw->scale.c_q, w->scale.c_q, QD, r * QD, 0);
                expect_bytes("c_k", fmt, r, sw->c_k, w->c_k, QD, r * QD, 0);
                expect_bytes("c_k scale", fmt, r, sw->scale.c_k, w->scale.c_k, QD, r * QD, 0);
                expect_bytes("c_v", fmt, r, sw->c_v, w->c_v, QD, r * QD, 0);
                expect_bytes("c_v scale", fmt, r, sw->scale.c_v, w->scale.c_v, QD, r * QD, 0);
                expect_bytes("attn_proj", fmt, r, sw->attn_proj, w->attn_proj, QC, 0, r * QD);
                expect_bytes("attn_proj scale", fmt, r, sw->scale.attn_proj, w->scale.attn_proj, QC, 0, 0);
                expect_bytes("mlp_fc", fmt, r, sw->mlp_fc, w->mlp_fc, QF / 2, r * QF / 2, 0);
                expect_bytes("mlp_fc scale", fmt, r, sw->scale.mlp_fc, w->scale.mlp_fc, QF / 2, r * QF / 2, 0);
                expect_bytes("mlp_proj", fmt, r, sw->mlp_proj, w->mlp_proj, QC, 0, r * QF / 2);
                expect_bytes("mlp_proj scale", fmt, r, sw->scale.mlp_proj, w->scale.mlp_proj, QC, 0, 0);
            }
            nc_model_free(s);
        }
        nc_model_free(m);
    }
}

int main(void) {
    test_device_names();
    test_split();
    test_shard();
    test_shard_8bit();
    return check_summary("test_multi_device");
}
