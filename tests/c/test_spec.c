/*
 * test_spec.c: speculative decoding in the scheduler (sched_spec.c,
 * spec_draft.c) against test_scheduler.c's mock backend and reference
 * generator (sched_mock.h), which apply nanochat's Engine.generate rules to
 * the scripted model with no scheduler, no cache and no speculation.
 *
 *   - greedy output equals the reference token for token, with prompt
 *     lookup, a draft model that agrees with the target (the same script), a
 *     draft model that often disagrees, both at once; on a host-sampling
 *     and a device-sampling backend; through quoting replies (lookup drafts
 *     accepted), calculator calls (forced tokens inside accepted drafts),
 *     stop tokens and max_tokens inside a draft, a callback that stops a
 *     row in the middle of a verified chunk. The statistics must show that
 *     every path was taken (drafts of each kind accepted and rejected), and
 *     every KV block and draft slot must be free afterwards;
 *   - sampled output equals the output without speculation for the same
 *     seed (certain drafts are checked by drawing the target's own token),
 *     logprobs included, n > 1 rows included, rows that opt out mixed in;
 *   - with a sampling draft model (min(1, p/q) and the residual), the joint
 *     distribution of the two tokens after a fixed one is the target's:
 *     a chi-square test against the exact probabilities from the script's
 *     logits, at a failure probability of 1e-6 (deterministic seeds, so CI
 *     never flakes); the same counts must fail against the draft's own
 *     distribution (the test can fail);
 *   - the price model: a backend whose every position costs as much as a
 *     step (a small model on a CPU) gets almost no drafts on text with
 *     nothing to quote, and costs at most 5% more device time over a
 *     150-token reply (what finding that out costs); one whose extra
 *     positions are nearly free (a GPU) drafts a quoting reply and takes
 *     fewer steps and less time;
 *   - a draft model whose forward fails is dropped, the output unchanged;
 *     a draft model's tokenizer is compared with the target's.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/spec_draft.h"
#include "sched_mock.h"
#include "util/common.h"

static nc_tokenizer *tok;

/* ==== a draft model that often disagrees ==== */

/* The target's logits with a runner-up boosted, and for a quarter of the
 * histories a strong vote for 'z': a draft that is right most of the time. */
static void skewed_logits(const int32_t *h, int n, float *out) {
    model_logits(h, n, out);
    uint64_t x = hash_tokens(h, n);
    out['A' + (int32_t)((x >> 16) % 26)] += 1.5f;
    if (x % 4 == 0) out['z'] = 7.0f;
}

/* A draft backend of `slots` rows of the default 1024-position context. */
static mock *draft_mock(int slots, logits_fn fn) {
    mock *d = mock_new(slots * 16, slots, 512, false);
    d->logits = fn;
    return d;
}

typedef struct {
    const char *name;
    bool lookup;
    logits_fn draft;   /* NULL: no draft model */
} config;

static const config configs[] = {
    {"lookup", true, NULL},
    {"draft (agrees)", false, model_logits},
    {"draft (skewed)", false, skewed_logits},
    {"lookup + skewed draft", true, skewed_logits},
};

static nc_scheduler *spec_sched(mock *m, mock *draft, const config *cf, bool always, int max_running) {
    nc_scheduler_params sp = {.max_running = max_running};
    sp.spec.no_lookup = !cf->lookup;
    sp.spec.always = always;
    sp.spec.draft = draft ? &draft->b : NULL;
    nc_scheduler *s = nc_scheduler_create(&m->b, tok, &sp);
    CHECK(s != NULL, "create: %s", nc_error());
    return s;
}

static int64_t sum_drafted(const nc_scheduler_stats *st) {
    int64_t n = 0;
    for (int k = 0; k < NC_SPEC_KINDS; k++) n += st->spec_drafted[k];
    return n;
}

/* ==== greedy: the reference, token for token ==== */

static void test_greedy(void) {
    struct { const char *text; int max_tokens; bool calc; } cases[] = {
        {"Q the quick brown fox jumps over the lazy dog, the quick brown fox!", 80, true},
        {"Q abcabcabcabcabcabcabc", 12, true},  /* max_tokens inside a run of accepted drafts */
        {"Q abcabcabcabcabcabcabc", 40, true},  /* the stop token right after accepted drafts */
        {"hello there, hello there", 60, true}, /* hash letters: lookup matches that fail */
        {"Stop soon", 50, true},                /* <|assistant_end|> after three tokens */
        {"what is # 6*7? # 6*7", 50, true},     /* calculator: forced tokens as drafts */
        {"what is # 6*7?", 7, true},            /* max_tokens inside the forced run */
        {"what is # 6*7?", 50, false},          /* tool off */
    };
    int64_t drafted[NC_SPEC_KINDS] = {0}, accepted[NC_SPEC_KINDS] = {0};
    for (size_t c = 0; c < NC_ARRAY_LEN(configs); c++)
        for (int device = 0; device < 2; device++)
            for (int always = 0; always < 2; always++) {
                mock *m = mock_new(64, 8, 256, device);
                mock *d = configs[c].draft ? draft_mock(2, configs[c].draft) : NULL;
                nc_scheduler *s = spec_sched(m, d, &configs[c], always, 0);
                collector *col = calloc(NC_ARRAY_LEN(cases), sizeof *col);
                for (size_t k = 0; k < NC_ARRAY_LEN(cases); k++) {
                    int32_t prompt[256];
                    int np = chat_prompt(cases[k].text, prompt);
                    nc_gen_params p = greedy(cases[k].max_tokens);
                    p.use_calculator = cases[k].calc;
                    CHECK(nc_scheduler_submit(s, prompt, np, &p, on_event, &col[k], NULL) == 0, "submit: %s",
                          nc_error());
                }
                run_all(s); /* all at once: rows draft side by side, more rows than draft slots */
                for (size_t k = 0; k < NC_ARRAY_LEN(cases); k++) {
                    int32_t prompt[256];
                    int np = chat_prompt(cases[k].text, prompt);
                    ref_out ref;
                    ref_generate(prompt, np, cases[k].max_tokens, 1024, cases[k].calc, &ref);
                    char what[160];
                    snprintf(what, sizeof what, "%s dev %d always %d '%s' max %d", configs[c].name, device, always,
                             cases[k].text, cases[k].max_tokens);
                    check_matches_ref(what, &col[k], 0, &ref);
                    CHECK(col[k].events_after_finish == 0, "%s: events after finish", what);
                }
                nc_scheduler_stats st;
                nc_scheduler_get_stats(s, &st);
                CHECK(st.kv_blocks_used == 0 && st.running_rows == 0, "%s: KV blocks left in use (%d)",
                      configs[c].name, st.kv_blocks_used);
                if (always) CHECK(sum_drafted(&st) > 0, "%s dev %d: nothing drafted", configs[c].name, device);
                if (device) { /* greedy drafts are certain: verified where they are sampled, in one call per step */
                    int host_calls = 0;
                    for (int i = 0; i < m->n_log; i++) host_calls += !m->log[i].sample_call;
                    CHECK(host_calls == 0, "%s always %d: %d forwards with host sampling", configs[c].name, always,
                          host_calls);
                    if (always) CHECK(m->sampled_all > 0, "%s: no draft verified on the device", configs[c].name);
                }
                for (int k = 0; k < NC_SPEC_KINDS; k++) {
                    drafted[k] += st.spec_drafted[k];
                    accepted[k] += st.spec_accepted[k];
                }
                nc_scheduler_free(s);
                mock_free(m);
                if (d) mock_free(d);
                free(col);
            }
    for (int k = 0; k < NC_SPEC_KINDS; k++) {
        printf("greedy: %s: %lld drafted, %lld accepted\n", nc_spec_kind_name((nc_spec_kind)k), (long long)drafted[k],
               (long long)accepted[k]);
        CHECK(accepted[k] > 0, "no %s draft was accepted", nc_spec_kind_name((nc_spec_kind)k));
        CHECK(k == NC_SPEC_CALCULATOR || accepted[k] < drafted[k], "no %s draft was rejected",
              nc_spec_kind_name((nc_spec_kind)k));
    }
}

/* A callback that stops its row after a few tokens (a stop string, a
 * client gone) in the middle of a verified chunk: nothing after it. */
static void test_stop_mid_chunk(void) {
    for (int stop_after = 3; stop_after <= 9; stop_after += 3) {
        mock *m = mock_new(64, 8, 256, false);
        nc_scheduler *s = spec_sched(m, NULL, &configs[0], true, 0);
        int32_t prompt[128];
        int np = chat_prompt("Q abcdefabcdefabcdefabcdef", prompt);
        nc_gen_params p = greedy(40);
        collector *c = calloc(1, sizeof *c);
        c->stop_after = stop_after;
        nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
        run_all(s);
        ref_out ref;
        ref_generate(prompt, np, 40, 1024, true, &ref);
        bool prefix = c->n[0] == stop_after && !memcmp(c->toks[0], ref.toks, sizeof(int32_t) * (size_t)stop_after);
        CHECK(prefix, "stop after %d: got %d tokens", stop_after, c->n[0]);
        CHECK(c->finish[0] == NC_FINISH_CANCELLED && c->n_finish_events[0] == 1 && c->events_after_finish == 0,
              "stop after %d: finish %s", stop_after, nc_finish_reason_name(c->finish[0]));
        nc_scheduler_stats st;
        nc_scheduler_get_stats(s, &st);
        CHECK(st.spec_emitted > st.spec_verifies, "stop after %d: no draft accepted", stop_after);
        CHECK(st.kv_blocks_used == 0, "stop after %d: KV blocks left", stop_after);
        nc_scheduler_free(s);
        mock_free(m);
        free(c);
    }
}

/* ==== sampled: the same tokens as without speculation, seed for seed ==== */

/* device: 0 host sampling, 1 the device samples, 2 ... and returns the
 * chosen tokens' log-probabilities (half the requests ask for them) */
static void run_sampled(const config *cf, bool spec, int device, collector *col, int n_req) {
    mock *m = mock_new(128, 16, 512, device > 0);
    if (device == 2) m->ops = mock_ops_dev_logprobs;
    mock *d = cf->draft && spec ? draft_mock(3, cf->draft) : NULL;
    nc_scheduler *s = spec_sched(m, d, cf, true, 0);
    for (int i = 0; i < n_req; i++) {
        int32_t prompt[256];
        char text[96];
        snprintf(text, sizeof text, "%s sample %d of some quoted text, of some quoted text %s", i % 2 ? "Q" : "x", i,
                 i % 3 ? "" : "#");
        int np = chat_prompt(text, prompt);
        nc_gen_params p = nc_gen_params_default();
        p.temperature = (i % 4) ? 0.8f : 1.3f;
        p.top_k = i % 3 == 1 ? 5 : 0;
        p.top_p = i % 3 == 2 ? 0.9f : 1.0f;
        p.min_p = i % 5 == 4 ? 0.05f : 0.0f;
        p.seed = 7000 + (uint64_t)i;
        p.max_tokens = 30 + i % 17;
        p.n = i % 4 == 3 ? 3 : 1;
        p.top_logprobs = i % 2 ? 2 : device == 2 && i % 4 == 0 ? 0 : -1;
        p.speculative = spec && i % 5 != 2; /* some rows opt out: plain and speculative rows share steps */
        CHECK(nc_scheduler_submit(s, prompt, np, &p, on_event, &col[i], NULL) == 0, "submit: %s", nc_error());
    }
    run_all(s);
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    if (spec) CHECK(st.spec_emitted > st.spec_verifies, "%s: no draft accepted", cf->name);
    nc_scheduler_free(s);
    mock_free(m);
    if (d) mock_free(d);
}

static void test_sampled_same_seed(void) {
    enum { N = 12 };
    for (size_t c = 0; c < NC_ARRAY_LEN(configs); c++)
        for (int device = 0; device < 3; device++) {
            collector *plain = calloc(N, sizeof *plain), *spec = calloc(N, sizeof *spec);
            run_sampled(&configs[c], false, device, plain, N);
            run_sampled(&configs[c], true, device, spec, N);
            for (int i = 0; i < N; i++)
                for (int r = 0; r < MAX_ROWS; r++) {
                    bool same = plain[i].n[r] == spec[i].n[r] && plain[i].finish[r] == spec[i].finish[r] &&
                                !memcmp(plain[i].toks[r], spec[i].toks[r], sizeof(int32_t) * (size_t)plain[i].n[r]) &&
                                !memcmp(plain[i].logprob[r], spec[i].logprob[r], sizeof(float) * (size_t)plain[i].n[r]);
                    CHECK(same, "%s dev %d: request %d row %d differs from decoding without speculation",
                          configs[c].name, device, i, r);
                }
            free(plain);
            free(spec);
        }
}

/* ==== a sampling draft model: the distribution ==== */

static void softmax(const float *logits, double *p) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, logits[i]);
    for (int i = 0; i < V; i++) sum += p[i] = exp(logits[i] - mx);
    for (int i = 0; i < V; i++) p[i] /= sum;
}

/* P(g2 = a, g3 = b) after history h (prompt + g1) under `fn` at
 * temperature 1: row a*V + b; a terminal g2 has no g3 (b = V - 1 slot
 * unused by tokens is not needed: the pair (a, a) stands for "a, then
 * nothing", a cannot be followed by itself after a terminal). */
static void joint(logits_fn fn, int32_t *h, int n, double *out) {
    float lg[V];
    double p1[V], p2[V];
    fn(h, n, lg);
    softmax(lg, p1);
    for (int a = 0; a < V; a++) {
        for (int b = 0; b < V; b++) out[a * V + b] = 0;
        if (a == ASSIST_END || a == BOS) {
            out[a * V + a] = p1[a];
            continue;
        }
        h[n] = a;
        fn(h, n + 1, lg);
        softmax(lg, p2);
        for (int b = 0; b < V; b++) out[a * V + b] = p1[a] * p2[b];
    }
}

/* Pearson's chi-square of `count` against N * p over bins of expected
 * count >= 5 (the others pooled); returns the statistic, *df its degrees. */
static double chi_square(const int *count, const double *p, int bins, int N, int *df) {
    double stat = 0, pool_e = 0, pool_o = 0;
    int k = 0;
    for (int i = 0; i < bins; i++) {
        double e = N * p[i];
        if (e < 5) {
            pool_e += e;
            pool_o += count[i];
            continue;
        }
        stat += (count[i] - e) * (count[i] - e) / e;
        k++;
    }
    if (pool_e > 0) {
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        k++;
    }
    *df = k - 1;
    return stat;
}

/* The chi-square quantile of upper tail 1e-6 (Wilson-Hilferty). */
static double chi_square_limit(int df) {
    double z = 4.753, a = 2.0 / (9.0 * df), c = 1 - a + z * sqrt(a);
    return df * c * c * c;
}

static void test_distribution(void) {
    const char *text = "distribution test";
    int32_t prompt[64], h[64];
    int np = chat_prompt(text, prompt);
    memcpy(h, prompt, sizeof(int32_t) * (size_t)np);
    int32_t g1 = next_token(prompt, np); /* count the rows whose first token is the likeliest */
    h[np] = g1;
    double *want = malloc(sizeof(double) * V * V), *draft_q = malloc(sizeof(double) * V * V);
    joint(model_logits, h, np + 1, want);
    joint(skewed_logits, h, np + 1, draft_q);
    int *count = calloc(V * V, sizeof *count);
    for (int mode = 0; mode < 2; mode++) { /* sampled drafts (min(1, p/q)), then argmax drafts */
        memset(count, 0, sizeof(int) * V * V);
        mock *m = mock_new(256, 16, 512, false);
        mock *d = draft_mock(8, skewed_logits);
        nc_scheduler_params sp = {0};
        sp.spec = (nc_spec_params){.no_lookup = true, .always = true, .max_draft = 2, .draft_sample = mode == 0,
                                   .draft = &d->b};
        nc_scheduler *s = nc_scheduler_create(&m->b, tok, &sp);
        int N = 0;
        collector *c = calloc(1, sizeof *c);
        for (int r = 0; r < 8000; r++) {
            memset(c, 0, sizeof *c);
            nc_gen_params p = nc_gen_params_default();
            p.temperature = 1.0f;
            p.top_k = 0;
            p.max_tokens = 4;
            p.n = 8;
            p.seed = 100000 + (uint64_t)r * 8;
            nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
            run_all(s);
            for (int row = 0; row < 8; row++) {
                if (c->n[row] < 2 || c->toks[row][0] != g1) continue;
                int32_t a = c->toks[row][1], b = c->n[row] > 2 ? c->toks[row][2] : a;
                count[a * V + b]++;
                N++;
            }
        }
        nc_scheduler_stats st;
        nc_scheduler_get_stats(s, &st);
        int df;
        double stat = chi_square(count, want, V * V, N, &df), limit = chi_square_limit(df);
        printf("distribution (%s drafts): %d samples, chi-square %.1f on %d df (limit %.1f at 1e-6); "
               "%lld of %lld drafts accepted\n", mode ? "argmax" : "sampled", N, stat, df, limit,
               (long long)st.spec_accepted[NC_SPEC_DRAFT_MODEL], (long long)st.spec_drafted[NC_SPEC_DRAFT_MODEL]);
        CHECK(N > 20000 && stat < limit, "%s drafts: the distribution differs from the target's",
              mode ? "argmax" : "sampled");
        CHECK(st.spec_accepted[NC_SPEC_DRAFT_MODEL] > 0 &&
              st.spec_accepted[NC_SPEC_DRAFT_MODEL] < st.spec_drafted[NC_SPEC_DRAFT_MODEL],
              "both acceptance and rejection happened");
        double stat_q = chi_square(count, draft_q, V * V, N, &df);
        CHECK(stat_q > chi_square_limit(df), "the draft's own distribution passes too (%.1f): the test is blind",
              stat_q);
        free(c);
        nc_scheduler_free(s);
        mock_free(m);
        mock_free(d);
    }
    free(count);
    free(want);
    free(draft_q);
}

/* ==== the price of a position ==== */

/* A prompt whose reply quotes it: lookup's drafts are kept. */
#define QUOTING                                                                                            \
    "Q and the quick brown fox jumps over the lazy dog while the quick brown fox sleeps; and the quick " \
    "brown fox jumps over the lazy dog while the quick brown fox sleeps"

/* One greedy request on a mock backend of the given costs (seconds per
 * forward and per position), batch-invariant or not, with speculation
 * settings `spec`; its output must be the reference's. */
typedef struct {
    int steps;
    double seconds; /* the simulated device time: this shared machine's wall clock is too noisy */
    int64_t drafted;
} timed;

static timed timed_run(const char *text, double base, double per_token, bool invariant, nc_spec_params spec) {
    mock *m = mock_new(64, 8, 256, false);
    m->ops.batch_invariant = invariant;
    m->cost_base = base;
    m->cost_per_token = per_token;
    nc_scheduler_params sp = {.spec = spec};
    nc_scheduler *s = nc_scheduler_create(&m->b, tok, &sp);
    CHECK(s != NULL, "create: %s", nc_error());
    timed r = {-1, -1, -1};
    if (!s) return r;
    int steps_before = g_step;
    collector *c = run_greedy_checked(s, "timed", text, 150, 1024);
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    r = (timed){g_step - steps_before, m->simulated, sum_drafted(&st)};
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
    return r;
}

static void test_pricing(void) {
    const nc_spec_params off = {.off = true}, on = {0};
    /* a CPU running a small model: every position costs what a step costs */
    const char *plain_text = "tell me something about hash letters";
    timed a = timed_run(plain_text, 0, 200e-6, true, off), b = timed_run(plain_text, 0, 200e-6, true, on);
    printf("pricing, steep: %d steps %.1f ms without, %d steps %.1f ms with speculation (%lld drafts)\n", a.steps,
           a.seconds * 1e3, b.steps, b.seconds * 1e3, (long long)b.drafted);
    CHECK(b.drafted <= b.steps / 10, "steep costs: %lld drafts in %d steps", (long long)b.drafted, b.steps);
    CHECK(b.seconds <= 1.05 * a.seconds, "steep costs: speculation took %.1f ms, %.1f ms without", b.seconds * 1e3,
          a.seconds * 1e3);
    /* a GPU: more positions cost almost nothing; a quoting reply */
    a = timed_run(QUOTING, 400e-6, 4e-6, true, off), b = timed_run(QUOTING, 400e-6, 4e-6, true, on);
    printf("pricing, flat: %d steps %.1f ms without, %d steps %.1f ms with speculation (%lld drafts)\n", a.steps,
           a.seconds * 1e3, b.steps, b.seconds * 1e3, (long long)b.drafted);
    CHECK(b.steps * 2 < a.steps && b.seconds < 0.7 * a.seconds, "flat costs: %d steps with speculation, %d without",
          b.steps, a.steps);
}

/* ==== the default per backend ==== */

/* Drafts verified for a quoting reply on flat costs (where speculation
 * pays) on a mock that is batch-invariant or not, with settings `spec`. */
static int64_t drafted_on(bool invariant, nc_spec_params spec) {
    return timed_run(QUOTING, 400e-6, 4e-6, invariant, spec).drafted;
}

/* Speculation is on by default only where verification is exact (the
 * backend's batch_invariant); force, always and a draft model turn it on
 * anywhere. */
static void test_default_per_backend(void) {
    CHECK(drafted_on(true, (nc_spec_params){0}) > 0, "a batch-invariant backend does not speculate by default");
    CHECK(drafted_on(false, (nc_spec_params){0}) == 0, "a backend without exact verification speculates by default");
    CHECK(drafted_on(false, (nc_spec_params){.force = true}) > 0, "force does not turn speculation on");
    CHECK(drafted_on(false, (nc_spec_params){.always = true}) > 0, "always does not turn speculation on");
    CHECK(drafted_on(true, (nc_spec_params){.off = true}) == 0, "off does not turn speculation off");
    mock *d = draft_mock(2, model_logits);
    CHECK(drafted_on(false, (nc_spec_params){.draft = &d->b, .no_lookup = true}) > 0,
          "a draft model does not turn speculation on");
    mock_free(d);
}

/* ==== failures and refusals ==== */

/* A draft model whose forward fails: dropped for good, output unchanged. */
static void test_draft_failure(void) {
    mock *m = mock_new(64, 8, 256, false);
    mock *d = draft_mock(2, model_logits);
    d->fail_next = true;
    nc_scheduler *s = spec_sched(m, d, &configs[1], true, 0);
    collector *c = run_greedy_checked(s, "draft failure", "Q failing drafts change nothing", 30, 1024);
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    CHECK(st.spec_drafted[NC_SPEC_DRAFT_MODEL] == 0, "drafts after a failure");
    nc_scheduler_free(s);
    mock_free(m);
    mock_free(d);
    free(c);
}

static void test_tokenizer_match(void) {
    CHECK(nc_spec_tokenizers_match(tok, tok) == 0, "a tokenizer differs from itself: %s", nc_error());
    nc_tokenizer *other = byte_tokenizer_swapped('a', 'b');
    CHECK(nc_spec_tokenizers_match(tok, other) < 0 && strstr(nc_error(), "token id 97"),
          "a different token is noticed: %s", nc_error());
    nc_tokenizer_free(other);
    other = byte_tokenizer_swapped(ASSIST_END, PY_START);
    CHECK(nc_spec_tokenizers_match(tok, other) < 0 && strstr(nc_error(), "<|assistant_end|>"),
          "a moved special token is noticed: %s", nc_error());
    nc_tokenizer_free(other);
}

/* ==== prompt lookup ==== */

static void test_lookup(void) {
    int32_t t[] = {1, 2, 3, 4, 5, 9, 2, 3, 4, 7, 8, 1, 2, 3, 4};
    int32_t out[8], n;
    int32_t m = nc_spec_lookup(t, 15, 1, 3, 4, out, &n);
    CHECK(m == 4 && n == 3 && out[0] == 7 && out[1] == 8 && out[2] == 1 && out[3] == 2,
          "the newest earlier 3-gram's continuation: %d tokens, n %d", m, n);
    m = nc_spec_lookup(t, 11, 1, 3, 4, out, &n); /* ends "7 8": only 1-gram... none earlier */
    CHECK(m == 0 && n == 0, "no earlier occurrence: %d", m);
    int32_t u[] = {5, 6, 5, 6, 5};
    m = nc_spec_lookup(u, 5, 1, 3, 8, out, &n); /* periodic: the continuation may overlap the suffix */
    CHECK(m == 2 && n == 3 && out[0] == 6 && out[1] == 5, "periodic text: %d tokens, n %d", m, n);
    m = nc_spec_lookup(t, 15, 2, 2, 2, out, &n);
    CHECK(m == 2 && n == 2 && out[0] == 7 && out[1] == 8, "a fixed n-gram size: %d, n %d", m, n);
}

int main(void) {
    tok = byte_tokenizer();
    test_lookup();
    test_tokenizer_match();
    test_greedy();
    test_stop_mid_chunk();
    test_sampled_same_seed();
    test_draft_failure();
    test_pricing();
    test_default_per_backend();
    test_distribution();
    nc_tokenizer_free(tok);
    return check_summary("test_spec");
}
