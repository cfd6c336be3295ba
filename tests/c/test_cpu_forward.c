/*
 * test_cpu_forward.c: the CPU backend against PyTorch (fixtures made by
 * tools/make_forward_fixtures.py: transformers' NanoChatForCausalLM for V1,
 * the script's own reference for V6, written from docs/model.md, Later generations).
 *
 * For each fixture model (V1 MHA, V1 GQA, V6 GQA with sliding windows and a
 * 300-token prompt past both windows) and each kernel variant this CPU has
 * (cpu_kernel_variants[]; NC_CPU_KERNELS=name: that one only), it rebuilds
 * the weights from the manifest (a splitmix64 function of the tensor name,
 * identical to the script's) and checks:
 *   - logits of every stored position: max|ours - ref| / max|ref| <= 1e-4
 *     per row (the row's largest logit sets the scale; fp32 summation order
 *     differs from PyTorch's, which costs ~1e-6);
 *   - the greedy continuation equals PyTorch's, token for token;
 *   - prefill at once == token-by-token decode == chunked prefill (all
 *     against the reference), with scrambled block tables;
 *   - a ragged batch (two prompts prefilled together, then decoded together
 *     at different positions) equals the reference for each;
 *   - copy_kv_block forks a prefilled sequence correctly;
 *   - a position's logits do not depend on what else is in the forward:
 *     token-by-token decode, one prefill, chunks of 7 and two sequences
 *     in one batch give bit-identical rows (speculative decoding's
 *     verification of several positions must reproduce what decoding one
 *     at a time computes, docs/speculative.md).
 * Impossible batches (refused with a message) are backend.h's contract,
 * checked for every backend by test_backend_contract.c.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "cpu_variant.h"
#include "forward_fixture.h"
#include "model/model.h"
#include "util/common.h"
#include "util/numeric.h"

#define REL_TOL 1e-4

/* ==== fixture loading (forward_fixture.h) ==== */

static void load_fixture(fixture *fx, const char *name) {
    if (!fixture_load(fx, name)) {
        fprintf(stderr, "cannot read " FIXTURE_DIR "/%s/model.json (run from the repository root)\n", name);
        exit(1);
    }
}

/* ==== comparisons ==== */

static int argmax(const float *x, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Compares logits rows for positions [pos0, pos0 + n) with the reference
 * rows stored for those positions (others are skipped). */
static double worst_error;

static void compare_rows(const fixture *fx, const fx_case *tc, const float *logits, int pos0, int n,
                         const char *what) {
    for (int r = 0; r < n; r++) {
        for (int k = 0; k < tc->n_positions; k++) {
            if (tc->positions[k] != pos0 + r) continue;
            double err = fixture_row_error(logits + (size_t)r * fx->V, tc->ref + (size_t)k * fx->V, fx->V);
            worst_error = fmax(worst_error, err);
            CHECK(err <= REL_TOL, "%s %s: position %d relative error %.3g", fx->name, what, pos0 + r, err);
        }
    }
}

/* A block table whose entries are scrambled (so paging bugs show). */
static void make_table(int32_t *table, int n_blocks, int first, int stride, int pool) {
    for (int b = 0; b < n_blocks; b++) table[b] = (first + b * stride) % pool;
}

/* ==== the checks ==== */

enum { POOL = 64, MAX_TOKENS = 320 };

static void check_prefill_and_greedy(nc_backend *be, const fixture *fx, const fx_case *tc, float *logits) {
    int32_t table[16];
    make_table(table, 16, 7, 5, POOL);
    nc_seq_chunk c = {tc->prompt, tc->n_prompt, 0, -1, table, NC_LOGITS_ALL};
    nc_batch b = {&c, 1};
    CHECK(be->ops->forward(be, &b, logits) == 0, "prefill: %s", nc_error());
    compare_rows(fx, tc, logits, 0, tc->n_prompt, "prefill");

    int32_t tok = argmax(logits + (size_t)(tc->n_prompt - 1) * fx->V, fx->V), prev = tc->prompt[tc->n_prompt - 1];
    for (int g = 0; g < tc->n_greedy; g++) {
        CHECK(tok == tc->greedy[g], "%s greedy token %d: %d, PyTorch %d", fx->name, g, tok, tc->greedy[g]);
        nc_seq_chunk d = {&tok, 1, tc->n_prompt + g, prev, table, NC_LOGITS_LAST};
        nc_batch db = {&d, 1};
        CHECK(be->ops->forward(be, &db, logits) == 0, "decode: %s", nc_error());
        prev = tok;
        tok = argmax(logits, fx->V);
    }
}

static void check_decode_and_chunks(nc_backend *be, const fixture *fx, const fx_case *tc, float *logits) {
    int32_t table[16];
    make_table(table, 16, 40, 3, POOL);
    for (int t = 0; t < tc->n_prompt; t++) { /* token by token */
        nc_seq_chunk d = {tc->prompt + t, 1, t, t ? tc->prompt[t - 1] : -1, table, NC_LOGITS_LAST};
        nc_batch b = {&d, 1};
        CHECK(be->ops->forward(be, &b, logits) == 0, "decode: %s", nc_error());
        compare_rows(fx, tc, logits, t, 1, "token-by-token");
    }
    make_table(table, 16, 63, 61, POOL);
    for (int t = 0; t < tc->n_prompt; t += 7) { /* chunks of 7 crossing block boundaries */
        int n = NC_MIN(7, tc->n_prompt - t);
        nc_seq_chunk d = {tc->prompt + t, n, t, t ? tc->prompt[t - 1] : -1, table, NC_LOGITS_ALL};
        nc_batch b = {&d, 1};
        CHECK(be->ops->forward(be, &b, logits) == 0, "chunk: %s", nc_error());
        compare_rows(fx, tc, logits, t, n, "chunked");
    }
}

/* Both prompts in one batch (the first as LAST, the second as ALL), then
 * joint decode steps of the first's greedy tokens while the second sits at
 * another position. */
static void check_ragged_batch(nc_backend *be, const fixture *fx, float *logits) {
    const fx_case *a = &fx->cases[0], *b = &fx->cases[1];
    int32_t ta[16], tb[16];
    make_table(ta, 16, 1, 2, POOL);
    make_table(tb, 16, 2, 2, POOL);
    nc_seq_chunk c[2] = {{a->prompt, a->n_prompt, 0, -1, ta, NC_LOGITS_LAST},
                         {b->prompt, b->n_prompt, 0, -1, tb, NC_LOGITS_ALL}};
    nc_batch batch = {c, 2};
    CHECK(be->ops->forward(be, &batch, logits) == 0, "ragged prefill: %s", nc_error());
    compare_rows(fx, a, logits, a->n_prompt - 1, 1, "batch[0]");
    compare_rows(fx, b, logits + fx->V, 0, b->n_prompt, "batch[1]");
    /* decode both: a continues with its greedy tokens; b with its own */
    for (int g = 0; g + 1 < a->n_greedy && g + 1 < b->n_greedy; g++) {
        int32_t tok[2] = {a->greedy[g], b->greedy[g]};
        int32_t prev[2] = {g ? a->greedy[g - 1] : a->prompt[a->n_prompt - 1],
                           g ? b->greedy[g - 1] : b->prompt[b->n_prompt - 1]};
        nc_seq_chunk d[2] = {{&tok[1], 1, b->n_prompt + g, prev[1], tb, NC_LOGITS_LAST},
                             {&tok[0], 1, a->n_prompt + g, prev[0], ta, NC_LOGITS_LAST}};
        nc_batch db = {d, 2};
        CHECK(be->ops->forward(be, &db, logits) == 0, "ragged decode: %s", nc_error());
        CHECK(argmax(logits, fx->V) == b->greedy[g + 1], "%s batched decode row 0 step %d", fx->name, g);
        CHECK(argmax(logits + fx->V, fx->V) == a->greedy[g + 1], "%s batched decode row 1 step %d", fx->name, g);
    }
}

/* Prefill into table A, fork into table B with copy_kv_block (full blocks
 * and the partial last one), then decode greedily from B. */
static void check_fork(nc_backend *be, const fixture *fx, const fx_case *tc, float *logits) {
    int32_t ta[16], tb[16];
    make_table(ta, 16, 0, 1, POOL);
    make_table(tb, 16, 32, 1, POOL);
    nc_seq_chunk c = {tc->prompt, tc->n_prompt, 0, -1, ta, NC_LOGITS_LAST};
    nc_batch b = {&c, 1};
    CHECK(be->ops->forward(be, &b, logits) == 0, "fork prefill: %s", nc_error());
    int n_blocks = (tc->n_prompt + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    for (int blk = 0; blk < n_blocks; blk++) {
        int n = NC_MIN(NC_KV_BLOCK_TOKENS, tc->n_prompt - blk * NC_KV_BLOCK_TOKENS);
        CHECK(be->ops->copy_kv_block(be, ta[blk], tb[blk], n) == 0, "copy_kv_block: %s", nc_error());
    }
    memset(logits, 0, sizeof(float) * (size_t)fx->V);
    int32_t tok = tc->greedy[0], prev = tc->prompt[tc->n_prompt - 1];
    for (int g = 1; g < tc->n_greedy; g++) {
        nc_seq_chunk d = {&tok, 1, tc->n_prompt + g - 1, prev, tb, NC_LOGITS_LAST};
        nc_batch db = {&d, 1};
        CHECK(be->ops->forward(be, &db, logits) == 0, "fork decode: %s", nc_error());
        CHECK(argmax(logits, fx->V) == tc->greedy[g], "%s forked decode step %d", fx->name, g);
        prev = tok;
        tok = tc->greedy[g];
    }
}

/* Rows of `a` and `b` ([n, V] each) are bit-identical. */
static void check_same_bits(const fixture *fx, const float *a, const float *b, int n, int pos0, const char *what) {
    for (int r = 0; r < n; r++)
        if (memcmp(a + (size_t)r * fx->V, b + (size_t)r * fx->V, sizeof(float) * (size_t)fx->V)) {
            CHECK(false, "%s %s: position %d differs from token-by-token decode", fx->name, what, pos0 + r);
            return;
        }
}

static void check_batch_invariance(nc_backend *be, const fixture *fx, const fx_case *tc, float *logits,
                                   float *single) {
    int32_t table[16], other[16];
    make_table(table, 16, 9, 7, POOL);
    make_table(other, 16, 3, 11, POOL);
    size_t V = (size_t)fx->V;
    for (int t = 0; t < tc->n_prompt; t++) {
        nc_seq_chunk d = {tc->prompt + t, 1, t, t ? tc->prompt[t - 1] : -1, table, NC_LOGITS_LAST};
        nc_batch b = {&d, 1};
        CHECK(be->ops->forward(be, &b, single + (size_t)t * V) == 0, "decode: %s", nc_error());
    }
    nc_seq_chunk c = {tc->prompt, tc->n_prompt, 0, -1, table, NC_LOGITS_ALL};
    nc_batch b = {&c, 1};
    CHECK(be->ops->forward(be, &b, logits) == 0, "prefill: %s", nc_error());
    check_same_bits(fx, logits, single, tc->n_prompt, 0, "prefill");
    for (int t = 0; t < tc->n_prompt; t += 7) {
        int n = NC_MIN(7, tc->n_prompt - t);
        nc_seq_chunk d = {tc->prompt + t, n, t, t ? tc->prompt[t - 1] : -1, table, NC_LOGITS_ALL};
        nc_batch db = {&d, 1};
        CHECK(be->ops->forward(be, &db, logits) == 0, "chunk: %s", nc_error());
        check_same_bits(fx, logits, single + (size_t)t * V, n, t, "chunk of 7");
    }
    /* the prompt's head again in another table beside its tail: one batch of two */
    int head = tc->n_prompt / 2;
    nc_seq_chunk two[2] = {{tc->prompt, head, 0, -1, other, NC_LOGITS_ALL},
                           {tc->prompt + head, tc->n_prompt - head, head, tc->prompt[head - 1], table,
                            NC_LOGITS_ALL}};
    nc_batch tb = {two, 2};
    CHECK(be->ops->forward(be, &tb, logits) == 0, "batch of two: %s", nc_error());
    check_same_bits(fx, logits, single, tc->n_prompt, 0, "batch of two");
}

int main(void) {
    const char *names[] = {"v1_mha", "v1_gqa", "v6_gqa"};
    for (size_t f = 0; f < NC_ARRAY_LEN(names); f++) {
        fixture fx;
        load_fixture(&fx, names[f]);
        float *logits = malloc(sizeof(float) * (size_t)MAX_TOKENS * (size_t)fx.V);
        float *single = malloc(sizeof(float) * (size_t)MAX_TOKENS * (size_t)fx.V);
        for (int k = 0; cpu_kernel_variants[k]; k++) {
            const char *isa = cpu_kernel_variants[k]->name;
            if (!cpu_variant_wanted(cpu_kernel_variants[k])) continue;
            CHECK(nc_cpu_backend_force_isa(isa) == 0, "%s: %s", isa, nc_error());
            nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = 2,
                                   .n_threads = 1 + k % 2};
            nc_backend *be = nc_backend_create("cpu", fx.model, &p);
            CHECK(be != NULL, "backend: %s", nc_error());
            if (!be) continue;
            worst_error = 0;
            for (int i = 0; i < fx.n_cases; i++) {
                check_prefill_and_greedy(be, &fx, &fx.cases[i], logits);
                check_decode_and_chunks(be, &fx, &fx.cases[i], logits);
                check_fork(be, &fx, &fx.cases[i], logits);
                check_batch_invariance(be, &fx, &fx.cases[i], logits, single);
            }
            check_ragged_batch(be, &fx, logits);
            printf("%s (%s): worst relative logit error %.3g\n", names[f], be->ops->describe(be), worst_error);
            nc_backend_free(be);
        }
        free(logits);
        free(single);
        fixture_free(&fx);
    }
    nc_cpu_backend_force_isa("auto");
    return check_summary("test_cpu_forward");
}
