/*
 * test_formats.c: checkpoint readers and model construction against what
 * PyTorch, transformers and Python wrote (tests/data/ckpt/, made by
 * tools/make_checkpoint_fixtures.py).
 *
 *   - every tensor of every fixture file read by C equals torch.load /
 *     safetensors.load_file's tensor bit for bit (FNV-1a 64 of the bytes),
 *     plus sum/abs-sum in float64 (views at offsets, a transposed view,
 *     `_orig_mod.` keys, ZIP64, bf16 + f32, sharded safetensors);
 *   - nc_checkpoint_locate picks the files nanochat would for each layout;
 *   - generation detection (V1, V6 from files; V2-V5 and refusals from
 *     synthetic tensor sets), windows, padded vocab, shape errors;
 *   - the unpickler against Python's own pickles (protocols 2 and 5) and
 *     malformed input;
 *   - truncated and corrupted archives fail cleanly.
 * Run from the repository root.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "formats/pickle.h"
#include "formats/safetensors.h"
#include "formats/torch_ckpt.h"
#include "formats/zip.h"
#include "model/loader.h"
#include "model/model.h"
#include "util/common.h"
#include "util/mmap_file.h"

#define DATA "tests/data/ckpt/"

static uint64_t fnv1a64(const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* ==== expected.txt: every tensor of every file ==== */

typedef struct {
    char name[128], dtype[8], shape[64];
    uint64_t fnv;
    double sum, abssum;
} expected_tensor;

static void shape_str(const nc_tensor *t, char *buf, size_t cap) {
    size_t off = 0;
    buf[0] = 0;
    for (int d = 0; d < t->ndim; d++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    if (t->ndim == 0) snprintf(buf, cap, "-");
}

static void check_tensor(const nc_tensor *t, const expected_tensor *e, const char *file) {
    char shape[64];
    shape_str(t, shape, sizeof shape);
    CHECK(!strcmp(nc_dtype_name(t->dtype), e->dtype), "%s %s: dtype %s, torch has %s", file, e->name,
          nc_dtype_name(t->dtype), e->dtype);
    CHECK(!strcmp(shape, e->shape), "%s %s: shape %s, torch has %s", file, e->name, shape, e->shape);
    if (strcmp(shape, e->shape)) return;
    CHECK(fnv1a64(t->data, t->nbytes) == e->fnv, "%s %s: bytes differ from torch's (fnv %016llx vs %016llx)", file,
          e->name, (unsigned long long)fnv1a64(t->data, t->nbytes), (unsigned long long)e->fnv);
    double sum = 0, abssum = 0;
    for (int64_t i = 0; i < nc_tensor_numel(t); i++) {
        double v = nc_tensor_get_f32(t, i);
        sum += v;
        abssum += fabs(v);
    }
    CHECK(fabs(sum - e->sum) <= 1e-9 * (1 + e->abssum), "%s %s: sum %.17g vs %.17g", file, e->name, sum, e->sum);
    CHECK(fabs(abssum - e->abssum) <= 1e-9 * (1 + e->abssum), "%s %s: abssum %.17g vs %.17g", file, e->name,
          abssum, e->abssum);
}

/* Finds tensor `name` of `file` in expected.txt. */
static int find_expected(const char *file, const char *name, expected_tensor *out) {
    FILE *f = fopen(DATA "expected.txt", "r");
    if (!f) return -1;
    char line[512], cur[256] = "";
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "file ", 5)) sscanf(line + 5, "%255s", cur);
        else if (!strncmp(line, "tensor ", 7) && !strcmp(cur, file)) {
            unsigned long long h;
            if (sscanf(line + 7, "%127s %7s %63s %llx %lf %lf", out->name, out->dtype, out->shape, &h, &out->sum,
                       &out->abssum) == 6 && !strcmp(out->name, name)) {
                out->fnv = h;
                found = 0;
            }
        }
    }
    fclose(f);
    return found;
}

static void test_all_tensors(void) {
    FILE *f = fopen(DATA "expected.txt", "r");
    CHECK(f != NULL, "cannot open " DATA "expected.txt");
    if (!f) return;
    char line[512], file[256] = "";
    nc_tensor_set *set = NULL;
    int n_expected = 0, n_files = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "file ", 5)) {
            sscanf(line + 5, "%255s", file);
            char path[512];
            snprintf(path, sizeof path, DATA "%s", file);
            size_t n = strlen(path);
            if (n > 12 && !strcmp(path + n - 12, ".safetensors")) {
                set = nc_tensor_set_new();
                if (nc_safetensors_load(path, set, NULL)) {
                    nc_tensor_set_free(set);
                    set = NULL;
                }
            } else {
                set = nc_torch_load(path);
            }
            CHECK(set != NULL, "loading %s: %s", path, nc_error());
            n_expected = 0;
            n_files++;
        } else if (!strncmp(line, "tensor ", 7) && set) {
            expected_tensor e;
            unsigned long long h;
            if (sscanf(line + 7, "%127s %7s %63s %llx %lf %lf", e.name, e.dtype, e.shape, &h, &e.sum, &e.abssum) != 6)
                continue;
            e.fnv = h;
            n_expected++;
            const nc_tensor *t = nc_tensor_set_find(set, e.name);
            CHECK(t != NULL, "%s: tensor %s missing", file, e.name);
            if (t) check_tensor(t, &e, file);
        } else if (!strncmp(line, "end", 3) && set) {
            CHECK(nc_tensor_set_count(set) == n_expected, "%s: %d tensors read, torch has %d", file,
                  nc_tensor_set_count(set), n_expected);
            nc_tensor_set_free(set);
            set = NULL;
        }
    }
    fclose(f);
    CHECK(n_files >= 15, "only %d fixture files listed", n_files);
}

/* ==== locate ==== */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = s ? strlen(s) : 0, m = strlen(suffix);
    return s && n >= m && !strcmp(s + n - m, suffix);
}

static void expect_locate(const char *path, int step, const char *source, const char *tag, const char *tok,
                          const char *want_model, int want_step, const char *want_tok, const char *want_format) {
    nc_load_options o = {.path = path, .step = step, .source = source, .tag = tag, .tokenizer_path = tok};
    nc_checkpoint_location loc;
    int rc = nc_checkpoint_locate(&o, &loc);
    if (!want_model) {
        CHECK(rc != 0, "locate %s (step %d, source %s, tag %s) should fail", path, step, source ? source : "-",
              tag ? tag : "-");
        CHECK(strlen(nc_error()) > 10, "locate %s: failure without a message", path);
        return;
    }
    CHECK(rc == 0, "locate %s (step %d, source %s, tag %s): %s", path, step, source ? source : "-", tag ? tag : "-",
          nc_error());
    if (rc) return;
    CHECK(ends_with(loc.model_file, want_model), "locate %s: model %s, want ...%s", path, loc.model_file, want_model);
    CHECK(loc.step == want_step, "locate %s: step %d, want %d", path, loc.step, want_step);
    if (want_tok) CHECK(ends_with(loc.tokenizer_file, want_tok), "locate %s: tokenizer %s, want ...%s", path,
                        loc.tokenizer_file ? loc.tokenizer_file : "(none)", want_tok);
    else CHECK(loc.tokenizer_file == NULL, "locate %s: tokenizer %s, want none", path, loc.tokenizer_file);
    CHECK(!strcmp(loc.format, want_format), "locate %s: format %s", path, loc.format);
    nc_checkpoint_location_free(&loc);
}

static void test_locate(void) {
    /* base dir: chatsft > chatrl > mid > base, largest d<N>, newest step */
    expect_locate(DATA "base", -1, NULL, NULL, NULL, "base/chatsft_checkpoints/d2/model_000007.pt", 7,
                  "base/tokenizer/tokenizer.pkl", "nanochat");
    expect_locate(DATA "base/", 3, NULL, NULL, NULL, "chatsft_checkpoints/d2/model_000003.pt", 3,
                  "base/tokenizer/tokenizer.pkl", "nanochat");
    expect_locate(DATA "base", -1, "base", NULL, NULL, "base_checkpoints/d2/model_000010.pt", 10,
                  "base/tokenizer/tokenizer.pkl", "nanochat");
    expect_locate(DATA "base", -1, "sft", "d1", NULL, "chatsft_checkpoints/d1/model_000009.pt", 9,
                  "base/tokenizer/tokenizer.pkl", "nanochat");
    expect_locate(DATA "base", -1, NULL, "d1", NULL, "chatsft_checkpoints/d1/model_000009.pt", 9,
                  "base/tokenizer/tokenizer.pkl", "nanochat");
    expect_locate(DATA "base", 10, NULL, NULL, NULL, NULL, 0, NULL, NULL);   /* no step 10 in chatsft/d2 */
    expect_locate(DATA "base", -1, "rl", NULL, NULL, NULL, 0, NULL, NULL);   /* no chatrl_checkpoints */
    expect_locate(DATA "base", -1, NULL, "d9", NULL, NULL, 0, NULL, NULL);   /* no such tag */
    /* a checkpoint dir inside a base dir finds <base>/tokenizer/ */
    expect_locate(DATA "base/chatsft_checkpoints/d2", -1, NULL, NULL, NULL, "d2/model_000007.pt", 7,
                  "base/chatsft_checkpoints/d2/../../tokenizer/tokenizer.pkl", "nanochat");
    /* a model file pins its step */
    expect_locate(DATA "base/chatsft_checkpoints/d2/model_000003.pt", -1, NULL, NULL, NULL, "d2/model_000003.pt", 3,
                  "tokenizer/tokenizer.pkl", "nanochat");
    expect_locate(DATA "base/chatsft_checkpoints/d2/model_000003.pt", 7, NULL, NULL, NULL, NULL, 0, NULL, NULL);
    /* flat download, tokenizer beside it; a dir without one */
    expect_locate(DATA "v1", -1, NULL, NULL, NULL, "v1/model_000005.pt", 5, "v1/tokenizer.pkl", "nanochat");
    expect_locate(DATA "v6", -1, NULL, NULL, NULL, "v6/model_000021.pt", 21, NULL, "nanochat");
    expect_locate(DATA "v6", -1, NULL, NULL, DATA "v1/tokenizer.pkl", "v6/model_000021.pt", 21, "v1/tokenizer.pkl",
                  "nanochat");
    expect_locate(DATA "v6", -1, NULL, NULL, DATA "v1/nope.pkl", NULL, 0, NULL, NULL);
    expect_locate(DATA "v1", -1, "sft", NULL, NULL, NULL, 0, NULL, NULL); /* --source needs a base dir */
    /* Hugging Face */
    expect_locate(DATA "hf", -1, NULL, NULL, NULL, "hf/model.safetensors", -1, "hf/tokenizer.pkl", "huggingface");
    expect_locate(DATA "hf_sharded", -1, NULL, NULL, NULL, "hf_sharded/model-00001-of-00007.safetensors", -1,
                  "hf_sharded/tokenizer.pkl", "huggingface");
    expect_locate(DATA "hf", 5, NULL, NULL, NULL, NULL, 0, NULL, NULL);
    /* nothing there */
    expect_locate(DATA "does-not-exist", -1, NULL, NULL, NULL, NULL, 0, NULL, NULL);
    expect_locate("tests/c", -1, NULL, NULL, NULL, NULL, 0, NULL, NULL);

    nc_load_options o = {.path = DATA "hf_sharded", .step = -1};
    nc_checkpoint_location loc;
    char **files;
    int n = 0;
    if (nc_checkpoint_locate(&o, &loc) == 0) {
        CHECK(nc_checkpoint_weight_files(&loc, &files, &n) == 0 && n == 7, "hf_sharded: %d weight files", n);
        if (n) nc_checkpoint_files_free(files, n);
        nc_checkpoint_location_free(&loc);
    }
}

/* ==== whole models ==== */

static void check_same_tensor(const nc_tensor *t, const char *file, const char *name) {
    expected_tensor e;
    CHECK(t != NULL, "%s: model lacks %s", file, name);
    CHECK(find_expected(file, name, &e) == 0, "expected.txt lacks %s %s", file, name);
    if (t && find_expected(file, name, &e) == 0) check_tensor(t, &e, file);
}

static void test_models(void) {
    nc_load_options o = {.path = DATA "v1", .step = -1};
    nc_model *m = nc_model_load(&o, NULL);
    CHECK(m != NULL, "v1: %s", nc_error());
    if (m) {
        const nc_model_config *c = &m->cfg;
        CHECK(c->generation == NC_GEN_V1 && c->n_layer == 2 && c->n_embd == 32 && c->n_head == 2 &&
              c->n_kv_head == 1 && c->head_dim == 16 && c->mlp_hidden == 128 && c->vocab_size == 265 &&
              c->padded_vocab == 265 && c->sequence_len == 256, "v1 config");
        CHECK(c->rope_base == 10000.0f && c->softcap == 15.0f && c->qk_scale == 1.0f && c->rope_tables_bf16 &&
              !c->has_lambdas && !c->has_value_embeds && !c->has_smear, "v1 constants");
        CHECK(nc_config_window(c, 0) == INT32_MAX && nc_config_window(c, 1) == INT32_MAX, "v1 windows");
        CHECK(nc_config_param_count(c) == 39488, "v1 params %lld", (long long)nc_config_param_count(c));
        check_same_tensor(m->layers[0].mlp_proj, "v1/model_000005.pt", "transformer.h.0.mlp.c_proj.weight");
        check_same_tensor(m->layers[1].c_v, "v1/model_000005.pt", "transformer.h.1.attn.c_v.weight");
        check_same_tensor(m->wte, "v1/model_000005.pt", "transformer.wte.weight");
        nc_model_free(m);
    }
    o.path = DATA "v1_zip64";
    m = nc_model_load(&o, NULL);
    CHECK(m != NULL, "v1_zip64: %s", nc_error());
    if (m) check_same_tensor(m->layers[0].mlp_proj, "v1/model_000005.pt", "transformer.h.0.mlp.c_proj.weight");
    nc_model_free(m);

    o.path = DATA "v6";
    m = nc_model_load(&o, NULL);
    CHECK(m != NULL, "v6: %s", nc_error());
    if (m) {
        const nc_model_config *c = &m->cfg;
        CHECK(c->generation == NC_GEN_V6 && c->n_layer == 3 && c->vocab_size == 265 && c->padded_vocab == 320,
              "v6 config: gen %d Vp %d", c->generation, c->padded_vocab);
        CHECK(c->rope_base == 100000.0f && c->qk_scale == 1.2f && c->softcap == 15.0f && !c->rope_tables_bf16 &&
              c->ve_gate_channels == 12 && c->ve_gate_scale == 3.0f && c->smear_channels == 24, "v6 constants");
        CHECK(!strcmp(c->window_pattern, "SSSL"), "v6 pattern %s", c->window_pattern);
        /* seq 256: S = ceil(256/4/128)*128 = 128; last layer always L */
        CHECK(nc_config_window(c, 0) == 128 && nc_config_window(c, 1) == 128 && nc_config_window(c, 2) == 256,
              "v6 windows %d %d %d", nc_config_window(c, 0), nc_config_window(c, 1), nc_config_window(c, 2));
        CHECK(m->layers[0].value_embed && !m->layers[1].value_embed && m->layers[2].value_embed, "v6 ve layers");
        CHECK(m->layers[2].ve_gate && m->smear_gate, "v6 gates");
        CHECK(fabsf(m->smear_lambda - 0.3f) < 1e-7f && fabsf(m->backout_lambda - 0.2f) < 1e-7f, "v6 scalars");
        expected_tensor e;
        if (find_expected("v6/model_000021.pt", "resid_lambdas", &e) == 0) {
            double s = 0;
            for (int l = 0; l < 3; l++) s += m->resid_lambdas[l];
            CHECK(fabs(s - e.sum) < 1e-6, "v6 resid_lambdas copy: sum %g vs %g", s, e.sum);
        }
        check_same_tensor(m->layers[2].value_embed, "v6/model_000021.pt", "value_embeds.2.weight");
        int64_t want = 2 * 320 * 32 + 3 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 2 * 128 * 32) + 2 * 3 +
                       2 * (320 * 16 + 12) + 24 + 2;
        CHECK(nc_config_param_count(c) == want, "v6 params %lld want %lld", (long long)nc_config_param_count(c),
              (long long)want);
        nc_model_free(m);
    }

    const char *hf[] = {DATA "hf", DATA "hf_sharded"};
    const char *hf_file[] = {"hf/model.safetensors", NULL};
    for (int i = 0; i < 2; i++) {
        o.path = hf[i];
        m = nc_model_load(&o, NULL);
        CHECK(m != NULL, "%s: %s", hf[i], nc_error());
        if (!m) continue;
        CHECK(m->cfg.generation == NC_GEN_V1 && m->cfg.n_layer == 2 && m->cfg.n_kv_head == 1 &&
              m->cfg.sequence_len == 256 && m->cfg.vocab_size == 265, "%s config", hf[i]);
        if (hf_file[i]) {
            check_same_tensor(m->layers[1].c_k, hf_file[i], "model.layers.1.self_attn.k_proj.weight");
            check_same_tensor(m->layers[0].attn_proj, hf_file[i], "model.layers.0.self_attn.o_proj.weight");
            check_same_tensor(m->layers[0].mlp_fc, hf_file[i], "model.layers.0.mlp.fc1.weight");
            check_same_tensor(m->layers[1].mlp_proj, hf_file[i], "model.layers.1.mlp.fc2.weight");
            check_same_tensor(m->wte, hf_file[i], "model.embed_tokens.weight");
            check_same_tensor(m->lm_head, hf_file[i], "lm_head.weight");
        } else {
            CHECK(m->wte->dtype == NC_DTYPE_BF16, "hf_sharded dtype");
        }
        nc_model_free(m);
    }

    /* the base-dir checkpoints carry their step in lm_head[0,0] */
    const struct {
        const char *source;
        int step;
        float value;
    } picks[] = {{NULL, -1, 7}, {NULL, 3, 3}, {"base", -1, 10}};
    for (size_t i = 0; i < NC_ARRAY_LEN(picks); i++) {
        nc_load_options b = {.path = DATA "base", .step = picks[i].step, .source = picks[i].source};
        nc_checkpoint_location loc;
        m = nc_model_load(&b, &loc);
        CHECK(m != NULL, "base %zu: %s", i, nc_error());
        if (m) CHECK(nc_tensor_get_f32(m->lm_head, 0) == picks[i].value, "base %zu: lm_head[0,0] %g want %g", i,
                     nc_tensor_get_f32(m->lm_head, 0), picks[i].value);
        nc_model_free(m);
        nc_checkpoint_location_free(&loc);
    }

    const struct {
        const char *path, *needle;
    } bad[] = {{DATA "bad/extra_tensor", "unexpected tensor 'transformer.h.0.attn.foo.weight'"},
               {DATA "bad/missing_tensor", "lacks tensor 'transformer.h.0.mlp.c_fc.weight'"}};
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) {
        o.path = bad[i].path;
        m = nc_model_load(&o, NULL);
        CHECK(m == NULL && strstr(nc_error(), bad[i].needle), "%s: got '%s'", bad[i].path, m ? "a model" : nc_error());
        nc_model_free(m);
    }
}

/* ==== generation detection on synthetic sets ==== */

enum { SL = 2, SC = 16, SH = 2, SD = 8, SV = 64 };
static float zeros[512 * 64];

static void add(nc_tensor_set *s, const char *name, int64_t d0, int64_t d1) {
    int64_t shape[2] = {d0, d1};
    NC_ASSERT(d0 * (d1 ? d1 : 1) <= (int64_t)NC_ARRAY_LEN(zeros));
    NC_ASSERT(nc_tensor_set_add(s, name, NC_DTYPE_F32, d1 ? 2 : 1, shape, zeros) == 0);
}

/* A V1 set of SL layers; `extra` picks generation-specific tensors. */
static nc_tensor_set *synthetic(int rows, bool lambdas, int ve_gate_ch, bool smear, int bad_ck_rows) {
    nc_tensor_set *s = nc_tensor_set_new();
    char name[128];
    add(s, "transformer.wte.weight", rows, SC);
    add(s, "lm_head.weight", rows, SC);
    for (int l = 0; l < SL; l++) {
        const char *suffix[] = {"attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
        int64_t shapes[][2] = {{SC, SC}, {bad_ck_rows ? bad_ck_rows : SC, SC}, {SC, SC}, {SC, SC}, {4 * SC, SC},
                               {SC, 4 * SC}};
        for (int i = 0; i < 6; i++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s.weight", l, suffix[i]);
            add(s, name, shapes[i][0], shapes[i][1]);
        }
        if (ve_gate_ch && l % 2 == (SL - 1) % 2) {
            snprintf(name, sizeof name, "transformer.h.%d.attn.ve_gate.weight", l);
            add(s, name, SH, ve_gate_ch);
            snprintf(name, sizeof name, "value_embeds.%d.weight", l);
            add(s, name, rows, SC);
        }
    }
    if (lambdas) {
        add(s, "resid_lambdas", SL, 0);
        add(s, "x0_lambdas", SL, 0);
    }
    if (smear) {
        add(s, "smear_gate.weight", 1, 24);
        add(s, "smear_lambda", 1, 0);
        add(s, "backout_lambda", 1, 0);
    }
    return s;
}

static nc_model *build(nc_tensor_set *s, int vocab, int seq, nc_generation requested, const char *pattern) {
    nc_model_config sizes = {.n_layer = SL, .n_embd = SC, .n_head = SH, .n_kv_head = SH, .vocab_size = vocab,
                             .sequence_len = seq, .generation = requested};
    snprintf(sizes.window_pattern, sizeof sizes.window_pattern, "%s", pattern);
    nc_model *m = nc_model_from_tensors(s, &sizes, "synthetic", "test");
    if (!m) nc_tensor_set_free(s);
    return m;
}

static void test_generations(void) {
    nc_model *m;
    m = build(synthetic(SV, true, 0, false, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(m && m->cfg.generation == NC_GEN_V2 && !strcmp(m->cfg.window_pattern, "SSSL") &&
              nc_config_window(&m->cfg, 0) == 1024 && nc_config_window(&m->cfg, 1) == 2048,
          "V2: %s", m ? "wrong config" : nc_error());
    nc_model_free(m);

    m = build(synthetic(SV, true, 32, false, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(!m && strstr(nc_error(), "V3 or V4"), "V3/V4 must be refused without an explicit generation: %s",
          nc_error());
    m = build(synthetic(SV, true, 32, false, 0), SV, 2048, NC_GEN_V4, "L");
    CHECK(m && m->cfg.generation == NC_GEN_V4 && m->cfg.softcap == 20.0f && m->cfg.ve_gate_scale == 2.0f &&
              m->cfg.ve_gate_channels == 32, "V4 override: %s", m ? "wrong config" : nc_error());
    nc_model_free(m);

    m = build(synthetic(SV, true, 12, false, 0), SV, 2048, NC_GEN_UNKNOWN, "SL");
    CHECK(m && m->cfg.generation == NC_GEN_V5 && m->cfg.qk_scale == 1.15f && m->cfg.rope_base == 100000.0f &&
              nc_config_window(&m->cfg, 0) == 768 && nc_config_window(&m->cfg, 1) == 2048,
          "V5 (S = ceil(2048/3/128)*128 = 768): %s", m ? "wrong config" : nc_error());
    nc_model_free(m);

    m = build(synthetic(SV, true, 12, true, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(m && m->cfg.generation == NC_GEN_V6 && nc_config_window(&m->cfg, 0) == 512, "V6: %s",
          m ? "wrong config" : nc_error());
    nc_model_free(m);
    m = build(synthetic(SV, true, 12, true, 0), SV, 2048, NC_GEN_V5, "");
    CHECK(!m, "V6 tensors with V5 requested must be refused");

    /* unknown combinations */
    m = build(synthetic(SV, false, 12, false, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(!m && strstr(nc_error(), "unknown architecture"), "ve without lambdas: %s", nc_error());
    m = build(synthetic(SV, true, 0, true, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(!m && strstr(nc_error(), "unknown architecture"), "smear without ve: %s", nc_error());
    m = build(synthetic(SV, true, 7, false, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(!m && strstr(nc_error(), "ve_gate"), "7-channel ve_gate: %s", nc_error());
    m = build(synthetic(SV, false, 0, false, 0), SV, 2048, NC_GEN_UNKNOWN, "SSSL");
    CHECK(!m && strstr(nc_error(), "window_pattern"), "V1 with a window pattern: %s", nc_error());

    /* shapes and vocab padding */
    m = build(synthetic(SV, false, 0, false, 8), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(!m && strstr(nc_error(), "transformer.h.0.attn.c_k.weight") && strstr(nc_error(), "[8, 16]"),
          "mis-shaped c_k: %s", nc_error());
    m = build(synthetic(128, true, 12, true, 0), 100, 2048, NC_GEN_UNKNOWN, "");
    CHECK(m && m->cfg.padded_vocab == 128 && m->cfg.vocab_size == 100, "padded vocab 100 -> 128: %s",
          m ? "wrong" : nc_error());
    nc_model_free(m);
    m = build(synthetic(128, false, 0, false, 0), 60, 2048, NC_GEN_UNKNOWN, "");
    CHECK(!m && strstr(nc_error(), "rows"), "128 rows for vocab 60 must be refused: %s", nc_error());
    m = build(synthetic(SV, false, 0, false, 0), SV, 2048, NC_GEN_UNKNOWN, "");
    CHECK(m && m->cfg.generation == NC_GEN_V1, "V1: %s", m ? "wrong" : nc_error());
    nc_model_free(m);
    nc_model_config bad = {.n_layer = SL, .n_embd = SC, .n_head = 3, .n_kv_head = 3, .vocab_size = SV,
                           .sequence_len = 8};
    nc_tensor_set *s = synthetic(SV, false, 0, false, 0);
    CHECK(nc_model_from_tensors(s, &bad, "x", "y") == NULL && strstr(nc_error(), "n_head"), "H=3 for C=16: %s",
          nc_error());
    nc_tensor_set_free(s);

    /* parameter counts of the published shapes (nanochat's d34: 2,217,082,880) */
    nc_model_config d34 = {.n_layer = 34, .n_embd = 2176, .n_head = 17, .n_kv_head = 17, .head_dim = 128,
                           .mlp_hidden = 4 * 2176, .vocab_size = 65536, .padded_vocab = 65536,
                           .generation = NC_GEN_V1};
    CHECK(nc_config_param_count(&d34) == 2217082880LL, "d34 params %lld", (long long)nc_config_param_count(&d34));
}

/* ==== config parsing ==== */

static void test_configs(void) {
    nc_model_config c;
    const char *meta = "{\"step\": 1, \"model_config\": {\"sequence_len\": 2048, \"vocab_size\": 65536, "
                       "\"n_layer\": 34, \"n_head\": 17, \"n_kv_head\": 17, \"n_embd\": 2176}}";
    CHECK(nc_config_parse_meta(meta, strlen(meta), "m", &c) == 0 && c.n_layer == 34 && c.n_embd == 2176 &&
              c.vocab_size == 65536 && c.window_pattern[0] == 0, "meta: %s", nc_error());
    const char *bad_meta[] = {
        "{\"model_config\": {\"sequence_len\": 2048}}",
        "{\"model_config\": {\"sequence_len\": 2048.5, \"vocab_size\": 1, \"n_layer\": 1, \"n_head\": 1, "
        "\"n_kv_head\": 1, \"n_embd\": 2}}",
        "{\"model_config\": {\"sequence_len\": -1, \"vocab_size\": 1, \"n_layer\": 1, \"n_head\": 1, "
        "\"n_kv_head\": 1, \"n_embd\": 2}}",
        "[1, 2]", "{", "",
    };
    for (size_t i = 0; i < NC_ARRAY_LEN(bad_meta); i++)
        CHECK(nc_config_parse_meta(bad_meta[i], strlen(bad_meta[i]), "m", &c) != 0, "bad meta %zu accepted", i);
    const char *hf = "{\"model_type\": \"nanochat\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                     "\"num_attention_heads\": 2, \"max_position_embeddings\": 128, \"vocab_size\": 256, "
                     "\"intermediate_size\": 256, \"rope_parameters\": {\"rope_theta\": 10000.0}}";
    CHECK(nc_config_parse_hf(hf, strlen(hf), "c", &c) == 0 && c.n_kv_head == 2 && c.sequence_len == 128,
          "hf config: %s", nc_error());
    const char *bad_hf = "{\"model_type\": \"nanochat\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                         "\"num_attention_heads\": 2, \"max_position_embeddings\": 128, \"vocab_size\": 256, "
                         "\"intermediate_size\": 256, \"rope_parameters\": {\"rope_theta\": 500000.0}}";
    CHECK(nc_config_parse_hf(bad_hf, strlen(bad_hf), "c", &c) != 0 && strstr(nc_error(), "rope_theta"),
          "rope_theta 500000 accepted");
    const char *llama = "{\"model_type\": \"llama\"}";
    CHECK(nc_config_parse_hf(llama, strlen(llama), "c", &c) != 0 && strstr(nc_error(), "llama"), "llama accepted");
}

/* ==== pickle ==== */

static const nc_pickle_obj *get(const nc_pickle_obj *d, const char *key) { return nc_pickle_dict_get(d, key); }

static void test_pickle_objects(int proto) {
    char path[128];
    snprintf(path, sizeof path, DATA "objects_p%d.pkl", proto);
    nc_mapped_file f;
    CHECK(nc_map_file(path, &f) == 0, "%s", nc_error());
    nc_pickle *p = nc_pickle_load(f.data, f.size);
    CHECK(p != NULL, "%s: %s", path, nc_error());
    if (p) {
        const nc_pickle_obj *r = nc_pickle_root(p), *ints = get(r, "ints");
        const int64_t want[] = {0, 1, 255, 256, 65535, 65536, -1, -2147483648LL, 2147483648LL, 1099511627776LL,
                                INT64_MIN, INT64_MAX};
        CHECK(ints && ints->kind == NC_PK_LIST && ints->n == NC_ARRAY_LEN(want), "p%d ints", proto);
        for (size_t i = 0; ints && i < ints->n && i < NC_ARRAY_LEN(want); i++)
            CHECK(ints->u.items[i]->kind == NC_PK_INT && ints->u.items[i]->u.i == want[i], "p%d int %zu: %lld", proto,
                  i, (long long)ints->u.items[i]->u.i);
        const nc_pickle_obj *v = get(r, "float");
        CHECK(v && v->kind == NC_PK_FLOAT && v->u.f == 1.5, "p%d float", proto);
        v = get(r, "neg");
        CHECK(v && v->kind == NC_PK_FLOAT && v->u.f == -0.1, "p%d neg", proto);
        v = get(r, "t");
        CHECK(v && v->kind == NC_PK_BOOL && v->u.b, "p%d True", proto);
        v = get(r, "f");
        CHECK(v && v->kind == NC_PK_BOOL && !v->u.b, "p%d False", proto);
        v = get(r, "none");
        CHECK(v && v->kind == NC_PK_NONE, "p%d None", proto);
        CHECK(nc_pickle_is_str(get(r, "s"), "h\xc3\xa9llo"), "p%d utf-8 str", proto);
        v = get(r, "long_str");
        CHECK(v && v->kind == NC_PK_STR && v->n == 300, "p%d long str", proto);
        v = get(r, "b");
        if (proto >= 3) CHECK(v && v->kind == NC_PK_BYTES && v->n == 2 && !memcmp(v->u.s, "\x00\xff", 2), "p%d bytes", proto);
        else CHECK(v && v->kind == NC_PK_OBJECT && nc_pickle_is_global(v->u.object.callable, "_codecs", "encode"),
                   "p2 bytes as _codecs.encode");
        v = get(r, "big_bytes");
        if (proto >= 3) {
            CHECK(v && v->kind == NC_PK_BYTES && v->n == 512, "p%d big bytes", proto);
            for (int i = 0; v && v->n == 512 && i < 512; i++)
                CHECK((uint8_t)v->u.s[i] == (uint8_t)(i % 256), "p%d byte %d", proto, i);
        }
        v = get(r, "tuple");
        CHECK(v && v->kind == NC_PK_TUPLE && v->n == 2 && v->u.items[1]->kind == NC_PK_TUPLE &&
                  v->u.items[1]->u.items[1]->u.i == 3, "p%d nested tuple", proto);
        v = get(r, "shared");
        CHECK(v && v->n == 2 && v->u.items[0] == v->u.items[1] && v->u.items[0]->n == 2, "p%d memo sharing", proto);
        nc_pickle_free(p);
    }
    nc_unmap_file(&f);
}

static void test_pickle(void) {
    test_pickle_objects(2);
    test_pickle_objects(5);

    /* a pickled tiktoken.Encoding (nanochat's tokenizer.pkl) */
    nc_mapped_file f;
    CHECK(nc_map_file(DATA "v1/tokenizer.pkl", &f) == 0, "%s", nc_error());
    nc_pickle *p = nc_pickle_load(f.data, f.size);
    CHECK(p != NULL, "tokenizer.pkl: %s", nc_error());
    if (p) {
        const nc_pickle_obj *r = nc_pickle_root(p);
        CHECK(r->kind == NC_PK_OBJECT && nc_pickle_is_global(r->u.object.callable, "tiktoken.core", "Encoding"),
              "root is a tiktoken.core.Encoding");
        const nc_pickle_obj *st = r->kind == NC_PK_OBJECT ? r->u.object.state : NULL;
        CHECK(nc_pickle_is_str(get(st, "name"), "rustbpe"), "encoding name");
        const nc_pickle_obj *ranks = get(st, "mergeable_ranks");
        size_t n = 0;
        const nc_pickle_obj *const *kv = nc_pickle_pairs(ranks, &n);
        CHECK(n == 256, "256 ranks, got %zu", n);
        for (size_t i = 0; i < n; i++)
            CHECK(kv[2 * i]->kind == NC_PK_BYTES && kv[2 * i]->n == 1 && (uint8_t)kv[2 * i]->u.s[0] == i &&
                      kv[2 * i + 1]->u.i == (int64_t)i, "rank %zu", i);
        const nc_pickle_obj *sp = get(st, "special_tokens");
        CHECK(sp && sp->n == 9 && get(sp, "<|assistant_end|>") && get(sp, "<|assistant_end|>")->u.i == 260,
              "special tokens");
        nc_pickle_free(p);
    }
    nc_unmap_file(&f);

    /* malformed pickles: clear errors, never a crash */
    const struct {
        const char *bytes;
        size_t len;
        const char *needle;
    } bad[] = {
        {"\x80\x02" "c", 3, "unterminated GLOBAL"},
        {"\x80\x02K\x01i", 5, "unsupported opcode 0x69 ('i') at offset 4"},
        {"\x80\x02" "\x82\x01.", 5, "unsupported opcode 0x82 at offset 2"},
        {"\x80\x02" "h\x05.", 5, "memo"},
        {"\x80\x02" "R.", 4, "underflow"},
        {"\x80\x02" "X\xff\xff\xff\x7f" "ab.", 10, "past the end"},
        {"\x80\x02K\x01", 4, "without STOP"},
        {"\x80\x09.", 3, "protocol"},
        {"\x80\x02" "]K\x01K\x02u.", 9, "MARK"},
        {"\x80\x02" "](K\x01K\x02u.", 10, "not a dict"},
        {"\x80\x02" "\x8b\x09\x00\x00\x00" "123456789.", 16, "64 bits"},
        {"\x80\x02" "r\xff\xff\xff\x0f.", 8, "underflow"},
        {"\x80\x02" "K\x01r\xff\xff\xff\x0f.", 10, "memo index"},
        {"", 0, "without STOP"},
    };
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) {
        nc_pickle *q = nc_pickle_load((const uint8_t *)bad[i].bytes, bad[i].len);
        CHECK(q == NULL && strstr(nc_error(), bad[i].needle), "bad pickle %zu: want '%s', got '%s'", i, bad[i].needle,
              q ? "success" : nc_error());
        nc_pickle_free(q);
    }
}

/* ==== damaged archives ==== */

static void test_damaged(void) {
    nc_mapped_file f;
    CHECK(nc_map_file(DATA "v1/model_000005.pt", &f) == 0, "%s", nc_error());
    if (!f.data) return;
    uint8_t *buf = malloc(f.size);
    /* every truncation fails (the end record is gone) */
    int ok_truncations = 0;
    for (size_t len = 0; len < f.size; len += 61) {
        nc_tensor_set *s = nc_tensor_set_new();
        memcpy(buf, f.data, len);
        if (nc_torch_read(buf, len, s) == 0) ok_truncations++;
        nc_tensor_set_free(s);
    }
    CHECK(ok_truncations == 0, "%d truncated archives were accepted", ok_truncations);
    /* a central directory offset pointing past the file (torch always writes
     * the ZIP64 end record, whose values win) */
    memcpy(buf, f.data, f.size);
    size_t eocd = f.size - 22, loc64 = eocd - 20;
    CHECK(buf[eocd] == 0x50 && buf[eocd + 1] == 0x4b && buf[eocd + 2] == 5 && buf[eocd + 3] == 6, "EOCD at the end");
    CHECK(buf[loc64] == 0x50 && buf[loc64 + 1] == 0x4b && buf[loc64 + 2] == 6 && buf[loc64 + 3] == 7,
          "ZIP64 locator before it");
    size_t eocd64 = (size_t)buf[loc64 + 8] | (size_t)buf[loc64 + 9] << 8 | (size_t)buf[loc64 + 10] << 16;
    buf[eocd64 + 48 + 5] = 0x7f;
    nc_tensor_set *s = nc_tensor_set_new();
    CHECK(nc_torch_read(buf, f.size, s) != 0 && strstr(nc_error(), "central directory"), "bad cd offset: %s",
          nc_error());
    nc_tensor_set_free(s);
    /* flip every byte of the central directory in turn: errors or a clean read, never a crash */
    memcpy(buf, f.data, f.size);
    uint32_t cd = (uint32_t)buf[eocd + 16] | (uint32_t)buf[eocd + 17] << 8 | (uint32_t)buf[eocd + 18] << 16 |
                  (uint32_t)buf[eocd + 19] << 24;
    int failures = 0, reads = 0;
    for (size_t i = cd; i < f.size; i++) {
        buf[i] ^= 0xa5;
        s = nc_tensor_set_new();
        if (nc_torch_read(buf, f.size, s)) failures++;
        else reads++;
        nc_tensor_set_free(s);
        buf[i] ^= 0xa5;
    }
    CHECK(failures > 0, "corrupting the directory never failed (%d reads)", reads);
    free(buf);
    nc_unmap_file(&f);

    /* safetensors: header longer than the file */
    uint8_t st[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    s = nc_tensor_set_new();
    CHECK(nc_safetensors_read(st, 10, s, NULL) != 0 && strstr(nc_error(), "header length"), "st header: %s",
          nc_error());
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,20]}}";
    size_t hl = strlen(hdr);
    uint8_t *b2 = calloc(1, 8 + hl + 16);
    b2[0] = (uint8_t)hl;
    memcpy(b2 + 8, hdr, hl);
    CHECK(nc_safetensors_read(b2, 8 + hl + 16, s, NULL) != 0 && strstr(nc_error(), "data_offsets"),
          "st range beyond data: %s", nc_error());
    free(b2);
    nc_tensor_set_free(s);
}

/* ==== random models ==== */

static void test_random(void) {
    nc_model *a = nc_model_random("2,64,4,2", 5), *b = nc_model_random("2,64,4,2", 5), *c = nc_model_random("2,64,4,2", 6);
    CHECK(a && b && c, "random: %s", nc_error());
    if (a && b && c) {
        CHECK(a->cfg.n_kv_head == 2 && a->cfg.vocab_size == 65536 && a->cfg.generation == NC_GEN_V1, "random cfg");
        for (int l = 0; l < 2; l++) {
            const nc_tensor *ta = a->layers[l].mlp_fc, *tb = b->layers[l].mlp_fc, *tc = c->layers[l].mlp_fc;
            CHECK(!memcmp(ta->data, tb->data, ta->nbytes), "same seed, same weights");
            CHECK(memcmp(ta->data, tc->data, ta->nbytes) != 0, "other seed, other weights");
            float lim = sqrtf(3.0f / 64) * 1.01f;
            int zeros_found = 0, out = 0;
            double sq = 0;
            for (int64_t i = 0; i < nc_tensor_numel(ta); i++) {
                float v = nc_tensor_get_f32(ta, i);
                zeros_found += v == 0;
                out += fabsf(v) > lim;
                sq += (double)v * v;
            }
            double var = sq / (double)nc_tensor_numel(ta);
            CHECK(zeros_found == 0 && out == 0, "random values: %d zeros, %d beyond +-sqrt(3/C)", zeros_found, out);
            CHECK(fabs(var - 1.0 / 64) < 0.1 / 64, "variance %g, want 1/C = %g", var, 1.0 / 64);
        }
    }
    nc_model_free(a);
    nc_model_free(b);
    nc_model_free(c);
    CHECK(nc_model_random("d7", 1) == NULL, "bad spec accepted");
    CHECK(nc_model_random("2,63,2", 1) == NULL, "odd head dim accepted");
    CHECK(nc_model_random("2,64,4,3", 1) == NULL, "Hkv not dividing H accepted");
}

int main(void) {
    test_all_tensors();
    test_locate();
    test_models();
    test_generations();
    test_configs();
    test_pickle();
    test_damaged();
    test_random();
    return check_summary("test_formats");
}
