/*
 * test_cuda_backend.c: the CUDA backend against PyTorch (the fixtures of
 * tools/make_forward_fixtures.py, as test_cpu_forward.c uses them) and
 * against the CPU backend (exact fp32, itself checked against PyTorch).
 * Skips (exit 77) when no usable GPU is present. What every backend must
 * refuse (bad ids, positions, block tables, sizes) is checked by
 * test_backend_contract.c.
 *
 * Every op family runs through forward(): embedding + smear, the
 * projections on each of their kernels (the GEMV for single tokens, with
 * its fused norm and epilogues; for 2..64 rows the skinny wgmma GEMM on an
 * sm_90a build on Hopper, cuBLASLt elsewhere; cuBLASLt past 64 rows), RoPE
 * + QK-norm + KV append, split-KV decode attention, the tensor-core prefill
 * attention, lambdas / value embeddings / backout (V6), the logits rows,
 * and device sampling (forward_sample, and the sampled token's
 * log-probability against the host's). Cases: prefill, token-by-token
 * decode (GEMV, RoPE folded into the attention, CUDA graphs from the second
 * step), chunks of 3 to 93, ragged mixed batches, 2..8 decode rows (GEMM +
 * split-KV), forks by copy_kv_block, contexts past the V6 windows and over
 * several 64-token blocks, GQA, d34-width layers (K = 2176: GEMV tails) and
 * prompts of up to 150 rows (both GEMM paths).
 *
 * 8-bit weights and the fp8 KV cache (docs/quantization.md): the V1 GQA and
 * V6 GQA fixtures quantised to int8 / fp8, or run with an fp8 cache,
 * against PyTorch's logits of the same quantised math
 * (tests/data/quant, tools/make_quant_fixtures.py), prefilled at once,
 * token by token and in chunks of 7, plus a fork of the fp8 cache by
 * copy_kv_block; and every random-model case above again with int8 and
 * fp8 weights, the fp8 cache, and int8 + fp8 cache, against the CPU
 * backend of the same quantised model (its weight-only kernels: the same
 * dequantised weights, exact fp32 math).
 *
 * Tolerances. The reference is fp32 throughout; this backend rounds weights
 * to bf16 (8 significant bits) and keeps q, k, v, the attention output and
 * the MLP hidden in bf16, as nanochat does under autocast. One bf16 rounding
 * is a relative error of <= 2^-9 (0.2%); a few layers of them give logits
 * errors of ~1% of the row's scale. So a row passes when
 * max|ours - ref| <= LOGIT_TOL * max|ref| (LOGIT_TOL = 3e-2), and the top-1
 * token must agree unless the reference's best two logits are closer than
 * twice the row's observed error (a near-tie, where either is acceptable:
 * docs/model.md, Precision). A wrong layout, mask, position or scale
 * gives errors of order 1 and fails.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "forward_fixture.h"
#include "logit_rows.h"
#include "engine/sampler.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/quantize.h"
#include "util/common.h"
#include "util/numeric.h"

#define LOGIT_TOL 3e-2
/* NC_CUDA_FP8_ACT=1 (the device scripts run the test with it too): fp8
 * products of 65 rows or more also round their input rows to e4m3 (3
 * significant bits, up to 2^-4 relative), a few percent of a row's scale
 * after two layers: the bound for that run */
#define FP8_ACT_LOGIT_TOL 1e-1
#define QUANT_DIR "tests/data/quant"
#define POOL 64
#define MAX_TOKENS 320
#define MAX_SEQS 8

static double worst, logit_tol = LOGIT_TOL;

/* Fixtures: forward_fixture.h (format of tools/make_forward_fixtures.py). */


/* ==== comparisons ==== */

static void compare_row(const float *ours, const float *ref, int V, const char *what, int pos) {
    worst = fmax(worst, check_logit_row(ours, ref, V, logit_tol, what, pos));
}

static void compare_fixture(const fixture *fx, const fx_case *tc, const float *logits, int pos0, int n,
                            const char *what) {
    for (int r = 0; r < n; r++)
        for (int k = 0; k < tc->n_positions; k++)
            if (tc->positions[k] == pos0 + r)
                compare_row(logits + (size_t)r * fx->V, tc->ref + (size_t)k * fx->V, fx->V, what, pos0 + r);
}

static void table(int32_t *t, int n, int first, int stride) {
    for (int b = 0; b < n; b++) t[b] = (first + b * stride) % POOL;
}

static int fwd(nc_backend *be, nc_seq_chunk *c, int n, float *logits) {
    nc_batch b = {c, n};
    int rc = be->ops->forward(be, &b, logits);
    if (rc) fprintf(stderr, "forward: %s\n", nc_error());
    return rc;
}

/* ==== fixture checks ==== */

static void check_case(nc_backend *be, const fixture *fx, const fx_case *tc, float *logits) {
    int32_t t1[16], t2[16];
    char what[96];
    /* prefill at once (GEMM + flash attention), then greedy decode (GEMV + split-KV, graphs) */
    table(t1, 16, 7, 5);
    nc_seq_chunk c = {tc->prompt, tc->n_prompt, 0, -1, t1, NC_LOGITS_ALL};
    snprintf(what, sizeof what, "%s prefill", fx->name);
    CHECK(fwd(be, &c, 1, logits) == 0, "%s", what);
    compare_fixture(fx, tc, logits, 0, tc->n_prompt, what);
    int32_t tok = logits_argmax(logits + (size_t)(tc->n_prompt - 1) * fx->V, fx->V), prev = tc->prompt[tc->n_prompt - 1];
    for (int g = 0; g < tc->n_greedy; g++) {
        if (tok != tc->greedy[g]) {
            printf("  %s greedy diverges at step %d (%d vs %d): stopping the comparison there\n", fx->name, g, tok,
                   tc->greedy[g]);
            CHECK(g > 0, "%s: first greedy token differs", fx->name);
            break;
        }
        nc_seq_chunk d = {&tok, 1, tc->n_prompt + g, prev, t1, NC_LOGITS_LAST};
        CHECK(fwd(be, &d, 1, logits) == 0, "greedy decode");
        prev = tok;
        tok = logits_argmax(logits, fx->V);
    }
    /* token by token */
    table(t2, 16, 40, 3);
    snprintf(what, sizeof what, "%s token-by-token", fx->name);
    for (int t = 0; t < tc->n_prompt; t++) {
        nc_seq_chunk d = {tc->prompt + t, 1, t, t ? tc->prompt[t - 1] : -1, t2, NC_LOGITS_LAST};
        CHECK(fwd(be, &d, 1, logits) == 0, "%s", what);
        compare_fixture(fx, tc, logits, t, 1, what);
    }
    /* chunks of 3, 7, 12 and 45 (GEMM + flash), crossing blocks */
    int sizes[4] = {3, 7, 12, 45};
    for (int k = 0; k < 4; k++) {
        table(t2, 16, 63 - k, 61);
        snprintf(what, sizeof what, "%s chunks of %d", fx->name, sizes[k]);
        for (int t = 0; t < tc->n_prompt; t += sizes[k]) {
            int n = NC_MIN(sizes[k], tc->n_prompt - t);
            nc_seq_chunk d = {tc->prompt + t, n, t, t ? tc->prompt[t - 1] : -1, t2, NC_LOGITS_ALL};
            CHECK(fwd(be, &d, 1, logits) == 0, "%s", what);
            compare_fixture(fx, tc, logits, t, n, what);
        }
    }
    /* fork: copy the prompt's blocks (the last one partial) and decode from the copy */
    table(t1, 16, 0, 1);
    table(t2, 16, 32, 1);
    nc_seq_chunk p = {tc->prompt, tc->n_prompt - 1, 0, -1, t1, NC_LOGITS_NONE};
    CHECK(fwd(be, &p, 1, NULL) == 0, "fork prefill");
    int nb = (tc->n_prompt - 1 + 63) / 64;
    for (int b = 0; b < nb; b++)
        CHECK(be->ops->copy_kv_block(be, t1[b], t2[b], NC_MIN(64, tc->n_prompt - 1 - b * 64)) == 0, "copy: %s",
              nc_error());
    nc_seq_chunk d = {tc->prompt + tc->n_prompt - 1, 1, tc->n_prompt - 1, tc->prompt[tc->n_prompt - 2], t2,
                      NC_LOGITS_LAST};
    snprintf(what, sizeof what, "%s forked", fx->name);
    CHECK(fwd(be, &d, 1, logits) == 0, "%s", what);
    compare_fixture(fx, tc, logits, tc->n_prompt - 1, 1, what);
}

/* Case 0 and case 1 together at different positions: a mixed batch (a
 * one-token chunk + a 5-token chunk + a 40-token chunk), then 2 and 6
 * decode rows at once. */
static void check_ragged(nc_backend *be, const fixture *fx, float *logits) {
    const fx_case *a = &fx->cases[0], *b = &fx->cases[fx->n_cases > 1 ? 1 : 0];
    int32_t ta[16], tb[16], tc[16];
    table(ta, 16, 1, 3);
    table(tb, 16, 2, 3);
    table(tc, 16, 3, 3);
    int na = a->n_prompt - 6, nbb = b->n_prompt - 45;
    if (na < 1 || nbb < 1) return;
    nc_seq_chunk pre[3] = {{a->prompt, na, 0, -1, ta, NC_LOGITS_NONE},
                           {b->prompt, nbb, 0, -1, tb, NC_LOGITS_NONE},
                           {a->prompt, na + 1, 0, -1, tc, NC_LOGITS_NONE}};
    CHECK(fwd(be, pre, 3, NULL) == 0, "ragged prefill");
    nc_seq_chunk mix[3] = {{b->prompt + nbb, 40, nbb, b->prompt[nbb - 1], tb, NC_LOGITS_ALL},
                           {a->prompt + na, 1, na, a->prompt[na - 1], ta, NC_LOGITS_LAST},
                           {a->prompt + na + 1, 5, na + 1, a->prompt[na], tc, NC_LOGITS_ALL}};
    CHECK(fwd(be, mix, 3, logits) == 0, "ragged mixed batch");
    char what[96];
    snprintf(what, sizeof what, "%s ragged", fx->name);
    compare_fixture(fx, b, logits, nbb, 40, what);
    compare_fixture(fx, a, logits + (size_t)40 * fx->V, na, 1, what);
    compare_fixture(fx, a, logits + (size_t)41 * fx->V, na + 1, 5, what);
    /* 2 decode rows, then 6 (GEMM + split-KV) in three copies */
    int pa = na + 1, pb = nbb + 40;
    nc_seq_chunk two[2] = {{b->prompt + pb, 1, pb, b->prompt[pb - 1], tb, NC_LOGITS_LAST},
                           {a->prompt + pa, 1, pa, a->prompt[pa - 1], ta, NC_LOGITS_LAST}};
    CHECK(fwd(be, two, 2, logits) == 0, "2 decode rows");
    compare_fixture(fx, b, logits, pb, 1, what);
    compare_fixture(fx, a, logits + fx->V, pa, 1, what);
    if (MAX_SEQS < 6) return;
    int32_t tx[3][16], ty[3][16];
    nc_seq_chunk six[6];
    for (int k = 0; k < 3; k++) {
        for (int j = 0; j < 16; j++) { /* disjoint: 10 scrambled blocks per sequence */
            tx[k][j] = (2 * k) * 10 + (3 * j) % 10;
            ty[k][j] = (2 * k + 1) * 10 + (7 * j) % 10;
        }
        nc_seq_chunk fa = {a->prompt, pa + 1, 0, -1, tx[k], NC_LOGITS_NONE};
        nc_seq_chunk fb = {b->prompt, pb + 1, 0, -1, ty[k], NC_LOGITS_NONE};
        CHECK(fwd(be, &fa, 1, NULL) == 0 && fwd(be, &fb, 1, NULL) == 0, "prefill for 6 rows");
        six[2 * k] = (nc_seq_chunk){a->prompt + pa + 1, 1, pa + 1, a->prompt[pa], tx[k], NC_LOGITS_LAST};
        six[2 * k + 1] = (nc_seq_chunk){b->prompt + pb + 1, 1, pb + 1, b->prompt[pb], ty[k], NC_LOGITS_LAST};
    }
    for (int rep = 0; rep < 3; rep++) { /* eager, capture, replay */
        CHECK(fwd(be, six, 6, logits) == 0, "6 decode rows");
        for (int k = 0; k < 3; k++) {
            compare_fixture(fx, a, logits + (size_t)(2 * k) * fx->V, pa + 1, 1, what);
            compare_fixture(fx, b, logits + (size_t)(2 * k + 1) * fx->V, pb + 1, 1, what);
        }
    }
}

/* ==== 8-bit weights and the fp8 KV cache against PyTorch ==== */

/* mode "int8" / "fp8": the model's matrices quantised; "fp8kv": the cache. */
static nc_backend *quant_backend(nc_model *m, const char *mode) {
    if (strcmp(mode, "fp8kv") && nc_model_quantize(m, strcmp(mode, "int8") ? NC_WEIGHTS_FP8 : NC_WEIGHTS_INT8, true, 0)) {
        CHECK(0, "quantize: %s", nc_error());
        return NULL;
    }
    nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS,
                           .kv_cache = strcmp(mode, "fp8kv") ? NC_KV_CACHE_BF16 : NC_KV_CACHE_FP8};
    nc_backend *be = nc_backend_create("cuda", m, &p);
    CHECK(be != NULL, "cuda backend (%s): %s", mode, nc_error());
    return be;
}

/* One prompt of `mode` three ways (all at once, token by token, chunks of
 * 7), its stored positions against the reference rows; then a fork of its
 * cache by copy_kv_block decoding the last token beside the original. */
static void check_quant_prompt(nc_backend *be, const int32_t *ids, int n, const int32_t *pos, int n_pos,
                               const float *ref, int V, float *logits, const char *what) {
    int32_t t1[16], t2[16];
    char w[128];
    fx_case tc = {(int32_t *)ids, (int32_t *)pos, {0}, n, n_pos, 0, (float *)ref};
    fixture fx = {.V = V};
    table(t1, 16, 9, 7);
    nc_seq_chunk c = {ids, n, 0, -1, t1, NC_LOGITS_ALL};
    snprintf(w, sizeof w, "%s at once", what);
    CHECK(fwd(be, &c, 1, logits) == 0, "%s", w);
    compare_fixture(&fx, &tc, logits, 0, n, w);
    table(t2, 16, 40, 3);
    snprintf(w, sizeof w, "%s token by token", what);
    for (int t = 0; t < n; t++) {
        nc_seq_chunk d = {ids + t, 1, t, t ? ids[t - 1] : -1, t2, NC_LOGITS_LAST};
        CHECK(fwd(be, &d, 1, logits) == 0, "%s", w);
        compare_fixture(&fx, &tc, logits, t, 1, w);
    }
    table(t2, 16, 63, 61);
    snprintf(w, sizeof w, "%s chunks of 7", what);
    for (int t = 0; t < n; t += 7) {
        int k = NC_MIN(7, n - t);
        nc_seq_chunk d = {ids + t, k, t, t ? ids[t - 1] : -1, t2, NC_LOGITS_ALL};
        CHECK(fwd(be, &d, 1, logits) == 0, "%s", w);
        compare_fixture(&fx, &tc, logits, t, k, w);
    }
    /* fork: t2 holds the whole prompt; copy its blocks but the last
     * position's into t1's and decode that position from both */
    table(t1, 16, 20, 1);
    int nb = (n - 1 + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    for (int b = 0; b < nb; b++)
        CHECK(be->ops->copy_kv_block(be, t2[b], t1[b], NC_MIN(NC_KV_BLOCK_TOKENS, n - 1 - b * NC_KV_BLOCK_TOKENS)) == 0,
              "copy_kv_block: %s", nc_error());
    nc_seq_chunk two[2] = {{ids + n - 1, 1, n - 1, ids[n - 2], t2, NC_LOGITS_LAST},
                           {ids + n - 1, 1, n - 1, ids[n - 2], t1, NC_LOGITS_LAST}};
    snprintf(w, sizeof w, "%s forked", what);
    CHECK(fwd(be, two, 2, logits) == 0, "%s", w);
    CHECK(!memcmp(logits, logits + V, sizeof(float) * (size_t)V), "%s: the fork decodes differently", w);
    compare_fixture(&fx, &tc, logits, n - 1, 1, w);
}

/* Every fixture and mode of tests/data/quant/manifest.json (`quick`: the
 * first case of each only). */
static void check_quant_fixtures(float *logits, bool quick) {
    char *text = fixture_read_file(QUANT_DIR "/manifest.json", NULL);
    CHECK(text != NULL, "cannot read " QUANT_DIR "/manifest.json (run from the repository root)");
    cJSON *man = text ? cJSON_Parse(text) : NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(man, "fixtures")) {
        const char *name = cJSON_GetObjectItem(e, "fixture")->valuestring;
        const char *modes[] = {"int8", "fp8", "fp8kv"};
        for (size_t m = 0; m < NC_ARRAY_LEN(modes); m++) {
            fixture fx;
            if (!fixture_load(&fx, name)) {
                CHECK(0, "missing fixture %s", name);
                continue;
            }
            nc_backend *be = quant_backend(fx.model, modes[m]);
            worst = 0;
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItem(e, "cases")) {
                if (!be || strcmp(cJSON_GetObjectItem(c, "mode")->valuestring, modes[m])) continue;
                if (quick && cJSON_GetObjectItem(c, "case")->valueint > 0) continue;
                int n, n_pos;
                int32_t *ids = fixture_ints(cJSON_GetObjectItem(c, "prompt"), &n);
                int32_t *pos = fixture_ints(cJSON_GetObjectItem(c, "positions"), &n_pos);
                char path[256], what[96];
                snprintf(path, sizeof path, QUANT_DIR "/%s", cJSON_GetObjectItem(c, "file")->valuestring);
                size_t bytes;
                float *ref = (float *)fixture_read_file(path, &bytes);
                CHECK(ref && bytes == sizeof(float) * (size_t)n_pos * (size_t)fx.V, "%s", path);
                snprintf(what, sizeof what, "%s %s case %d", name, modes[m], cJSON_GetObjectItem(c, "case")->valueint);
                if (ref) check_quant_prompt(be, ids, n, pos, n_pos, ref, fx.V, logits, what);
                free(ids), free(pos), free(ref);
            }
            if (be) printf("%s %s vs PyTorch: worst relative logit error %.3g\n", name, modes[m], worst);
            nc_backend_free(be);
            fixture_free(&fx);
        }
    }
    cJSON_Delete(man);
    free(text);
}

/* ==== CUDA vs CPU backend on random models (wide layers, GQA, sampling) ==== */

/* Whether the device sampler draws exactly the host sampler's token for
 * these settings: greedy, or the rank-order walk over a top-k of at most
 * 1024 that is not the whole vocabulary (cuda_sample.cu). Otherwise it
 * walks the whole row in another summation order: in_nucleus checks that. */
static bool sampled_exactly(const nc_sampling *s, int V) {
    return s->temperature == 0.0f || (s->top_k > 0 && s->top_k <= 1024 && s->top_k < V);
}

/* Whether `token` lies in the top-p nucleus of the row at the settings'
 * temperature: the tokens more likely than it hold less than top_p. */
static bool in_nucleus(const float *row, int V, int32_t token, const nc_sampling *s) {
    float mx = row[logits_argmax(row, V)];
    double sum = 0, above = 0, pt = exp((row[token] - mx) / s->temperature);
    for (int i = 0; i < V; i++) {
        double pi = exp((row[i] - mx) / s->temperature);
        sum += pi;
        if (pi > pt) above += pi;
    }
    return above < s->top_p * sum * (1 + 1e-4);
}

static void compare_backends(nc_backend *gpu, nc_backend *cpu, nc_seq_chunk *c, int n, int V, float *lg, float *lc,
                             const char *what) {
    int rows = 0;
    for (int i = 0; i < n; i++)
        rows += c[i].logits == NC_LOGITS_ALL ? c[i].n_tokens : c[i].logits == NC_LOGITS_LAST ? 1 : 0;
    CHECK(fwd(gpu, c, n, lg) == 0, "%s (cuda)", what);
    CHECK(fwd(cpu, c, n, lc) == 0, "%s (cpu)", what);
    for (int r = 0; r < rows; r++) compare_row(lg + (size_t)r * V, lc + (size_t)r * V, V, what, r);
}

/* spec with weights `wf` (quantised at load) and a `kv` cache. */
static void check_random(const char *spec, nc_weight_format wf, nc_kv_cache_format kv, float *lg, float *lc) {
    nc_model *m = nc_model_random(spec, 7);
    NC_ASSERT(m);
    CHECK(nc_model_quantize(m, wf, true, 0) == 0, "quantize: %s", nc_error());
    int V = m->cfg.vocab_size;
    nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS, .kv_cache = kv};
    nc_backend *gpu = nc_backend_create("cuda", m, &p), *cpu = nc_backend_create("cpu", m, &p);
    CHECK(gpu && cpu, "backends for %s: %s", spec, nc_error());
    if (!gpu || !cpu) {
        nc_backend_free(gpu);
        nc_backend_free(cpu);
        nc_model_free(m);
        return;
    }
    char what[160], label[96];
    snprintf(label, sizeof label, "%s %s weights%s", spec, nc_weight_format_name(wf),
             kv == NC_KV_CACHE_FP8 ? ", fp8 KV" : "");
    int32_t prompt[MAX_TOKENS], t[MAX_SEQS][16];
    for (int i = 0; i < MAX_TOKENS; i++) prompt[i] = (i * 7919 + 13) % V;
    for (int s = 0; s < MAX_SEQS; s++) table(t[s], 16, 5 * s + 1, 9);
    /* a prefill of 150 (3 blocks) with every row, then 4 decode steps */
    nc_seq_chunk c = {prompt, 150, 0, -1, t[0], NC_LOGITS_ALL};
    snprintf(what, sizeof what, "%s prefill", label);
    compare_backends(gpu, cpu, &c, 1, V, lg, lc, what);
    snprintf(what, sizeof what, "%s decode", label);
    for (int k = 0; k < 4; k++) {
        nc_seq_chunk d = {prompt + 150 + k, 1, 150 + k, prompt[149 + k], t[0], NC_LOGITS_LAST};
        compare_backends(gpu, cpu, &d, 1, V, lg, lc, what);
    }
    /* the same prompt in chunks of 9, 12, 29, 45 and 93 (GEMM batches of
     * several widths, prefill tiles ending mid-block; the chunks of 9 and
     * 12 are verified as decode rows, and the 9 rows from 63 put a pair
     * of rows across a block boundary under NC_CUDA_VERIFY_PAIRS=on) */
    {
        int32_t tc[16];
        table(tc, 16, 57, 1);
        int sizes[5] = {9, 12, 29, 45, 93};
        for (int k = 0; k < 5; k++) {
            snprintf(what, sizeof what, "%s chunks of %d", label, sizes[k]);
            for (int p0 = 0; p0 < 150; p0 += sizes[k]) {
                nc_seq_chunk d = {prompt + p0, NC_MIN(sizes[k], 150 - p0), p0, p0 ? prompt[p0 - 1] : -1, tc,
                                  NC_LOGITS_ALL};
                compare_backends(gpu, cpu, &d, 1, V, lg, lc, what);
            }
        }
    }
    /* a prefill of 300 rows: 256-token tiles of the fp8 GEMM with e4m3
     * rows (NC_CUDA_FP8_ACT), the 65+ row GEMMs otherwise */
    {
        int32_t tl[16];
        table(tl, 16, 57, 1);
        nc_seq_chunk d = {prompt, 300, 0, -1, tl, NC_LOGITS_ALL};
        snprintf(what, sizeof what, "%s prefill of 300", label);
        compare_backends(gpu, cpu, &d, 1, V, lg, lc, what);
    }
    /* 3 rows at different positions, then 8 (GEMM + split-KV) */
    nc_seq_chunk pre[MAX_SEQS], dec[MAX_SEQS];
    for (int s = 1; s < MAX_SEQS; s++) {
        pre[s - 1] = (nc_seq_chunk){prompt + s, 20 + 17 * s, 0, -1, t[s], NC_LOGITS_NONE};
        CHECK(fwd(gpu, pre + s - 1, 1, NULL) == 0 && fwd(cpu, pre + s - 1, 1, NULL) == 0, "%s prefills", label);
    }
    for (int s = 0; s < MAX_SEQS; s++) {
        int pos = s ? 20 + 17 * s : 154;
        const int32_t *src = s ? prompt + s : prompt;
        dec[s] = (nc_seq_chunk){src + pos, 1, pos, src[pos - 1], t[s], NC_LOGITS_LAST};
    }
    snprintf(what, sizeof what, "%s 3 decode rows", label);
    compare_backends(gpu, cpu, dec + 1, 3, V, lg, lc, what);
    snprintf(what, sizeof what, "%s %d decode rows", label, MAX_SEQS);
    for (int s = 1; s < 4; s++) dec[s].pos++, dec[s].prev_token = dec[s].tokens[0], dec[s].tokens++;
    compare_backends(gpu, cpu, dec, MAX_SEQS, V, lg, lc, what);

    /* device sampling vs the host sampler on the same logits and generator;
     * every row but the last also asks for the sampled token's
     * log-probability, checked against the host's nc_sample_logprobs */
    for (int s = 0; s < MAX_SEQS; s++) dec[s].pos++, dec[s].prev_token = dec[s].tokens[0], dec[s].tokens++;
    nc_device_sampling rows[MAX_SEQS];
    nc_sampling hs[MAX_SEQS];
    const float untouched = 123.0f;
    for (int s = 0; s < MAX_SEQS; s++) {
        float temps[4] = {0.0f, 0.8f, 1.0f, 1.3f};
        hs[s] = (nc_sampling){temps[s % 4], (s % 3 == 0) ? 50 : (s % 3 == 1) ? 1000 : 0, s >= 4 ? 0.9f : 1.0f,
                              s == 6 ? 0.05f : 0.0f};
        rows[s] = (nc_device_sampling){hs[s].temperature, hs[s].top_k, hs[s].top_p, hs[s].min_p, {0, 0},
                                       s < MAX_SEQS - 1, untouched, NULL, NULL};
        nc_rng_seed(rows[s].rng_state, 42 + (uint64_t)s);
    }
    CHECK(gpu->ops->sample_logprobs, "the CUDA backend returns log-probabilities from forward_sample");
    nc_sampler_scratch scr;
    NC_ASSERT(nc_sampler_scratch_init(&scr, V) == 0);
    int agree = 0, total = 0;
    double worst_lp = 0;
    for (int rep = 0; rep < 6; rep++) {
        nc_batch b = {dec, MAX_SEQS};
        CHECK(gpu->ops->forward(gpu, &b, lg) == 0, "logits before sampling: %s", nc_error());
        uint64_t host_rng[MAX_SEQS][2];
        int32_t expect[MAX_SEQS], got[MAX_SEQS];
        for (int s = 0; s < MAX_SEQS; s++) {
            memcpy(host_rng[s], rows[s].rng_state, sizeof host_rng[s]);
            expect[s] = nc_sample(lg + (size_t)s * V, V, &hs[s], host_rng[s], &scr);
        }
        CHECK(gpu->ops->forward_sample(gpu, &b, rows, got) == 0, "forward_sample: %s", nc_error());
        for (int s = 0; s < MAX_SEQS; s++) {
            CHECK(got[s] >= 0 && got[s] < V, "sampled id %d out of range", got[s]);
            CHECK(!memcmp(host_rng[s], rows[s].rng_state, sizeof host_rng[s]), "row %d: generator out of step", s);
            if (!rows[s].want_logprob) {
                CHECK(rows[s].logprob == untouched, "row %d: logprob written without want_logprob", s);
            } else if (got[s] >= 0 && got[s] < V) {
                /* the model's own distribution (temperature 1, nothing filtered), whatever the settings */
                double want = nc_sample_logprobs(lg + (size_t)s * V, V, got[s], 0, NULL, NULL);
                double err = fabs(rows[s].logprob - want);
                worst_lp = fmax(worst_lp, err);
                CHECK(err <= 1e-5 || err <= 1e-5 * fabs(want), "row %d (T %g, top-k %d, top-p %g, min-p %g): logprob "
                      "%.9g, host %.9g", s, hs[s].temperature, hs[s].top_k, hs[s].top_p, hs[s].min_p,
                      rows[s].logprob, want);
            }
            if (sampled_exactly(&hs[s], V)) {
                total++;
                agree += got[s] == expect[s];
            } else if (hs[s].top_p < 1.0f) {
                CHECK(in_nucleus(lg + (size_t)s * V, V, got[s], &hs[s]), "row %d: token %d outside the top-p nucleus",
                      s, got[s]);
            }
        }
        for (int s = 0; s < MAX_SEQS; s++) dec[s].prev_token = dec[s].tokens[0], dec[s].tokens++, dec[s].pos++;
    }
    printf("  %s: device sampling matched the host sampler on %d of %d draws; worst logprob error %.3g\n", label,
           agree, total, worst_lp);
    CHECK(agree >= total - 1, "device sampling disagrees with the host sampler (%d of %d)", agree, total);

    /* A mid-prompt chunk (NC_LOGITS_NONE) rides along with sampled rows in
     * one forward_sample: tokens land at the sampled chunks' indices, the
     * NONE chunk's entry is untouched, and greedy picks match the logits of
     * the same rows alone (within a bf16 near-tie: the two batches run GEMMs
     * of different widths). Rewriting row 7's first 20
     * positions with the same tokens leaves its cache as it was. */
    {
        nc_batch alone = {dec, 3};
        CHECK(gpu->ops->forward(gpu, &alone, lg) == 0, "mixed: logits alone: %s", nc_error());
        nc_seq_chunk mix[4] = {dec[0], dec[1], {prompt + 7, 20, 0, -1, t[7], NC_LOGITS_NONE}, dec[2]};
        nc_device_sampling greedy[4];
        memset(greedy, 0, sizeof greedy);
        for (int s = 0; s < 4; s++) greedy[s].top_p = 1.0f;
        int32_t got[4] = {-7, -7, -7, -7};
        nc_batch b = {mix, 4};
        CHECK(gpu->ops->forward_sample(gpu, &b, greedy, got) == 0, "mixed forward_sample: %s", nc_error());
        CHECK(got[2] == -7, "mixed: the NONE chunk's entry was written (%d)", got[2]);
        const int sampled[3] = {0, 1, 3};
        for (int k = 0; k < 3; k++) {
            const float *row = lg + (size_t)k * V;
            int best = logits_argmax(row, V), g = got[sampled[k]];
            CHECK(g >= 0 && g < V && row[g] >= row[best] - 0.05f, "mixed row %d: token %d (logit %g), best %d (%g)",
                  k, g, g >= 0 && g < V ? row[g] : 0.0f, best, row[best]);
        }
    }
    /* Verification on the device (sample_all): forward_sample of a chunk
     * of 5 positions asking NC_LOGITS_ALL (it runs as 5 decode rows over
     * one block table) draws at position i what the host sampler draws from
     * the same chunk's logits (forward) with the generator advanced i draws,
     * returns each position's log-probability and leaves the generator as
     * it came. */
    {
        CHECK(gpu->ops->sample_all, "the CUDA backend samples every position of a verified chunk");
        nc_seq_chunk v = {dec[1].tokens, 5, dec[1].pos, dec[1].prev_token, t[1], NC_LOGITS_ALL};
        nc_batch b = {&v, 1};
        const nc_sampling settings[3] = {{0.0f, 0, 1.0f, 0.0f}, {0.8f, 50, 1.0f, 0.0f}, {1.0f, 1000, 0.9f, 0.0f}};
        int v_agree = 0, v_total = 0;
        for (int k = 0; k < 3; k++) {
            CHECK(gpu->ops->forward(gpu, &b, lg) == 0, "verify: logits: %s", nc_error());
            int32_t got[5] = {-7, -7, -7, -7, -7}, unused = -7;
            float lp[5];
            nc_device_sampling row = {settings[k].temperature, settings[k].top_k, settings[k].top_p,
                                      settings[k].min_p, {0, 0}, true, 0.0f, got, lp};
            nc_rng_seed(row.rng_state, 900 + (uint64_t)k);
            uint64_t g[2] = {row.rng_state[0], row.rng_state[1]};
            CHECK(gpu->ops->forward_sample(gpu, &b, &row, &unused) == 0, "verify: forward_sample: %s", nc_error());
            CHECK(row.rng_state[0] == g[0] && row.rng_state[1] == g[1], "verify: the generator moved");
            CHECK(unused == -7, "verify: tokens_out written for a chunk asking NC_LOGITS_ALL");
            for (int i = 0; i < 5; i++) {
                const float *r = lg + (size_t)i * V;
                uint64_t gi[2] = {g[0], g[1]};
                int32_t want = nc_sample(r, V, &settings[k], gi, &scr);
                if (settings[k].temperature > 0) nc_rng_next(g);
                CHECK(got[i] >= 0 && got[i] < V, "verify position %d: id %d out of range", i, got[i]);
                if (got[i] < 0 || got[i] >= V) continue;
                if (sampled_exactly(&settings[k], V)) {
                    v_total++;
                    v_agree += got[i] == want;
                } else {
                    CHECK(in_nucleus(r, V, got[i], &settings[k]), "verify position %d: token %d outside the top-p "
                          "nucleus", i, got[i]);
                }
                double lw = nc_sample_logprobs(r, V, got[i], 0, NULL, NULL);
                CHECK(fabs(lp[i] - lw) <= 1e-5 || fabs(lp[i] - lw) <= 1e-5 * fabs(lw),
                      "verify position %d: logprob %.9g, host %.9g", i, lp[i], lw);
            }
        }
        printf("  %s: verified chunk sampled on the device matched the host sampler on %d of %d positions "
               "(the others in the nucleus)\n", label, v_agree, v_total);
        CHECK(v_agree >= v_total - 1, "verify: device draws disagree with the host sampler (%d of %d)", v_agree,
              v_total);
    }
    nc_sampler_scratch_free(&scr);
    printf("  %s: %s\n", label, gpu->ops->describe(gpu));
    nc_backend_free(gpu);
    nc_backend_free(cpu);
    nc_model_free(m);
}

int main(void) {
    if (!nc_backend_cuda_available()) {
        printf("skipped: no usable CUDA device (or CUDA not compiled in)\n");
        return CHECK_SKIP;
    }
    const char *fp8_act = getenv("NC_CUDA_FP8_ACT");
    if (fp8_act && !strcmp(fp8_act, "1")) logit_tol = FP8_ACT_LOGIT_TOL;
    const char *names[] = {"v1_mha", "v1_gqa", "v6_gqa"};
    float *logits = nc_xmalloc(sizeof(float) * (size_t)MAX_TOKENS * 65536);
    float *logits2 = nc_xmalloc(sizeof(float) * (size_t)MAX_TOKENS * 65536);
    for (size_t f = 0; f < NC_ARRAY_LEN(names); f++) {
        fixture fx;
        if (!fixture_load(&fx, names[f])) {
            CHECK(0, "missing fixture %s (run from the repository root)", names[f]);
            continue;
        }
        nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS};
        nc_backend *be = nc_backend_create("cuda", fx.model, &p);
        CHECK(be != NULL, "cuda backend for %s: %s", names[f], nc_error());
        if (be) {
            worst = 0;
            for (int i = 0; i < fx.n_cases; i++) check_case(be, &fx, &fx.cases[i], logits);
            check_ragged(be, &fx, logits);
            printf("%s vs PyTorch: worst relative logit error %.3g\n", names[f], worst);
            nc_backend_free(be);
        }
        fixture_free(&fx);
    }
    /* NC_CUDA_TEST_QUICK=1 (used under compute-sanitizer, which slows
     * kernels ~50x): the fixtures (of the 8-bit ones the first case), and of
     * the random models only the small one with int8 weights and the fp8
     * cache (the 8-bit GEMMs' token tiles, several decode rows), which also
     * runs in full. */
    const char *quick = getenv("NC_CUDA_TEST_QUICK");
    bool full = !(quick && *quick == '1');
    check_quant_fixtures(logits, !full);
    /* The CPU reference's weight-only kernels: the same dequantised weights
     * (the VNNI ones round activations to int8) */
    if (nc_cpu_backend_force_isa("avx2")) nc_cpu_backend_force_isa("scalar");
    /* d34 widths; GQA with a 4000-token vocabulary (4032 rows: the lm_head's
     * last 128-row GEMM tile is half outside the matrix); each as stored,
     * then in 8-bit modes */
    const char *specs[] = {"2,2176,17", "2,1024,8,2,4000", "1,256,2,1,600"};
    int n_modes;
    const fixture_mode *modes = fixture_modes(&n_modes);
    for (size_t i = 0; i < NC_ARRAY_LEN(specs); i++)
        for (int k = 0; k < n_modes; k++) {
            bool small = i == 2, quick_case = modes[k].weights == NC_WEIGHTS_INT8 && modes[k].kv == NC_KV_CACHE_FP8;
            if (small ? !quick_case : !full) continue;
            worst = 0;
            check_random(specs[i], modes[k].weights, modes[k].kv, logits, logits2);
            printf("%s %s weights%s vs CPU backend: worst relative logit error %.3g\n", specs[i],
                   nc_weight_format_name(modes[k].weights), modes[k].kv == NC_KV_CACHE_FP8 ? ", fp8 KV" : "", worst);
        }
    nc_cpu_backend_force_isa("auto");
    free(logits);
    free(logits2);
    return check_summary("test_cuda_backend");
}
