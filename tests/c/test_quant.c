/*
 * test_quant.c: the 8-bit weight formats (docs/quantization.md) below the
 * forward pass, against independent references:
 *   - e4m3fn conversions: all 256 decodes and ~1500 encodes (every tie
 *     between neighbours included) against PyTorch's float8_e4m3fn
 *     (tests/data/quant/fp8.json, tools/make_quant_fixtures.py), plus the
 *     saturation the format defines;
 *   - the quantiser: layer 0's c_k of two fixture models, int8 and fp8, byte
 *     for byte and scale for scale against numpy / PyTorch;
 *   - the kernels of every variant this CPU has, on shapes with every kind
 *     of tail (rows not a multiple of 4, K not a multiple of 8 / 32 / 64,
 *     1 and several tokens): weight-only int8 / fp8 against a double sum over
 *     the dequantised weights (|error| <= 1e-5 x sum |x w|), the q8 (VNNI)
 *     kernels against cpu_matmul_i8_q8_ref (the same integer math: 1e-5);
 *   - files: a tiny 8-bit model's tensor set is accepted, and each defect
 *     (scale missing, wrong shape / dtype, NaN or negative scale, mixed
 *     formats, metadata missing or naming an unknown format / scheme /
 *     version, a stray scale) is refused with a message naming the tensor
 *     or key; safetensors save -> read keeps every byte and the metadata;
 *   - nc_model_quantize refuses a non-finite weight (model unchanged) and a
 *     second format.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"
#include "check.h"
#include "formats/safetensors.h"
#include "forward_fixture.h"
#include "model/model.h"
#include "model/quantize.h"
#include "util/common.h"
#include "util/numeric.h"

#define QUANT_DIR "tests/data/quant"

/* ==== e4m3fn ==== */

static void check_fp8_conversions(void) {
    char *text = fixture_read_file(QUANT_DIR "/fp8.json", NULL);
    CHECK(text, "cannot read " QUANT_DIR "/fp8.json (run from the repository root)");
    if (!text) return;
    cJSON *j = cJSON_Parse(text);
    const cJSON *dec = cJSON_GetObjectItem(j, "decode");
    const float *lut = cpu_f8_table();
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        const cJSON *v = cJSON_GetArrayItem(dec, b);
        float ours = nc_f8e4m3_to_f32((uint8_t)b);
        bool ok = cJSON_IsNull(v) ? isnan(ours) && isnan(lut[b]) : ours == (float)v->valuedouble && lut[b] == ours;
        if (!ok && bad++ < 5) CHECK(ok, "decode 0x%02x: %g, PyTorch %g", b, ours, v->valuedouble);
    }
    CHECK(bad == 0, "%d decodes differ from PyTorch", bad);
    const cJSON *bits = cJSON_GetObjectItem(j, "encode_bits"), *want = cJSON_GetObjectItem(j, "encode_expected");
    int n = cJSON_GetArraySize(bits);
    bad = 0;
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)cJSON_GetArrayItem(bits, i)->valuedouble;
        float f;
        memcpy(&f, &u, 4);
        int got = nc_f32_to_f8e4m3(f), exp = cJSON_GetArrayItem(want, i)->valueint;
        if (got != exp && bad++ < 5) CHECK(got == exp, "encode %.9g: 0x%02x, PyTorch 0x%02x", f, got, exp);
    }
    CHECK(bad == 0 && n > 1000, "%d of %d encodes differ from PyTorch", bad, n);
    /* the format saturates (PyTorch's cast would give NaN) and keeps NaN */
    CHECK(nc_f32_to_f8e4m3(1000.0f) == 0x7e && nc_f32_to_f8e4m3(-INFINITY) == 0xfe, "saturation to +-448");
    CHECK(nc_f32_to_f8e4m3(INFINITY) == 0x7e && nc_f32_to_f8e4m3(464.0f) == 0x7e, "saturation of inf / 464");
    CHECK((nc_f32_to_f8e4m3(NAN) & 0x7f) == 0x7f, "NaN stays NaN");
    cJSON_Delete(j);
    free(text);
}

/* ==== the quantiser against numpy / PyTorch ==== */

static void check_quantiser_bytes(const char *name) {
    for (int fmt = NC_WEIGHTS_INT8; fmt <= NC_WEIGHTS_FP8; fmt++) {
        fixture fx;
        CHECK(fixture_load(&fx, name), "fixture %s", name);
        CHECK(nc_model_quantize(fx.model, (nc_weight_format)fmt, true, 2) == 0, "quantize: %s", nc_error());
        const nc_tensor *t = fx.model->layers[0].c_k, *s = fx.model->layers[0].scale.c_k;
        char path[256];
        snprintf(path, sizeof path, QUANT_DIR "/%s_c_k0_%s.bin", name, fmt == NC_WEIGHTS_INT8 ? "int8" : "fp8");
        size_t n;
        uint8_t *ref = (uint8_t *)fixture_read_file(path, &n);
        int64_t rows = t->shape[0], cols = t->shape[1];
        CHECK(ref && n == (size_t)(rows * cols) + 4 * (size_t)rows, "%s: %zu bytes", path, n);
        if (ref && n == (size_t)(rows * cols) + 4 * (size_t)rows) {
            CHECK(t->dtype == (fmt == NC_WEIGHTS_INT8 ? NC_DTYPE_I8 : NC_DTYPE_F8_E4M3), "dtype %s", nc_dtype_name(t->dtype));
            int64_t diff = 0;
            for (int64_t i = 0; i < rows * cols; i++) diff += ((const uint8_t *)t->data)[i] != ref[i];
            CHECK(diff == 0, "%s %s: %lld of %lld bytes differ from the reference", name,
                  nc_weight_format_name(fmt), (long long)diff, (long long)(rows * cols));
            CHECK(!memcmp(s->data, ref + rows * cols, 4 * (size_t)rows), "%s %s: scales differ", name,
                  nc_weight_format_name(fmt));
        }
        free(ref);
        fixture_free(&fx);
    }
}

/* ==== kernels ==== */

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

/* One shape, every variant: y for T tokens against the double reference. */
static void check_kernels_shape(int64_t R, int64_t K, int64_t T) {
    uint64_t seed = (uint64_t)(R * 1000 + K * 10 + T);
    float *w = malloc(sizeof(float) * (size_t)(R * K)), *x = malloc(sizeof(float) * (size_t)(T * K));
    for (int64_t i = 0; i < R * K; i++) w[i] = frand(&seed) * (1 + (float)(i % 7));
    for (int64_t i = 0; i < T * K; i++) x[i] = frand(&seed) * 3;
    int8_t *q8 = malloc((size_t)(R * K));
    uint8_t *f8 = malloc((size_t)(R * K));
    float s8[64], sf8[64];
    for (int64_t r = 0; r < R; r++) {
        s8[r] = nc_quantize_row_int8(w + r * K, K, q8 + r * K);
        sf8[r] = nc_quantize_row_fp8(w + r * K, K, f8 + r * K);
    }
    int64_t ldd = (K + CPU_Q8_BLOCK - 1) / CPU_Q8_BLOCK;
    int8_t *xq = malloc((size_t)(T * K));
    float *xd = malloc(sizeof(float) * (size_t)(T * ldd));
    cpu_quantize_x_q8(x, K, T, K, xq, K, xd, ldd);
    cpu_xq8 xq8 = {xq, xd, K, ldd};
    cpu_matrix mi = {q8, NC_DTYPE_I8, R, K, s8}, mf = {f8, NC_DTYPE_F8_E4M3, R, K, sf8};
    float *y = malloc(sizeof(float) * (size_t)(T * R)), *yref = malloc(sizeof(float) * (size_t)(T * R));
    cpu_matmul_i8_q8_ref(&xq8, T, &mi, 0, R, yref, R);
    float *scratch = malloc(sizeof(float) * (size_t)cpu_matmul_scratch_floats(K));
    for (int v = 0; cpu_kernel_variants[v]; v++) {
        const cpu_kernels *k = cpu_kernel_variants[v];
        if (!cpu_kernels_supported(k)) continue;
        for (int f = 0; f < 2; f++) {
            const cpu_matrix *m = f ? &mf : &mi;
            (f ? k->matmul_f8 : k->matmul_i8)(x, K, T, m, 0, R, y, R, scratch);
            double worst = 0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t r = 0; r < R; r++) {
                    double sum = 0, mag = 0;
                    for (int64_t c = 0; c < K; c++) {
                        double wd = f ? (double)nc_f8e4m3_to_f32(f8[r * K + c]) * sf8[r] : (double)q8[r * K + c] * s8[r];
                        sum += (double)x[t * K + c] * wd;
                        mag += fabs((double)x[t * K + c] * wd);
                    }
                    worst = fmax(worst, fabs(y[t * R + r] - sum) / (mag + 1e-30));
                }
            CHECK(worst <= 1e-5, "%s %s R=%lld K=%lld T=%lld: error %.3g x sum|xw|", k->name, f ? "fp8" : "int8",
                  (long long)R, (long long)K, (long long)T, worst);
        }
        if (!k->matmul_i8_q8) continue;
        k->matmul_i8_q8(&xq8, T, &mi, 0, R, y, R);
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < T * R; i++) scale = fmax(scale, fabs(yref[i]));
        for (int64_t i = 0; i < T * R; i++) worst = fmax(worst, fabs(y[i] - yref[i]) / (scale + 1e-30));
        CHECK(worst <= 1e-5, "%s q8 R=%lld K=%lld T=%lld: error %.3g vs the reference", k->name, (long long)R,
              (long long)K, (long long)T, worst);
    }
    free(w), free(x), free(q8), free(f8), free(xq), free(xd), free(y), free(yref), free(scratch);
}

static void check_kernels(void) {
    const int64_t Ks[] = {1, 7, 31, 32, 33, 64, 95, 128, 200, 257};
    const int64_t Rs[] = {1, 4, 37};
    const int64_t Ts[] = {1, 3};
    for (size_t a = 0; a < NC_ARRAY_LEN(Ks); a++)
        for (size_t b = 0; b < NC_ARRAY_LEN(Rs); b++)
            for (size_t c = 0; c < NC_ARRAY_LEN(Ts); c++) check_kernels_shape(Rs[b], Ks[a], Ts[c]);
    for (int v = 0; cpu_kernel_variants[v]; v++)
        printf("kernels %-10s %s\n", cpu_kernel_variants[v]->name,
               cpu_kernels_supported(cpu_kernel_variants[v]) ? "checked" : "not on this CPU");
}

/* ==== files: a tiny 8-bit model and its defects ==== */

/* L1 C8 H2 (D4) V16: wte f32, six int8 layer matrices and an int8 lm_head,
 * each with its scale, and the metadata of a `nanochat quantize` file. */
enum { TC = 8, TV = 16, TF = 32 };

typedef struct {
    nc_tensor_set *s;
    uint8_t buf[8192];
    size_t used;
} tiny;

static void *tiny_alloc(tiny *t, size_t n) {
    void *p = t->buf + t->used;
    t->used += (n + 15) & ~(size_t)15;
    NC_ASSERT(t->used <= sizeof t->buf);
    return p;
}

static void tiny_add(tiny *t, const char *name, nc_dtype dt, int64_t r, int64_t c, bool with_scale) {
    int64_t shape[2] = {r, c};
    size_t n = (size_t)(r * (c ? c : 1));
    void *data = tiny_alloc(t, n * nc_dtype_size(dt));
    uint64_t seed = (uint64_t)strlen(name) * 77 + n;
    for (size_t i = 0; i < n; i++) {
        float v = frand(&seed);
        if (dt == NC_DTYPE_F32) ((float *)data)[i] = v;
        else ((int8_t *)data)[i] = (int8_t)(v * 100);
    }
    NC_ASSERT(nc_tensor_set_add(t->s, name, dt, c ? 2 : 1, shape, data) == 0);
    if (!with_scale) return;
    char sname[128];
    snprintf(sname, sizeof sname, "%s_scale", name);
    float *sc = tiny_alloc(t, sizeof(float) * (size_t)r);
    for (int64_t i = 0; i < r; i++) sc[i] = 0.01f;
    NC_ASSERT(nc_tensor_set_add(t->s, sname, NC_DTYPE_F32, 1, &shape[0], sc) == 0);
}

typedef enum {
    T_OK, T_NO_SCALE, T_SCALE_SHAPE, T_SCALE_DTYPE, T_SCALE_NAN, T_SCALE_NEG, T_MIXED, T_NO_META, T_BAD_FORMAT,
    T_META_OTHER, T_BAD_SCHEME, T_BAD_VERSION, T_STRAY_SCALE, T_COUNT
} tiny_defect;

static nc_tensor_set *tiny_set(tiny *t, tiny_defect d) {
    memset(t, 0, sizeof *t);
    t->s = nc_tensor_set_new();
    tiny_add(t, "transformer.wte.weight", NC_DTYPE_F32, TV, TC, false);
    tiny_add(t, "lm_head.weight", NC_DTYPE_I8, TV, TC, true);
    const struct {
        const char *n;
        int64_t r, c;
    } mats[] = {{"attn.c_q", TC, TC}, {"attn.c_k", TC, TC}, {"attn.c_v", TC, TC},
                {"attn.c_proj", TC, TC}, {"mlp.c_fc", TF, TC}, {"mlp.c_proj", TC, TF}};
    for (size_t i = 0; i < NC_ARRAY_LEN(mats); i++) {
        char name[96];
        snprintf(name, sizeof name, "transformer.h.0.%s.weight", mats[i].n);
        bool target = i == 4; /* the defects hit mlp.c_fc */
        nc_dtype dt = target && d == T_MIXED ? NC_DTYPE_F8_E4M3 : NC_DTYPE_I8;
        if (target && d == T_STRAY_SCALE) dt = NC_DTYPE_F32;
        tiny_add(t, name, dt, mats[i].r, mats[i].c, !(target && d == T_NO_SCALE) && dt != NC_DTYPE_F32);
    }
    if (d == T_STRAY_SCALE) {
        int64_t r = TF;
        NC_ASSERT(nc_tensor_set_add(t->s, "transformer.h.0.mlp.c_fc.weight_scale", NC_DTYPE_F32, 1, &r,
                                    tiny_alloc(t, 4 * TF)) == 0);
        /* the rest stays int8, so the layer formats also differ: make them float too */
    }
    nc_tensor_set *s = t->s;
    if (d == T_SCALE_SHAPE || d == T_SCALE_DTYPE || d == T_SCALE_NAN || d == T_SCALE_NEG) {
        /* rebuild the c_fc scale with the defect: it is the last tensor of that name */
        const nc_tensor *sc = nc_tensor_set_find(s, "transformer.h.0.mlp.c_fc.weight_scale");
        float *v = (float *)sc->data;
        if (d == T_SCALE_NAN) v[3] = NAN;
        if (d == T_SCALE_NEG) v[5] = -1.0f;
        if (d == T_SCALE_DTYPE) nc_tensor_set_retype(s, sc, NC_DTYPE_BF16, sc->data);
        if (d == T_SCALE_SHAPE) {
            int64_t r = TF - 1;
            nc_tensor_set *s2 = nc_tensor_set_new();
            for (int i = 0; i < nc_tensor_set_count(s); i++) {
                const nc_tensor *x = nc_tensor_set_at(s, i);
                bool hit = x == sc;
                NC_ASSERT(nc_tensor_set_add(s2, x->name, x->dtype, x->ndim, hit ? &r : x->shape, x->data) == 0);
            }
            nc_tensor_set_free(s);
            s = t->s = s2;
        }
    }
    if (d != T_NO_META) {
        const char *fmt = d == T_BAD_FORMAT ? "int4" : d == T_META_OTHER ? "fp8_e4m3" : "int8";
        nc_tensor_set_set_meta(s, NC_QUANT_META_FORMAT, fmt);
        nc_tensor_set_set_meta(s, NC_QUANT_META_SCHEME, d == T_BAD_SCHEME ? "per_group_128" : NC_QUANT_SCHEME);
        nc_tensor_set_set_meta(s, NC_QUANT_META_VERSION, d == T_BAD_VERSION ? "2" : NC_QUANT_VERSION);
    }
    return s;
}

static void check_files(void) {
    static const char *needle[T_COUNT] = {
        [T_NO_SCALE] = "mlp.c_fc.weight_scale' is missing",
        [T_SCALE_SHAPE] = "mlp.c_fc.weight_scale",
        [T_SCALE_DTYPE] = "mlp.c_fc.weight_scale' is bf16",
        [T_SCALE_NAN] = "mlp.c_fc.weight_scale' row 3",
        [T_SCALE_NEG] = "mlp.c_fc.weight_scale' row 5",
        [T_MIXED] = "mlp.c_fc.weight' is f8_e4m3",
        [T_NO_META] = NC_QUANT_META_FORMAT,
        [T_BAD_FORMAT] = "\"int4\"",
        [T_META_OTHER] = "fp8_e4m3",
        [T_BAD_SCHEME] = "per_group_128",
        [T_BAD_VERSION] = "\"2\"",
        [T_STRAY_SCALE] = "mlp.c_fc",
    };
    nc_model_config sizes = {.n_layer = 1, .n_embd = TC, .n_head = 2, .n_kv_head = 2, .vocab_size = TV,
                             .sequence_len = 16};
    for (int d = 0; d < T_COUNT; d++) {
        tiny t;
        nc_tensor_set *s = tiny_set(&t, (tiny_defect)d);
        nc_model *m = nc_model_from_tensors(s, &sizes, "tiny", "test");
        if (d == T_OK) {
            CHECK(m && m->weights == NC_WEIGHTS_INT8 && m->lm_head_scale && m->layers[0].scale.mlp_proj,
                  "a valid int8 set: %s", m ? "wrong format" : nc_error());
            /* save -> read: same bytes, dtypes, shapes, metadata */
            /* in the build dir tests/run.sh names (NC_BUILD), not always build/ */
            const char *dir = getenv("NC_BUILD");
            char path[4096];
            snprintf(path, sizeof path, "%s/test-quant-tiny.safetensors", dir && *dir ? dir : "build");
            CHECK(nc_safetensors_save(path, m->tensors) == 0, "save: %s", nc_error());
            nc_tensor_set *back = nc_tensor_set_new();
            CHECK(nc_safetensors_load(path, back, NULL) == 0, "load: %s", nc_error());
            CHECK(nc_tensor_set_count(back) == nc_tensor_set_count(m->tensors), "tensor count");
            for (int i = 0; i < nc_tensor_set_count(m->tensors); i++) {
                const nc_tensor *a = nc_tensor_set_at(m->tensors, i), *b = nc_tensor_set_find(back, a->name);
                CHECK(b && b->dtype == a->dtype && b->ndim == a->ndim && b->nbytes == a->nbytes &&
                          !memcmp(a->data, b->data, a->nbytes), "round trip of %s", a->name);
            }
            const char *f = nc_tensor_set_meta(back, NC_QUANT_META_FORMAT);
            CHECK(f && !strcmp(f, "int8"), "metadata round trip: %s", f ? f : "(none)");
            nc_model *m2 = nc_model_from_tensors(back, &sizes, "tiny", "test");
            CHECK(m2 != NULL, "reloaded set: %s", nc_error());
            if (m2) nc_model_free(m2);
            else nc_tensor_set_free(back);
            remove(path);
            nc_model_free(m);
            continue;
        }
        const char *msg = nc_error();
        CHECK(!m && strstr(msg, needle[d]), "defect %d: %s (wanted a message with '%s')", d,
              m ? "accepted" : msg, needle[d]);
        if (!m) printf("  refused (%d): %s\n", d, msg);
        if (m) nc_model_free(m);
        else nc_tensor_set_free(s);
    }
}

/* ==== nc_model_quantize failures ==== */

static void check_quantize_errors(void) {
    fixture fx;
    CHECK(fixture_load(&fx, "v1_gqa"), "fixture v1_gqa");
    const nc_tensor *t = fx.model->layers[1].mlp_fc;
    float *w = (float *)t->data, keep = w[5 * t->shape[1] + 3];
    w[5 * t->shape[1] + 3] = NAN;
    int rc = nc_model_quantize(fx.model, NC_WEIGHTS_INT8, true, 2);
    CHECK(rc == -1 && strstr(nc_error(), "transformer.h.1.mlp.c_fc.weight") && strstr(nc_error(), "row 5"),
          "a NaN weight: %s", rc ? nc_error() : "accepted");
    CHECK(t->dtype == NC_DTYPE_F32 && fx.model->weights == NC_WEIGHTS_FLOAT && !fx.model->layers[0].scale.c_q,
          "the model is unchanged after a failed quantisation");
    w[5 * t->shape[1] + 3] = keep;
    CHECK(nc_model_quantize(fx.model, NC_WEIGHTS_INT8, false, 1) == 0, "quantize: %s", nc_error());
    CHECK(fx.model->lm_head->dtype == NC_DTYPE_F32 && !fx.model->lm_head_scale, "lm_head left float");
    CHECK(nc_model_quantize(fx.model, NC_WEIGHTS_INT8, false, 1) == 0, "same format again is a no-op");
    rc = nc_model_quantize(fx.model, NC_WEIGHTS_FP8, true, 1);
    CHECK(rc == -1 && strstr(nc_error(), "already int8"), "requantising: %s", rc ? nc_error() : "accepted");
    fixture_free(&fx);
}

int main(void) {
    check_fp8_conversions();
    check_quantiser_bytes("v1_gqa");
    check_quantiser_bytes("v6_gqa");
    check_kernels();
    check_files();
    check_quantize_errors();
    return check_summary("test_quant");
}
