/*
 * test_backend_contract.c: backend.h's contract, one list of cases run the
 * same way against every backend this build has (in the spirit of ggml's
 * test-backend-ops): cpu always, cuda when a usable GPU is present (else
 * reported as skipped; the test still passes on the cpu).
 *
 * For each backend and fixture model (V1 MHA; V6 GQA, whose vocabulary of
 * 500 is padded to 512 rows and whose smear needs the previous token):
 *   - creation refuses negative sizes and reports the sizes it was asked
 *     for (pool, batch tokens, sequences);
 *   - forward refuses, with a message: no batch, an empty batch, chunks
 *     without tokens, negative positions and positions past the rotary
 *     table, token ids outside [0, vocab_size) (the padding rows included),
 *     missing block tables and block ids outside the pool, unknown logits
 *     modes, logits wanted without a buffer, more sequences or tokens than
 *     the backend was sized for, a V6 continuation without a valid previous
 *     token;
 *   - copy_kv_block refuses blocks outside the pool and token counts
 *     outside 0..64; forward_sample, where a backend has it, refuses
 *     NC_LOGITS_ALL;
 *   - what is allowed works: a chunk asking for no logits with no buffer,
 *     block-table entries past the positions a chunk covers left invalid,
 *     empty and self copies;
 *   - after all the refusals the backend still computes: a prompt's logits
 *     match PyTorch's (the fixtures of tools/make_forward_fixtures.py)
 *     within the backend's tolerance (cpu 1e-4: exact fp32; cuda 3e-2:
 *     bf16 weights and activations, see test_cuda_backend.c).
 * And the environment switches (backend.h, nc_backend_env): the documented
 * defaults, values read as written, a bad value refused naming the
 * variable, and a switch reaching the backend (its description).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "forward_fixture.h"
#include "util/common.h"

#define POOL 64
#define MAX_TOKENS 320
#define MAX_SEQS 2

/* Empties the error message, so that a refusal must write its own. */
static void forget_error(void) { nc_fail("%s", ""); }

#define CHECK_FAILS(call, what)                                                             \
    do {                                                                                    \
        forget_error();                                                                   \
        int rc_ = (call);                                                                   \
        CHECK(rc_ == -1 && nc_error()[0], "%s: %s should fail with a message", dev, what);  \
        if (rc_ == -1) printf("  %s: expected error (%s): %s\n", dev, what, nc_error());    \
    } while (0)

/* Largest relative error, max|ours - ref| / max|ref| per row, of the
 * prompt's logits rows (one per position) that the fixture case stores. */
static double fixture_error(const fixture *fx, const fx_case *tc, const float *logits) {
    double worst = 0;
    for (int k = 0; k < tc->n_positions; k++) {
        if (tc->positions[k] >= tc->n_prompt) continue;
        const float *ours = logits + (size_t)tc->positions[k] * fx->V, *ref = tc->ref + (size_t)k * fx->V;
        double md = 0, mr = 0;
        for (int i = 0; i < fx->V; i++) {
            md = fmax(md, ours[i] == ours[i] ? fabs((double)ours[i] - ref[i]) : INFINITY);
            mr = fmax(mr, fabs((double)ref[i]));
        }
        worst = fmax(worst, md / mr);
    }
    return worst;
}

static int forward(nc_backend *be, nc_seq_chunk *c, int n, float *logits) {
    nc_batch b = {c, n};
    return be->ops->forward(be, &b, logits);
}

static void check_creation(const char *dev, const fixture *fx) {
    nc_backend_params neg[3] = {{.max_seqs = -1}, {.max_batch_tokens = -2}, {.n_kv_blocks = -3}};
    for (int i = 0; i < 3; i++) {
        forget_error();
        nc_backend *be = nc_backend_create(dev, fx->model, &neg[i]);
        CHECK(!be && nc_error()[0], "%s: negative size %d accepted", dev, i);
        nc_backend_free(be);
    }
}

static void check_refusals(const char *dev, nc_backend *be, const fixture *fx, float *logits) {
    const nc_model_config *cfg = &fx->model->cfg;
    const fx_case *tc = &fx->cases[0];
    int32_t table[16], bad[16];
    for (int i = 0; i < 16; i++) table[i] = (5 + 3 * i) % POOL;
    nc_seq_chunk c = {tc->prompt, tc->n_prompt, 0, -1, table, NC_LOGITS_ALL};
    nc_batch one = {&c, 1}, none = {&c, 0}, no_seqs = {NULL, 1};
    CHECK_FAILS(be->ops->forward(be, NULL, logits), "no batch");
    CHECK_FAILS(be->ops->forward(be, &none, logits), "empty batch");
    CHECK_FAILS(be->ops->forward(be, &no_seqs, logits), "batch without its chunks");

    c.n_tokens = 0;
    CHECK_FAILS(forward(be, &c, 1, logits), "chunk of 0 tokens");
    c.n_tokens = tc->n_prompt, c.tokens = NULL;
    CHECK_FAILS(forward(be, &c, 1, logits), "chunk without its tokens");
    c.tokens = tc->prompt;

    c.pos = -1;
    CHECK_FAILS(forward(be, &c, 1, logits), "negative position");
    c.pos = cfg->sequence_len * 10;
    CHECK_FAILS(forward(be, &c, 1, logits), "position beyond the rotary table");
    c.pos = 0;

    int32_t tok[2] = {cfg->vocab_size, -1};
    for (int i = 0; i < 2; i++) {
        nc_seq_chunk t1 = {&tok[i], 1, 0, -1, table, NC_LOGITS_LAST};
        CHECK_FAILS(forward(be, &t1, 1, logits), i ? "negative token id" : "token id = vocab_size");
    }

    c.block_table = NULL;
    CHECK_FAILS(forward(be, &c, 1, logits), "no block table");
    memcpy(bad, table, sizeof bad);
    c.block_table = bad;
    int last = (tc->n_prompt - 1) / NC_KV_BLOCK_TOKENS; /* the last block the prompt needs */
    bad[last] = POOL;
    CHECK_FAILS(forward(be, &c, 1, logits), "block id beyond the pool");
    bad[last] = -3;
    CHECK_FAILS(forward(be, &c, 1, logits), "negative block id");
    c.block_table = table;

    c.logits = (nc_logits_mode)7;
    CHECK_FAILS(forward(be, &c, 1, logits), "unknown logits mode");
    c.logits = NC_LOGITS_ALL;
    CHECK_FAILS(forward(be, &c, 1, NULL), "logits wanted, no buffer");

    nc_seq_chunk many[MAX_SEQS + 1];
    for (int i = 0; i <= MAX_SEQS; i++) many[i] = c;
    CHECK_FAILS(forward(be, many, MAX_SEQS + 1, logits), "more sequences than max_seqs");
    static int32_t long_prompt[MAX_TOKENS + 1];
    nc_seq_chunk lc = {long_prompt, MAX_TOKENS + 1, 0, -1, table, NC_LOGITS_NONE};
    CHECK_FAILS(forward(be, &lc, 1, logits), "more tokens than max_batch_tokens");

    if (cfg->has_smear) {
        int32_t prev[2] = {-1, cfg->vocab_size};
        for (int i = 0; i < 2; i++) {
            nc_seq_chunk d = {tc->prompt, 1, 5, prev[i], table, NC_LOGITS_LAST};
            CHECK_FAILS(forward(be, &d, 1, logits), i ? "V6 continuation, prev_token out of the vocabulary"
                                                      : "V6 continuation without prev_token");
        }
    }

    CHECK_FAILS(be->ops->copy_kv_block(be, 0, POOL, 4), "copy to a block beyond the pool");
    CHECK_FAILS(be->ops->copy_kv_block(be, -1, 1, 4), "copy from a negative block");
    CHECK_FAILS(be->ops->copy_kv_block(be, 0, 1, NC_KV_BLOCK_TOKENS + 1), "copy of more than a block");
    CHECK_FAILS(be->ops->copy_kv_block(be, 0, 1, -1), "copy of a negative token count");

    if (be->ops->forward_sample) {
        nc_device_sampling rows[1] = {{.top_p = 1.0f}};
        int32_t out[1];
        CHECK_FAILS(be->ops->forward_sample(be, &one, rows, out), "forward_sample with NC_LOGITS_ALL");
    }
}

/* What the contract allows, then the prompt against PyTorch. */
static void check_still_works(const char *dev, nc_backend *be, const fixture *fx, double tol, float *logits) {
    const fx_case *tc = &fx->cases[0];
    int32_t table[16];
    int needed = (tc->n_prompt + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    for (int i = 0; i < 16; i++) table[i] = i < needed ? (7 + 5 * i) % POOL : -1; /* past the chunk: unused */
    nc_seq_chunk c = {tc->prompt, tc->n_prompt, 0, -1, table, NC_LOGITS_NONE};
    CHECK(forward(be, &c, 1, NULL) == 0, "%s: a chunk asking for no logits, no buffer: %s", dev, nc_error());
    CHECK(be->ops->copy_kv_block(be, 3, 4, 0) == 0, "%s: copy of 0 tokens: %s", dev, nc_error());
    CHECK(be->ops->copy_kv_block(be, 3, 3, 64) == 0, "%s: copy of a block onto itself: %s", dev, nc_error());
    c.logits = NC_LOGITS_ALL;
    memset(logits, 0, sizeof(float) * (size_t)tc->n_prompt * fx->V);
    CHECK(forward(be, &c, 1, logits) == 0, "%s: forward after the refusals: %s", dev, nc_error());
    double err = fixture_error(fx, tc, logits);
    printf("  %s %s: after the refusals, relative logit error %.3g vs PyTorch (tolerance %g)\n", dev, fx->name, err,
           tol);
    CHECK(err <= tol, "%s %s: logits after the refusals off by %.3g", dev, fx->name, err);
}

static void check_backend(const char *dev, double tol, const fixture *fx, float *logits) {
    check_creation(dev, fx);
    nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS};
    nc_backend *be = nc_backend_create(dev, fx->model, &p);
    CHECK(be != NULL, "%s backend for %s: %s", dev, fx->name, nc_error());
    if (!be) return;
    CHECK(be->n_kv_blocks == POOL && be->max_batch_tokens == MAX_TOKENS && be->max_seqs == MAX_SEQS,
          "%s: sizes reported %d blocks, %d tokens, %d sequences", dev, be->n_kv_blocks, be->max_batch_tokens,
          be->max_seqs);
    CHECK(be->ops->describe && be->ops->describe(be)[0], "%s: no description", dev);
    check_refusals(dev, be, fx, logits);
    check_still_works(dev, be, fx, tol, logits);
    nc_backend_free(be);
}

/* ==== environment switches ==== */

static const char *const switches[] = {"NC_CUDA_GRAPHS",       "NC_CUDA_PDL",          "NC_CUDA_PROFILE",
                                       "NC_CUDA_SKINNY",       "NC_CUDA_FA",           "NC_CUDA_GEMV_Q8",
                                       "NC_CUDA_PERSIST",      "NC_CUDA_PERSIST_BUFS", "NC_CPU_WEIGHTS",
                                       "NC_CPU_KERNELS",
                                       "NC_CUDA_GEMV_Q8_ROWS", "NC_CUDA_VERIFY_ROWS",
                                       "NC_CUDA_ATTN_PREFETCH", "NC_CUDA_FP8_ACT",     "NC_CUDA_VERIFY_PAIRS",
                                       "NC_CUDA_QKV_ROPE",     "NC_CUDA_GEMV_ROWS"};

static void clear_switches(void) {
    for (size_t i = 0; i < NC_ARRAY_LEN(switches); i++) unsetenv(switches[i]);
}

/* The switches this test was started with (the backend checks run under
 * them, so a device script can run the contract with, say, NC_CUDA_SKINNY=0). */
static char *saved[NC_ARRAY_LEN(switches)];

static void save_switches(void) {
    for (size_t i = 0; i < NC_ARRAY_LEN(switches); i++) {
        const char *v = getenv(switches[i]);
        saved[i] = v ? strdup(v) : NULL;
    }
}

static void restore_switches(void) {
    clear_switches();
    for (size_t i = 0; i < NC_ARRAY_LEN(switches); i++) {
        if (saved[i]) setenv(switches[i], saved[i], 1);
        free(saved[i]);
    }
}

static void check_env(const fixture *fx) {
    nc_backend_env e;
    clear_switches();
    CHECK(nc_backend_env_read(&e) == 0, "defaults: %s", nc_error());
    CHECK(e.cuda_graphs && e.cuda_pdl && !e.cuda_profile && e.cuda_skinny && e.cuda_fa == 0 && !strcmp(e.cuda_gemv_q8, "old") && e.cuda_gemv_rows == 0 &&
              e.cuda_gemv_q8_rows == 0 && e.cuda_verify_rows && !e.cuda_attn_prefetch && !e.cuda_fp8_act && !e.cuda_persist && e.cuda_persist_bufs == 0 &&
              !strcmp(e.cuda_verify_pairs, "auto") && e.cuda_qkv_rope &&
              !strcmp(e.cpu_weights, "auto") && !strcmp(e.cpu_kernels, "auto"),
          "the defaults are not the fast paths");
    setenv("NC_CUDA_GRAPHS", "0", 1), setenv("NC_CUDA_PROFILE", "1", 1), setenv("NC_CUDA_FA", "1", 1);
    setenv("NC_CUDA_PDL", "", 1); /* empty: the default */
    setenv("NC_CUDA_GEMV_Q8", "tc", 1), setenv("NC_CUDA_GEMV_Q8_ROWS", "4", 1);
    setenv("NC_CUDA_GEMV_ROWS", "1", 1);
    setenv("NC_CUDA_VERIFY_ROWS", "0", 1), setenv("NC_CUDA_ATTN_PREFETCH", "1", 1);
    setenv("NC_CUDA_FP8_ACT", "1", 1), setenv("NC_CUDA_VERIFY_PAIRS", "on", 1);
    setenv("NC_CUDA_QKV_ROPE", "0", 1);
    setenv("NC_CPU_WEIGHTS", "map", 1), setenv("NC_CPU_KERNELS", "scalar", 1);
    setenv("NC_CUDA_PERSIST", "1", 1), setenv("NC_CUDA_PERSIST_BUFS", "12", 1);
    CHECK(nc_backend_env_read(&e) == 0, "set switches: %s", nc_error());
    CHECK(!e.cuda_graphs && e.cuda_pdl && e.cuda_profile && e.cuda_fa == 1 && !strcmp(e.cuda_gemv_q8, "tc") && e.cuda_gemv_rows == 1 &&
              e.cuda_gemv_q8_rows == 4 && !e.cuda_verify_rows && e.cuda_attn_prefetch && e.cuda_fp8_act && !strcmp(e.cpu_weights, "map") && !strcmp(e.cpu_kernels, "scalar") && e.cuda_persist &&
              e.cuda_persist_bufs == 12 &&
              !strcmp(e.cuda_verify_pairs, "on") && !e.cuda_qkv_rope,
          "switches not read as set");
    clear_switches();
    const char *bad[][2] = {{"NC_CUDA_PDL", "yes"},
                            {"NC_CUDA_GRAPHS", "2"},
                            {"NC_CUDA_FA", "3"},
                            {"NC_CUDA_SKINNY", "off"},
                            {"NC_CUDA_GEMV_Q8", "fast"},
                            {"NC_CUDA_GEMV_ROWS", "0"},
                            {"NC_CUDA_GEMV_ROWS", "9"},
                            {"NC_CUDA_GEMV_Q8_ROWS", "3"},
                            {"NC_CUDA_VERIFY_ROWS", "yes"},
                            {"NC_CUDA_ATTN_PREFETCH", "2"},
                            {"NC_CUDA_FP8_ACT", "on"},
                            {"NC_CUDA_VERIFY_PAIRS", "1"},
                            {"NC_CUDA_QKV_ROPE", "on"},
                            {"NC_CUDA_PERSIST", "on"},
                            {"NC_CUDA_PERSIST_BUFS", "1"},
                            {"NC_CUDA_PERSIST_BUFS", "17"},
                            {"NC_CUDA_PERSIST_BUFS", "4k"},
                            {"NC_CUDA_PERSIST_BUFS", "99999999999999999999"},
                            {"NC_CPU_WEIGHTS", "mmap"},
                            {"NC_CPU_KERNELS", "avx512f"}};
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) {
        setenv(bad[i][0], bad[i][1], 1);
        forget_error();
        nc_backend *be = nc_backend_create("cpu", fx->model, NULL);
        CHECK(!be && strstr(nc_error(), bad[i][0]), "%s=%s: accepted or not named (%s)", bad[i][0], bad[i][1],
              nc_error());
        if (!be) printf("  expected error (%s=%s): %s\n", bad[i][0], bad[i][1], nc_error());
        nc_backend_free(be);
        unsetenv(bad[i][0]);
    }
    /* a switch reaches the backend: its description names what it changed */
    setenv("NC_CPU_KERNELS", "scalar", 1);
    nc_backend *be = nc_backend_create("cpu", fx->model, NULL);
    CHECK(be && strstr(be->ops->describe(be), "scalar kernels"), "NC_CPU_KERNELS=scalar: %s",
          be ? be->ops->describe(be) : nc_error());
    nc_backend_free(be);
    clear_switches();
    if (nc_backend_cuda_available()) {
        setenv("NC_CUDA_SKINNY", "0", 1);
        be = nc_backend_create("cuda", fx->model, NULL);
        const char *d = be ? be->ops->describe(be) : nc_error();
        size_t n = strlen(d), k = strlen("GEMMs: cuBLASLt");
        CHECK(be && n >= k && !strcmp(d + n - k, "GEMMs: cuBLASLt"), "NC_CUDA_SKINNY=0: %s", d);
        nc_backend_free(be);
        clear_switches();
    }
}

int main(void) {
    const char *names[] = {"v1_mha", "v6_gqa"};
    struct {
        const char *dev;
        double tol;
    } targets[] = {{"cpu", 1e-4}, {"cuda", 3e-2}};
    fixture fx[NC_ARRAY_LEN(names)];
    for (size_t f = 0; f < NC_ARRAY_LEN(names); f++)
        if (!fixture_load(&fx[f], names[f])) {
            fprintf(stderr, "cannot read " FIXTURE_DIR "/%s/model.json (run from the repository root)\n", names[f]);
            return 1;
        }
    float *logits = nc_xmalloc(sizeof(float) * (size_t)MAX_TOKENS * 512);
    save_switches();
    check_env(&fx[0]);
    restore_switches();
    for (size_t t = 0; t < NC_ARRAY_LEN(targets); t++) {
        if (!strcmp(targets[t].dev, "cuda") && !nc_backend_cuda_available()) {
            printf("cuda: skipped (no usable CUDA device, or CUDA not compiled in)\n");
            continue;
        }
        for (size_t f = 0; f < NC_ARRAY_LEN(names); f++) check_backend(targets[t].dev, targets[t].tol, &fx[f], logits);
    }
    free(logits);
    for (size_t f = 0; f < NC_ARRAY_LEN(names); f++) fixture_free(&fx[f]);
    return check_summary("test_backend_contract");
}
