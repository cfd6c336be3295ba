/*
 * forward_fixture.h: loading the forward-pass fixtures that
 * tools/make_forward_fixtures.py writes (tests/data/forward/<name>/), shared
 * by test_cpu_forward.c and test_cuda_backend.c.
 *
 * model.json holds the config, a manifest of tensors and the test cases.
 * A tensor is either listed by value or marked "uniform": its values are
 * then a splitmix64 function of (fnv1a64(name), index), identical to the
 * script's prng_uniform, so the weights are rebuilt here instead of being
 * committed. Each case has a prompt, the positions whose fp32 logits
 * PyTorch stored (in a .bin beside it) and PyTorch's greedy continuation.
 */
#ifndef NC_TESTS_FORWARD_FIXTURE_H
#define NC_TESTS_FORWARD_FIXTURE_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "util/common.h"
#include "util/numeric.h"

#define FIXTURE_DIR "tests/data/forward"

typedef struct {
    int32_t *prompt, *positions, greedy[16];
    int n_prompt, n_positions, n_greedy;
    float *ref; /* [n_positions, V] */
} fx_case;

typedef struct {
    const char *name;
    nc_model *model;
    fx_case cases[4];
    int n_cases, V;
} fixture;

/* Whole file, NUL-terminated; NULL if it cannot be opened. */
static char *fixture_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = nc_xmalloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) len = 0;
    buf[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return buf;
}

/* The fixture script's deterministic weights: splitmix64 of (fnv1a(name), i). */
static float fixture_value(const char *name, int64_t i, float scale) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (const char *s = name; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
    uint64_t z = h + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((float)(z >> 40) * 0x1p-23f - 1.0f) * scale;
}

/* The weight and KV-cache formats the backends are compared in
 * (docs/quantization.md): as stored, int8, fp8, the fp8 cache, and int8
 * weights with the fp8 cache. *n receives the count. */
typedef struct {
    nc_weight_format weights;
    nc_kv_cache_format kv;
} fixture_mode;

static inline const fixture_mode *fixture_modes(int *n) {
    static const fixture_mode modes[] = {{NC_WEIGHTS_FLOAT, NC_KV_CACHE_BF16}, {NC_WEIGHTS_INT8, NC_KV_CACHE_BF16},
                                         {NC_WEIGHTS_FP8, NC_KV_CACHE_BF16},   {NC_WEIGHTS_FLOAT, NC_KV_CACHE_FP8},
                                         {NC_WEIGHTS_INT8, NC_KV_CACHE_FP8}};
    *n = (int)NC_ARRAY_LEN(modes);
    return modes;
}

/* max|ours - ref| / max|ref| over one row of V logits: the row's largest
 * logit sets the scale. */
static inline double fixture_row_error(const float *ours, const float *ref, int V) {
    double maxdiff = 0, maxref = 0;
    for (int i = 0; i < V; i++) {
        maxdiff = fmax(maxdiff, fabs((double)ours[i] - ref[i]));
        maxref = fmax(maxref, fabs((double)ref[i]));
    }
    return maxdiff / maxref;
}

static int32_t *fixture_ints(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = nc_xmalloc(sizeof(int32_t) * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static nc_model *fixture_build_model(const cJSON *meta, const char *name) {
    const cJSON *mc = cJSON_GetObjectItem(meta, "model_config");
    nc_model_config sizes;
    memset(&sizes, 0, sizeof sizes);
    sizes.n_layer = cJSON_GetObjectItem(mc, "n_layer")->valueint;
    sizes.n_embd = cJSON_GetObjectItem(mc, "n_embd")->valueint;
    sizes.n_head = cJSON_GetObjectItem(mc, "n_head")->valueint;
    sizes.n_kv_head = cJSON_GetObjectItem(mc, "n_kv_head")->valueint;
    sizes.vocab_size = cJSON_GetObjectItem(mc, "vocab_size")->valueint;
    sizes.sequence_len = cJSON_GetObjectItem(mc, "sequence_len")->valueint;
    const cJSON *wp = cJSON_GetObjectItem(mc, "window_pattern");
    if (wp) snprintf(sizes.window_pattern, sizeof sizes.window_pattern, "%s", wp->valuestring);
    nc_tensor_set *set = nc_tensor_set_new();
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(meta, "tensors")) {
        const char *tn = cJSON_GetObjectItem(t, "name")->valuestring;
        bool bf = !strcmp(cJSON_GetObjectItem(t, "dtype")->valuestring, "bf16");
        int nd;
        int32_t *sh = fixture_ints(cJSON_GetObjectItem(t, "shape"), &nd);
        int64_t shape[NC_MAX_DIMS], n = 1;
        for (int i = 0; i < nd; i++) n *= shape[i] = sh[i];
        free(sh);
        void *buf = nc_xmalloc((size_t)n * (bf ? 2 : 4));
        const cJSON *uni = cJSON_GetObjectItem(t, "uniform"), *vals = cJSON_GetObjectItem(t, "values");
        for (int64_t i = 0; i < n; i++) {
            float v = uni ? fixture_value(tn, i, (float)uni->valuedouble)
                          : (float)cJSON_GetArrayItem(vals, (int)i)->valuedouble;
            if (bf) ((uint16_t *)buf)[i] = nc_f32_to_bf16(v);
            else ((float *)buf)[i] = v;
        }
        nc_tensor_set_keep_buffer(set, buf);
        NC_ASSERT(nc_tensor_set_add(set, tn, bf ? NC_DTYPE_BF16 : NC_DTYPE_F32, nd, shape, buf) == 0);
    }
    nc_model *m = nc_model_from_tensors(set, &sizes, name, "fixture");
    if (!m) {
        fprintf(stderr, "fixture %s: %s\n", name, nc_error());
        exit(1);
    }
    return m;
}

/* Loads fixture `name`; false if its model.json cannot be read (run from
 * the repository root). Malformed fixtures abort: they are ours. */
static bool fixture_load(fixture *fx, const char *name) {
    char path[512];
    memset(fx, 0, sizeof *fx);
    fx->name = name;
    snprintf(path, sizeof path, FIXTURE_DIR "/%s/model.json", name);
    char *text = fixture_read_file(path, NULL);
    if (!text) return false;
    cJSON *meta = cJSON_Parse(text);
    NC_ASSERT(meta);
    fx->model = fixture_build_model(meta, name);
    fx->V = fx->model->cfg.vocab_size;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(meta, "cases")) {
        fx_case *tc = &fx->cases[fx->n_cases++];
        tc->prompt = fixture_ints(cJSON_GetObjectItem(c, "prompt"), &tc->n_prompt);
        tc->positions = fixture_ints(cJSON_GetObjectItem(c, "logit_positions"), &tc->n_positions);
        int32_t *g = fixture_ints(cJSON_GetObjectItem(c, "greedy"), &tc->n_greedy);
        tc->n_greedy = NC_MIN(tc->n_greedy, 16);
        memcpy(tc->greedy, g, sizeof(int32_t) * (size_t)tc->n_greedy);
        free(g);
        snprintf(path, sizeof path, FIXTURE_DIR "/%s/%s", name, cJSON_GetObjectItem(c, "logits_file")->valuestring);
        size_t nbytes;
        tc->ref = (float *)fixture_read_file(path, &nbytes);
        NC_ASSERT(tc->ref && nbytes == sizeof(float) * (size_t)tc->n_positions * (size_t)fx->V);
    }
    cJSON_Delete(meta);
    free(text);
    return true;
}

static void fixture_free(fixture *fx) {
    for (int i = 0; i < fx->n_cases; i++) {
        free(fx->cases[i].prompt);
        free(fx->cases[i].positions);
        free(fx->cases[i].ref);
    }
    nc_model_free(fx->model);
}

#endif /* NC_TESTS_FORWARD_FIXTURE_H */
