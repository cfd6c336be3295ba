/*
 * test_sched_invariance.c: the same seeded request gives the same tokens
 * and the same log-probabilities, bit for bit, whatever else the scheduler
 * runs (issue 18, CPU backend; docs/performance.md, CPU backend), through
 * the whole engine: scheduler, prefill chunking, prefix cache, forks,
 * sampling, the CPU backend, the bundled picochat model.
 *
 * Reference: the target request (temperature 1.5, no top-k, seed 2, top-5
 * log-probs) alone on one thread with whole-prompt prefill. Then, on 1, 2
 * and 3 threads, with prefill chunks of 512, 32 or 7 tokens (four pairs):
 *   - alone;
 *   - among 2..16 other requests (random prompts, lengths, temperatures,
 *     n = 1..3) submitted at random steps before and after it;
 *   - again after a request sharing its first 70 prompt tokens finished, so
 *     the prefix comes from the cache (checked: n_cached_tokens > 0).
 * Every run must give the reference's tokens and bit-identical chosen and
 * top log-probs. And n > 1: row i of a request with n = 3 and seed s equals
 * the n = 1 request with seed s + i (each sample reproducible on its own).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "engine/bundle.h"
#include "engine/scheduler.h"
#include "util/common.h"

enum { MAX_GEN = 48, MAX_ROWS = 3, MAX_OTHERS = 16, PROMPT = 100 };

typedef struct {
    int32_t n[MAX_ROWS];
    int32_t tokens[MAX_ROWS][MAX_GEN];
    float logprob[MAX_ROWS][MAX_GEN];
    nc_token_logprob top[MAX_ROWS][MAX_GEN][5];
    int32_t cached;
    bool done[MAX_ROWS];
} transcript;

static bool collect(void *user, const nc_gen_event *ev) {
    transcript *tr = user;
    if (ev->token >= 0 && ev->row < MAX_ROWS && tr->n[ev->row] < MAX_GEN) {
        int i = tr->n[ev->row]++;
        tr->tokens[ev->row][i] = ev->token;
        tr->logprob[ev->row][i] = ev->chosen.logprob;
        memcpy(tr->top[ev->row][i], ev->top, sizeof tr->top[ev->row][i]);
    }
    if (ev->row < MAX_ROWS && ev->finish != NC_FINISH_NONE) tr->done[ev->row] = true;
    tr->cached = ev->n_cached_tokens;
    return false;
}

static uint64_t rng = 777;
static uint32_t rnd(uint32_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33) % n;
}

static nc_bundle_options opts;
static nc_model *model;
static nc_tokenizer *tok;
static int32_t target_prompt[PROMPT];

static nc_gen_params target_params(uint64_t seed, int n) {
    nc_gen_params p = nc_gen_params_default();
    p.temperature = 1.5f, p.top_k = 0, p.seed = seed, p.max_tokens = 40, p.top_logprobs = 5, p.n = n;
    p.use_calculator = false;
    return p;
}

/* An engine: backend on `threads` threads, scheduler with prefill chunks of `chunk`. */
static nc_scheduler *open_sched(int threads, int chunk, nc_backend **be) {
    nc_backend_params bp;
    nc_scheduler_params sp;
    nc_bundle_sizes(&opts, 512, &bp, &sp);
    bp.n_threads = threads;
    bp.max_batch_tokens = 512;
    sp.prefill_chunk = chunk;
    *be = nc_backend_create("cpu", model, &bp);
    CHECK(*be != NULL, "backend: %s", nc_error());
    if (!*be) return NULL;
    nc_scheduler *s = nc_scheduler_create(*be, tok, &sp);
    CHECK(s != NULL, "scheduler: %s", nc_error());
    return s;
}

static void submit(nc_scheduler *s, const int32_t *prompt, int n, const nc_gen_params *p, transcript *tr) {
    memset(tr, 0, sizeof *tr);
    CHECK(nc_scheduler_submit(s, prompt, n, p, collect, tr, NULL) == 0, "submit: %s", nc_error());
}

/* Runs the target with n_others random requests arriving at random steps. */
static void run_target(nc_scheduler *s, int n_others, const nc_gen_params *tp, transcript *out) {
    static int32_t prompts[MAX_OTHERS][200];
    static transcript others[MAX_OTHERS];
    int arrive[MAX_OTHERS], target_at = (int)rnd(6), step = 0, submitted = 0;
    bool target_in = false;
    for (int i = 0; i < n_others; i++) arrive[i] = (int)rnd(30);
    for (;;) {
        if (!target_in && step >= target_at) submit(s, target_prompt, PROMPT, tp, out), target_in = true;
        for (int i = 0; i < n_others; i++)
            if (arrive[i] == step) {
                int len = 1 + (int)rnd(200);
                for (int t = 0; t < len; t++) prompts[i][t] = (int32_t)rnd(4000);
                nc_gen_params p = nc_gen_params_default();
                p.temperature = rnd(3) ? 0.2f * (float)rnd(8) : 0.0f;
                p.seed = rnd(1000), p.max_tokens = 1 + (int)rnd(60), p.n = 1 + (int)rnd(3);
                p.top_logprobs = rnd(2) ? -1 : 2;
                submit(s, prompts[i], len, &p, &others[i]);
                submitted++;
            }
        int left = nc_scheduler_step(s);
        CHECK(left >= 0, "step: %s", nc_error());
        step++;
        if (left <= 0 && target_in && (submitted == n_others || left < 0)) break;
    }
}

static void compare(const transcript *ref, int ref_row, const transcript *got, int row, const char *how) {
    bool same = ref->n[ref_row] == got->n[row] && got->done[row] &&
                !memcmp(ref->tokens[ref_row], got->tokens[row], sizeof ref->tokens[0]) &&
                !memcmp(ref->logprob[ref_row], got->logprob[row], sizeof ref->logprob[0]) &&
                !memcmp(ref->top[ref_row], got->top[row], sizeof ref->top[0]);
    int diverge = -1;
    for (int i = 0; i < ref->n[ref_row] && diverge < 0; i++)
        if (ref->tokens[ref_row][i] != got->tokens[row][i] || ref->logprob[ref_row][i] != got->logprob[row][i])
            diverge = i;
    CHECK(same, "%s: differs from the reference (%d vs %d tokens, first difference at %d)", how, got->n[row],
          ref->n[ref_row], diverge);
}

int main(void) {
    nc_bundle_options_init(&opts);
    opts.load.path = "models/picochat";
    opts.rows = MAX_OTHERS + 4;
    if (nc_bundle_load(&opts, &model, &tok, true, NULL)) {
        fprintf(stderr, "cannot load models/picochat (run from the repository root): %s\n", nc_error());
        return 1;
    }
    for (int i = 0; i < PROMPT; i++) target_prompt[i] = (int32_t)rnd(4000);

    static transcript ref, got, prefix_tr, single[MAX_ROWS];
    nc_gen_params tp = target_params(2, 1);
    nc_backend *be;
    nc_scheduler *s = open_sched(1, 512, &be);
    if (!s) return check_summary("test_sched_invariance");
    submit(s, target_prompt, PROMPT, &tp, &ref);
    while (nc_scheduler_step(s) > 0) {}
    CHECK(ref.n[0] > 10 && ref.done[0], "reference: %d tokens", ref.n[0]);
    /* n > 1: each row as its own n = 1 request with seed + row */
    for (int r = 0; r < MAX_ROWS; r++) {
        nc_gen_params p1 = target_params(100 + (uint64_t)r, 1);
        submit(s, target_prompt, PROMPT, &p1, &single[r]);
        while (nc_scheduler_step(s) > 0) {}
    }
    nc_scheduler_free(s);
    nc_backend_free(be);

    /* (threads, prefill chunk): every thread count and every chunk size */
    const int configs[][2] = {{1, 7}, {2, 512}, {2, 32}, {3, 7}};
    for (size_t c = 0; c < NC_ARRAY_LEN(configs); c++) {
        int threads = configs[c][0], chunk = configs[c][1];
        char how[96];
        s = open_sched(threads, chunk, &be);
        if (!s) continue;
        snprintf(how, sizeof how, "%d threads, chunks of %d, alone", threads, chunk);
        run_target(s, 0, &tp, &got);
        compare(&ref, 0, &got, 0, how);
        for (int k = 0; k < 2; k++) {
            int n_others = 2 + (int)rnd(MAX_OTHERS - 1);
            snprintf(how, sizeof how, "%d threads, chunks of %d, among %d others", threads, chunk, n_others);
            run_target(s, n_others, &tp, &got);
            compare(&ref, 0, &got, 0, how);
        }
        /* a finished request leaves the first 70 prompt tokens in the prefix cache */
        nc_gen_params pp = target_params(9, 1);
        pp.max_tokens = 1;
        submit(s, target_prompt, 70, &pp, &prefix_tr);
        while (nc_scheduler_step(s) > 0) {}
        snprintf(how, sizeof how, "%d threads, chunks of %d, cached prefix, among others", threads, chunk);
        run_target(s, 1 + (int)rnd(8), &tp, &got);
        CHECK(got.cached > 0, "%s: no prompt token came from the cache", how);
        compare(&ref, 0, &got, 0, how);

        nc_gen_params pn = target_params(100, MAX_ROWS);
        snprintf(how, sizeof how, "%d threads, chunks of %d, n = %d", threads, chunk, MAX_ROWS);
        run_target(s, (int)rnd(5), &pn, &got);
        for (int r = 0; r < MAX_ROWS; r++) compare(&single[r], 0, &got, r, how);
        nc_scheduler_free(s);
        nc_backend_free(be);
    }
    nc_tokenizer_free(tok);
    nc_model_free(model);
    return check_summary("test_sched_invariance");
}
