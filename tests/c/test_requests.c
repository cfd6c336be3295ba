/*
 * test_requests.c: many requests at once through the public C API
 * (nc_request_*, nc_engine_step in include/nanochat.h), on the bundled
 * picochat model, CPU.
 *
 * Reference: tests/data/picochat/golden.json, PyTorch's greedy transcripts
 * with nanochat's calculator forcing (see golden_cases.h). Its margins are
 * null exactly at the steps the calculator forced, which gives the masks
 * independently of the engine; a greedy token's log-probability is at most
 * -log(1 + exp(-margin)) (the runner-up alone takes that much).
 * Checked: all 35 conversations submitted at once and stepped together
 * equal PyTorch's tokens (the terminal token last, then the finish reason),
 * masks and log-probability bounds, also with a KV cache too small to hold
 * them all at once (requests wait for blocks) and from two threads; n = 4
 * greedy rows each equal PyTorch's; n = 4 sampled rows are reproducible
 * for a seed whatever runs beside them, and another seed changes them;
 * cancelling (before and during a run) and freeing unfinished requests
 * end their rows and leave the engine idle; bad input is refused through
 * nc_engine_last_error(); stepping from a stream callback is refused.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "golden_cases.h"

#define MAX_CASES 64
#define ASSISTANT_END 4091
#define BOS 4087

typedef struct {
    golden_case g[MAX_CASES];
    int n;
    cJSON *json; /* the cases point into it */
} golden_set;

static void load_golden(golden_set *set) {
    char *text = read_file(GOLDEN);
    set->json = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(set->json != NULL, "cannot read %s (run from the repository root)", GOLDEN);
    const cJSON *c;
    set->n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(set->json, "cases")) {
        if (set->n < MAX_CASES && load_case(c, &set->g[set->n]) == 0) set->n++;
    }
}

static nc_request *submit_case(nc_engine *e, const golden_case *g, int n, int logprobs) {
    nc_prompt p = {.messages = g->msgs, .n_messages = g->n_msgs};
    nc_request_options o = {.sampling = {.max_tokens = g->max_tokens}, .n = n, .logprobs = logprobs};
    nc_request *r = nc_request_submit(e, &p, &o);
    CHECK(r != NULL, "%s: submit: %s", g->name, nc_engine_last_error());
    return r;
}

/* Steps until the engine is idle; returns the number of steps. */
static int run_all(nc_engine *e) {
    int steps = 0, left;
    while ((left = nc_engine_step(e)) > 0) steps++;
    CHECK(left == 0, "step failed: %s", nc_engine_last_error());
    return steps;
}

/* One row against the golden case: tokens, terminal, finish, masks,
 * log-probability bounds. Returns whether it matched fully. */
static bool check_row(const golden_case *g, const nc_request *r, int row, bool logprobs) {
    int32_t tokens[600];
    uint8_t masks[600];
    float lp[600];
    nc_reply_finish finish;
    int64_t n = nc_request_read(r, row, 0, tokens, masks, lp, 600, &finish);
    CHECK(n > 0 && n <= 600, "%s row %d: %lld tokens", g->name, row, (long long)n);
    if (n <= 0 || n > 600) return false;
    bool stopped = finish == NC_REPLY_STOP;
    CHECK(!stopped || tokens[n - 1] == ASSISTANT_END || tokens[n - 1] == BOS, "%s row %d: stopped on %d", g->name,
          row, tokens[n - 1]);
    size_t body = (size_t)n - stopped, at;
    int same = golden_compare(g, tokens, body, &at);
    CHECK(same >= 0, "%s row %d: token %zu is %d, PyTorch's %d", g->name, row, at,
          at < body ? tokens[at] : -1, at < g->n_tokens ? g->tokens[at] : -1);
    if (same != 1) return false;
    CHECK(!strcmp(nc_reply_finish_name(finish), g->finish), "%s row %d: finish %s, PyTorch's %s", g->name, row,
          nc_reply_finish_name(finish), g->finish);
    for (int64_t i = 0; i < n && (size_t)i < g->n_margins; i++) {
        bool forced = isinf(g->margins[i]);
        CHECK(masks[i] == !forced, "%s row %d: mask %d at %lld, PyTorch %s it", g->name, row, masks[i],
              (long long)i, forced ? "forced" : "sampled");
        if (!logprobs) {
            CHECK(lp[i] == 0.0f, "%s: log-probability %g without asking", g->name, (double)lp[i]);
        } else if (forced) {
            CHECK(lp[i] == 0.0f, "%s: forced token with log-probability %g", g->name, (double)lp[i]);
        } else {
            double bound = -log1p(exp(-g->margins[i]));
            CHECK(lp[i] <= bound + 1e-4 && lp[i] > -20.0, "%s step %lld: log-probability %g, bound %g", g->name,
                  (long long)i, (double)lp[i], bound);
        }
    }
    return true;
}

/* Every golden conversation submitted at once, half with log-probs. */
static void test_all_at_once(nc_engine *e, const golden_set *set, const char *what) {
    nc_request *r[MAX_CASES];
    for (int i = 0; i < set->n; i++) r[i] = submit_case(e, &set->g[i], 1, i % 2);
    int steps = run_all(e);
    int exact = 0;
    for (int i = 0; i < set->n; i++) {
        if (!r[i]) continue;
        CHECK(nc_request_done(r[i]) && nc_request_rows(r[i]) == 1, "%s: not done", set->g[i].name);
        exact += check_row(&set->g[i], r[i], 0, i % 2);
        nc_request_free(r[i]);
    }
    printf("%s: %d requests in %d steps, %d equal PyTorch's exactly\n", what, set->n, steps, exact);
    CHECK(set->n >= 30, "only %d golden cases", set->n);
}

/* n = 4 greedy rows of a calculator case: each is PyTorch's reply. */
static void test_greedy_rows(nc_engine *e, const golden_case *g) {
    nc_request *r = submit_case(e, g, 4, 1);
    if (!r) return;
    CHECK(nc_request_wait(r) == 0, "wait: %s", nc_engine_last_error());
    for (int row = 0; row < 4; row++) check_row(g, r, row, true);
    nc_request_free(r);
}

/* ==== sampling ==== */

/* A base-model completion: picochat is far from sure how to go on (its
 * chat replies are nearly deterministic even at temperature 1). */
static nc_request *submit_sampled(nc_engine *e, uint64_t seed) {
    nc_prompt p = {.text = "And the"};
    nc_request_options o = {.sampling = {.temperature = 1.0f, .top_k = 50, .seed = seed, .max_tokens = 48}, .n = 4};
    nc_request *r = nc_request_submit(e, &p, &o);
    CHECK(r != NULL, "sampled submit: %s", nc_engine_last_error());
    return r;
}

/* The request's rows of sampled tokens. */
typedef struct {
    int32_t t[4][64];
    int64_t n[4];
} samples;

static void read_samples(const nc_request *r, samples *s) {
    memset(s, 0, sizeof *s);
    for (int row = 0; row < 4; row++) s->n[row] = nc_request_read(r, row, 0, s->t[row], NULL, NULL, 64, NULL);
}

static void test_sampling(nc_engine *e, const golden_set *set) {
    samples a, b, c;
    nc_request *r = submit_sampled(e, 7);
    run_all(e);
    read_samples(r, &a);
    nc_request_free(r);

    /* The same seed again, this time beside other requests. */
    nc_request *others[3];
    for (int i = 0; i < 3; i++) others[i] = submit_case(e, &set->g[10 + i], 2, 0);
    r = submit_sampled(e, 7);
    run_all(e);
    read_samples(r, &b);
    nc_request_free(r);
    for (int i = 0; i < 3; i++) nc_request_free(others[i]);
    CHECK(!memcmp(&a, &b, sizeof a), "seed 7 gave other tokens the second time");

    r = submit_sampled(e, 8);
    run_all(e);
    read_samples(r, &c);
    nc_request_free(r);
    CHECK(memcmp(&a, &c, sizeof a), "seeds 7 and 8 gave the same samples");
    /* Rows use seed, seed + 1, ...: they are different samples. */
    CHECK(a.n[0] != a.n[1] || memcmp(a.t[0], a.t[1], sizeof a.t[0]), "rows 0 and 1 are the same sample");
    CHECK(a.n[0] > 0 && a.n[0] <= 48, "row 0 has %lld tokens (max_tokens 48)", (long long)a.n[0]);
}

/* ==== cancelling and freeing ==== */

static void test_cancel(nc_engine *e, const golden_set *set) {
    const golden_case *g = &set->g[1]; /* a 65-token reply */
    nc_request *before = submit_case(e, g, 2, 0);
    nc_request_cancel(before);
    nc_request *during = submit_case(e, g, 2, 0);
    for (int i = 0; i < 4; i++) nc_engine_step(e);
    nc_request_cancel(during);
    nc_request_cancel(during); /* idempotent */
    nc_request *freed = submit_case(e, g, 3, 1);
    nc_engine_step(e);
    nc_request_free(freed); /* unfinished: reclaimed by the next step */
    run_all(e);
    for (int row = 0; row < 2; row++) {
        nc_reply_finish f;
        int64_t n = nc_request_read(before, row, 0, NULL, NULL, NULL, 0, &f);
        CHECK(n == 0 && f == NC_REPLY_CANCELLED, "cancelled before running: %lld tokens, %s", (long long)n,
              nc_reply_finish_name(f));
        int32_t t[8];
        n = nc_request_read(during, row, 0, t, NULL, NULL, 8, &f);
        CHECK(n >= 1 && n <= 8 && f == NC_REPLY_CANCELLED && !memcmp(t, g->tokens, (size_t)n * sizeof *t),
              "cancelled while running: %lld tokens, %s", (long long)n, nc_reply_finish_name(f));
    }
    CHECK(nc_request_done(before) && nc_request_done(during), "cancelled requests not done");
    CHECK(nc_request_wait(during) == 0, "wait on a finished request: %s", nc_engine_last_error());
    nc_request_free(before);
    nc_request_free(during);
    CHECK(nc_engine_step(e) == 0, "the engine is not idle after cancelling");
    /* Freed while queued, never stepped: still reclaimed. */
    nc_request_free(submit_case(e, g, 1, 0));
    CHECK(nc_engine_step(e) == 0, "a request freed while queued still runs");
}

/* ==== threads ==== */

typedef struct {
    nc_engine *e;
    const golden_set *set;
    int first, ok;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    nc_request *r[6];
    for (int i = 0; i < 6; i++) r[i] = submit_case(j->e, &j->set->g[j->first + i], 1, 0);
    for (int i = 0; i < 6; i++) {
        if (!r[i]) continue;
        if (nc_request_wait(r[i]) == 0 && check_row(&j->set->g[j->first + i], r[i], 0, false)) j->ok++;
        nc_request_free(r[i]);
    }
    return NULL;
}

static void test_threads(nc_engine *e, const golden_set *set) {
    thread_job jobs[2] = {{e, set, 9, 0}, {e, set, 22, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK(jobs[0].ok == 6 && jobs[1].ok == 6, "threads: %d and %d of 6 replies equal PyTorch's", jobs[0].ok,
          jobs[1].ok);
}

/* ==== errors ==== */

typedef struct {
    nc_engine *e;
    int calls, refused;
} reentry;

static int step_from_callback(void *user, const char *delta, size_t len, int32_t token) {
    reentry *x = user;
    (void)delta, (void)len, (void)token;
    if (x->calls++ == 0) x->refused = nc_engine_step(x->e) == -1 && strstr(nc_engine_last_error(), "callback");
    return 0;
}

#define EXPECT_REFUSED(prompt, opts, needle, what)                                                       \
    do {                                                                                                 \
        nc_request *r_ = nc_request_submit(e, (prompt), (opts));                                          \
        CHECK(r_ == NULL && strstr(nc_engine_last_error(), needle), "%s: error '%s'", what,                \
              nc_engine_last_error());                                                                   \
        nc_request_free(r_);                                                                             \
    } while (0)

static void test_errors(nc_engine *e) {
    nc_message m = {"user", "Hello!"};
    nc_prompt ok = {.messages = &m, .n_messages = 1};
    nc_request_options o = {.n = 17};
    EXPECT_REFUSED(&ok, &o, "max_batch", "n above max_batch");
    o = (nc_request_options){.n = -1};
    EXPECT_REFUSED(&ok, &o, "n must be", "n -1");
    o = (nc_request_options){.sampling = {.temperature = -1}};
    EXPECT_REFUSED(&ok, &o, "temperature", "temperature -1");
    int32_t bad[2] = {4087, 5000};
    nc_prompt bad_ids = {.ids = bad, .n_ids = 2};
    EXPECT_REFUSED(&bad_ids, NULL, "5000", "id outside the vocabulary");
    nc_prompt empty = {.ids = bad, .n_ids = 0};
    EXPECT_REFUSED(&empty, NULL, "empty", "empty ids");
    EXPECT_REFUSED(NULL, NULL, "prompt", "NULL prompt");
    CHECK(nc_request_submit(NULL, &ok, NULL) == NULL && strstr(nc_engine_last_error(), "engine"), "NULL engine");
    CHECK(nc_engine_step(NULL) == -1, "step of NULL");

    nc_request *r = nc_request_submit(e, &ok, NULL);
    CHECK(r && nc_request_read(r, 1, 0, NULL, NULL, NULL, 0, NULL) == -1 && strstr(nc_engine_last_error(), "row 1"),
          "row outside the request: '%s'", nc_engine_last_error());
    CHECK(nc_request_read(r, -1, 0, NULL, NULL, NULL, 0, NULL) == -1, "row -1");
    CHECK(nc_request_read(NULL, 0, 0, NULL, NULL, NULL, 0, NULL) == -1, "NULL request");
    nc_request_free(r);
    CHECK(nc_request_wait(NULL) == -1, "wait on NULL");
    nc_request_free(NULL);
    nc_request_cancel(NULL);

    /* A stream callback may not step its own engine (it would deadlock). */
    reentry x = {.e = e};
    nc_generate_options greedy = {.max_tokens = 4};
    CHECK(nc_engine_generate_stream(e, &ok, &greedy, step_from_callback, &x, NULL) == 0, "stream: %s",
          nc_engine_last_error());
    CHECK(x.calls > 0 && x.refused, "stepping from a stream callback was not refused");
    run_all(e);
}

int main(void) {
    unsetenv("NANOCHAT_MODEL");
    static golden_set set;
    load_golden(&set);
    if (set.n < 30) return check_summary("test_requests");

    nc_engine_options opts = {.device = "cpu", .max_batch = 16};
    nc_engine *e = nc_engine_open(&opts);
    CHECK(e != NULL, "open: %s", nc_engine_last_error());
    if (!e) return check_summary("test_requests");
    nc_engine_info info;
    CHECK(nc_engine_get_info(e, &info) == 0 && info.max_batch == 16 && info.tokenizer_vocab_size == 4096 &&
              info.kv_blocks == 18 * 8,
          "info: max_batch %d, tokenizer %d ids, %d KV blocks", info.max_batch, info.tokenizer_vocab_size,
          info.kv_blocks);
    test_all_at_once(e, &set, "16 rows, full KV cache");
    test_greedy_rows(e, &set.g[9]);
    test_sampling(e, &set);
    test_cancel(e, &set);
    test_threads(e, &set);
    test_errors(e);
    nc_request *left = submit_case(e, &set.g[0], 1, 0); /* still held at close: freed by it */
    (void)left;
    nc_engine_close(e);

    /* A KV cache of 6 blocks: requests (2 blocks each at worst) wait their turn. */
    nc_engine_options small = {.device = "cpu", .max_batch = 8, .kv_blocks = 6};
    e = nc_engine_open(&small);
    CHECK(e != NULL, "open with 6 KV blocks: %s", nc_engine_last_error());
    if (e) {
        test_all_at_once(e, &set, "8 rows, 6 KV blocks");
        nc_engine_close(e);
    }
    nc_engine_options bad = {.device = "cpu", .max_batch = 5000};
    CHECK(nc_engine_open(&bad) == NULL && strstr(nc_engine_last_error(), "max_batch"), "max_batch 5000: '%s'",
          nc_engine_last_error());
    bad = (nc_engine_options){.device = "cpu", .kv_blocks = -1};
    CHECK(nc_engine_open(&bad) == NULL && strstr(nc_engine_last_error(), "kv_blocks"), "kv_blocks -1: '%s'",
          nc_engine_last_error());
    cJSON_Delete(set.json);
    return check_summary("test_requests");
}
