/*
 * test_cuda_tp.c: tensor parallel ("cuda:0+1", src/backend/cuda/cuda_tp.cu)
 * against the single-GPU backend on the same random models: logits of a
 * prefill, of token-by-token decode (CUDA graphs with the all-reduces
 * captured, from the second step), of several decode rows at once and of a
 * forked sequence (copy_kv_block on every rank), and greedy device
 * sampling on rank 0. Models: d34's width with 2 layers (17 heads: the
 * uneven 9 + 8 split) and 4,512,4; with 3 or more GPUs also over 3 (17
 * heads as 6 + 6 + 5); and the d34-width model again with int8 weights,
 * and with fp8 weights plus the fp8 KV cache (on both sides: the shares
 * carry the rows' scales; the fp8 modes need compute capability 8.9 and
 * are skipped below it). Also: a GPU that does not exist is refused with a
 * message naming it. Skips (77) with fewer than two GPUs, or in a build
 * without tensor parallelism.
 *
 * Tolerance: both sides are the same kernels on the same bf16 weights; a
 * rank adds its share of each row-parallel product in fp32 and the
 * all-reduce sums the shares, so only the order of fp32 additions differs,
 * which can flip a bf16 rounding of an activation now and then. A row
 * passes when max|tp - single| <= TP_TOL * max|single| (TP_TOL = 1e-2, a
 * tenth of what one bf16 rounding per layer could do), and the top-1 token
 * must agree unless the single GPU's best two logits are closer than twice
 * the row's difference. With the fp8 KV cache such a difference can also
 * move a cached value across an e4m3 rounding step (12.5% of it), so those
 * rows get TP_TOL_FP8_KV = 3e-2, the tolerance of the single-GPU backend's
 * own 8-bit tests.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "logit_rows.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/quantize.h"
#include "util/common.h"

#define TP_TOL 1e-2
#define TP_TOL_FP8_KV 3e-2
#define POOL 64
#define MAX_TOKENS 320
#define MAX_SEQS 8

static double worst;
static double tol = TP_TOL; /* of the model being compared */

/* Runs chunks c[0..n) on both backends and compares every logits row. */
static void compare(nc_backend *tp, nc_backend *one, nc_seq_chunk *c, int n, int V, float *lt, float *lo,
                    const char *what) {
    int rows = 0;
    for (int i = 0; i < n; i++)
        rows += c[i].logits == NC_LOGITS_ALL ? c[i].n_tokens : c[i].logits == NC_LOGITS_LAST ? 1 : 0;
    nc_batch b = {c, n};
    int rt = tp->ops->forward(tp, &b, lt);
    CHECK(rt == 0, "%s (tensor parallel): %s", what, nc_error());
    int ro = one->ops->forward(one, &b, lo);
    CHECK(ro == 0, "%s (one GPU): %s", what, nc_error());
    if (rt || ro) return;
    for (int r = 0; r < rows; r++)
        worst = fmax(worst, check_logit_row(lt + (size_t)r * V, lo + (size_t)r * V, V, tol, what, r));
}

static void table(int32_t *t, int n, int first) {
    for (int b = 0; b < n; b++) t[b] = (first + 3 * b) % POOL;
}

static void check_model(const char *spec, const char *device, nc_weight_format weights, nc_kv_cache_format kv,
                        float *lt, float *lo) {
    nc_model *m = nc_model_random(spec, 11);
    NC_ASSERT(m);
    if (weights != NC_WEIGHTS_FLOAT) NC_ASSERT(nc_model_quantize(m, weights, true, 0) == 0);
    int V = m->cfg.vocab_size;
    nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS, .kv_cache = kv};
    char name[96];
    snprintf(name, sizeof name, "%s (%s weights, %s KV)", spec, nc_weight_format_name(weights),
             kv == NC_KV_CACHE_FP8 ? "fp8" : "bf16");
    spec = name;
    tol = kv == NC_KV_CACHE_FP8 ? TP_TOL_FP8_KV : TP_TOL;
    nc_backend *one = nc_backend_create("cuda:0", m, &p);
    if (!one && strstr(nc_error(), "compute capability")) {
        printf("  %s: skipped (%s)\n", spec, nc_error());
        nc_model_free(m);
        return;
    }
    nc_backend *tp = nc_backend_create(device, m, &p);
    CHECK(tp && one, "%s on %s: %s", spec, device, nc_error());
    if (!tp || !one) {
        nc_backend_free(tp);
        nc_backend_free(one);
        nc_model_free(m);
        return;
    }
    CHECK(tp->n_kv_blocks == POOL && tp->max_seqs == MAX_SEQS && tp->max_batch_tokens == MAX_TOKENS,
          "%s: sizes %d %d %d", device, tp->n_kv_blocks, tp->max_seqs, tp->max_batch_tokens);
    /* Every decode batch size's graph, all-reduces inside, before any sequence exists. */
    CHECK(tp->ops->prepare_decode(tp, MAX_SEQS) == 0, "%s prepare_decode: %s", device, nc_error());
    CHECK(one->ops->prepare_decode(one, MAX_SEQS) == 0, "one GPU prepare_decode: %s", nc_error());
    char what[128];
    int32_t prompt[256], t[MAX_SEQS][8];
    for (int i = 0; i < 256; i++) prompt[i] = (i * 7919 + 17) % V;
    for (int s = 0; s < MAX_SEQS; s++) table(t[s], 8, 8 * s);

    /* prefill of 150 (GEMMs, flash attention over 3 blocks), then 6 decode steps (GEMV, graphs) */
    nc_seq_chunk c = {prompt, 150, 0, -1, t[0], NC_LOGITS_ALL};
    snprintf(what, sizeof what, "%s on %s: prefill", spec, device);
    compare(tp, one, &c, 1, V, lt, lo, what);
    snprintf(what, sizeof what, "%s on %s: decode", spec, device);
    for (int k = 0; k < 6; k++) {
        nc_seq_chunk d = {prompt + 150 + k, 1, 150 + k, prompt[149 + k], t[0], NC_LOGITS_LAST};
        compare(tp, one, &d, 1, V, lt, lo, what);
    }
    /* 4 more sequences prefilled together, then 5 rows decoding 3 steps */
    nc_seq_chunk rows[5];
    for (int s = 1; s < 5; s++) rows[s - 1] = (nc_seq_chunk){prompt + 10 * s, 30 + 9 * s, 0, -1, t[s], NC_LOGITS_NONE};
    nc_batch pre = {rows, 4};
    CHECK(tp->ops->forward(tp, &pre, NULL) == 0 && one->ops->forward(one, &pre, NULL) == 0, "prefills: %s",
          nc_error());
    rows[0] = (nc_seq_chunk){prompt + 156, 1, 156, prompt[155], t[0], NC_LOGITS_LAST};
    for (int s = 1; s < 5; s++) {
        const int32_t *src = prompt + 10 * s;
        int pos = 30 + 9 * s;
        rows[s] = (nc_seq_chunk){src + pos, 1, pos, src[pos - 1], t[s], NC_LOGITS_LAST};
    }
    snprintf(what, sizeof what, "%s on %s: 5 decode rows", spec, device);
    for (int k = 0; k < 3; k++) {
        compare(tp, one, rows, 5, V, lt, lo, what);
        for (int s = 0; s < 5; s++) rows[s].prev_token = rows[s].tokens[0], rows[s].tokens++, rows[s].pos++;
    }
    /* greedy on the device: rank 0 samples what the single GPU's logits say */
    nc_device_sampling greedy[5];
    memset(greedy, 0, sizeof greedy);
    for (int s = 0; s < 5; s++) greedy[s].top_p = 1.0f;
    nc_batch b = {rows, 5};
    CHECK(one->ops->forward(one, &b, lo) == 0, "logits before sampling: %s", nc_error());
    int32_t got[5] = {-1, -1, -1, -1, -1};
    CHECK(tp->ops->forward_sample(tp, &b, greedy, got) == 0, "%s forward_sample: %s", device, nc_error());
    for (int s = 0; s < 5; s++) {
        const float *row = lo + (size_t)s * V;
        int best = logits_argmax(row, V);
        CHECK(got[s] >= 0 && got[s] < V && row[got[s]] >= row[best] - 0.05f, "sampled row %d: %d, best %d", s,
              got[s], best);
    }
    /* fork sequence 0 (157 positions: 2 full blocks shared, the third copied) and go on with the copy */
    int32_t fork[8] = {t[0][0], t[0][1], t[7][0]};
    CHECK(tp->ops->copy_kv_block(tp, t[0][2], t[7][0], 157 - 128) == 0 &&
              one->ops->copy_kv_block(one, t[0][2], t[7][0], 157 - 128) == 0,
          "copy_kv_block: %s", nc_error());
    nc_seq_chunk f = {prompt + 200, 1, 157, prompt[156], fork, NC_LOGITS_LAST};
    snprintf(what, sizeof what, "%s on %s: forked sequence", spec, device);
    compare(tp, one, &f, 1, V, lt, lo, what);
    printf("  %s on %s: %s\n", spec, device, nc_backend_describe(tp));
    nc_backend_free(tp);
    nc_backend_free(one);
    nc_model_free(m);
}

static void check_missing_gpu(void) {
    nc_model *m = nc_model_random("2,512,4", 3);
    NC_ASSERT(m);
    nc_backend_params p = {.n_kv_blocks = 8, .max_batch_tokens = 64, .max_seqs = 2};
    nc_backend *b = nc_backend_create("cuda:0+63", m, &p);
    CHECK(!b && strstr(nc_error(), "cuda:0+63") && strstr(nc_error(), "63"), "a GPU that is not there: %s",
          nc_error());
    nc_backend_free(b);
    nc_model_free(m);
}

int main(void) {
    if (nc_backend_cuda_count() < 2) {
        printf("test_cuda_tp: skipped (needs 2 GPUs; this machine has %d)\n", nc_backend_cuda_count());
        return CHECK_SKIP;
    }
    nc_model *probe = nc_model_random("1,256,2", 1);
    nc_backend_params pp = {.n_kv_blocks = 4, .max_batch_tokens = 16, .max_seqs = 1};
    nc_backend *b = nc_backend_create("cuda:0+1", probe, &pp);
    if (!b && strstr(nc_error(), "not compiled")) {
        printf("test_cuda_tp: skipped (%s)\n", nc_error());
        nc_model_free(probe);
        return CHECK_SKIP;
    }
    CHECK(b != NULL, "a two-GPU engine: %s", nc_error());
    nc_backend_free(b);
    nc_model_free(probe);
    float *lt = malloc(sizeof(float) * 150 * 65536), *lo = malloc(sizeof(float) * 150 * 65536);
    check_model("2,2176,17", "cuda:0+1", NC_WEIGHTS_FLOAT, NC_KV_CACHE_BF16, lt, lo);
    check_model("4,512,4", "cuda:1+0", NC_WEIGHTS_FLOAT, NC_KV_CACHE_BF16, lt, lo);
    if (nc_backend_cuda_count() >= 3)
        check_model("2,2176,17", "cuda:0+1+2", NC_WEIGHTS_FLOAT, NC_KV_CACHE_BF16, lt, lo);
    check_model("2,2176,17", "cuda:0+1", NC_WEIGHTS_INT8, NC_KV_CACHE_BF16, lt, lo);
    check_model("2,2176,17", "cuda:0+1", NC_WEIGHTS_FP8, NC_KV_CACHE_FP8, lt, lo);
    check_missing_gpu();
    free(lt);
    free(lo);
    printf("  worst relative logit difference: %.3g (tolerance %.0e, %.0e with the fp8 KV cache)\n", worst, TP_TOL,
           TP_TOL_FP8_KV);
    return check_summary("test_cuda_tp");
}
