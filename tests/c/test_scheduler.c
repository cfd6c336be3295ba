/*
 * test_scheduler.c: the continuous-batching scheduler against a mock
 * backend and a reference generator written from docs/model.md (Sampling,
 * Calculator): nanochat's Engine.generate rules.
 *
 * The mock backend keeps, for every KV slot, the token written there. A
 * chunk's logits are computed from the history it READS BACK through its
 * block table (positions 0..pos-1) plus its own tokens, so any mistake in
 * block tables, sharing, copying, forking or prefix reuse changes the
 * history and therefore the tokens. The "model" (next_token) is scripted:
 * a '#' in the prompt makes it call the calculator (<|python_start|> 6*7
 * <|python_end|>), an 'S' makes it stop after three tokens, a 'Q' makes it
 * repeat the prompt's text after the Q (test_spec.c's quoting replies),
 * otherwise it emits a letter that hashes the history.
 *
 * The reference generator (ref_generate) applies nanochat's rules to the
 * same script directly - forcing <|output_start|> 4 2 <|output_end|> after
 * the expression, stop tokens, max_tokens - with no scheduler, no cache.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "sched_mock.h"
#include "util/common.h"

/* ==== tests ==== */

static nc_tokenizer *tok;

static nc_scheduler *make_sched(mock *m, int max_context, int max_running, int prefill_chunk, int max_queue) {
    nc_scheduler_params sp = {.max_context = max_context, .max_running = max_running,
                              .prefill_chunk = prefill_chunk, .max_queue = max_queue};
    nc_scheduler *s = nc_scheduler_create(&m->b, tok, &sp);
    CHECK(s != NULL, "create: %s", nc_error());
    return s;
}

/* One greedy request alone: plain text, stop token, calculator, lengths. */
static void test_single(bool device) {
    struct { const char *text; int max_tokens; bool calc; } cases[] = {
        {"hello there", 20, true},      /* hash letters until max_tokens */
        {"Stop soon", 50, true},        /* 'S': <|assistant_end|> after 3 tokens */
        {"what is # 6*7?", 50, true},   /* calculator: forced <|output_start|>42<|output_end|> */
        {"what is # 6*7?", 50, false},  /* tool off: nothing forced */
        {"what is # 6*7?", 7, true},    /* max_tokens lands inside the forced run */
        {"what is # 6*7?", 5, true},    /* ... and right on <|python_end|> */
    };
    for (size_t k = 0; k < NC_ARRAY_LEN(cases); k++) {
        mock *m = mock_new(64, 8, 256, device);
        nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
        int32_t prompt[256];
        int np = chat_prompt(cases[k].text, prompt);
        nc_gen_params p = greedy(cases[k].max_tokens);
        p.use_calculator = cases[k].calc;
        collector *c = calloc(1, sizeof *c);
        uint64_t id = 0;
        CHECK(nc_scheduler_submit(s, prompt, np, &p, on_event, c, &id) == 0, "submit: %s", nc_error());
        CHECK(id > 0, "request id");
        run_all(s);
        ref_out ref;
        ref_generate(prompt, np, cases[k].max_tokens, 1024, cases[k].calc, &ref);
        char what[96];
        snprintf(what, sizeof what, "single '%s' max %d calc %d dev %d", cases[k].text, cases[k].max_tokens,
                 cases[k].calc, device);
        check_matches_ref(what, c, 0, &ref);
        CHECK(c->events_after_finish == 0, "%s: events after finish", what);
        if (ref.finish == NC_FINISH_STOP) CHECK(c->terminal_seen[0], "%s: terminal flagged", what);
        nc_scheduler_stats st;
        nc_scheduler_get_stats(s, &st);
        CHECK(st.kv_blocks_used == 0 && st.running_rows == 0 && st.queued == 0, "%s: idle after", what);
        CHECK(st.tokens_prefilled == np, "%s: prefilled %lld of %d", what, (long long)st.tokens_prefilled, np);
        nc_scheduler_free(s);
        mock_free(m);
        free(c);
    }
    /* The scripted calculator really forced the tool's tokens. */
    mock *m = mock_new(64, 8, 256, device);
    nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
    int32_t prompt[64];
    int np = chat_prompt("#", prompt);
    nc_gen_params p = greedy(50);
    collector *c = calloc(1, sizeof *c);
    nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
    run_all(s);
    const int32_t want[] = {PY_START, '6', '*', '7', PY_END, OUT_START, '4', '2', OUT_END, ASSIST_END};
    const bool wantf[] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 0};
    bool same = c->n[0] == 10;
    for (int i = 0; i < 10 && same; i++) same = c->toks[0][i] == want[i] && c->forced[0][i] == wantf[i];
    CHECK(same, "calculator transcript (dev %d): %d tokens", device, c->n[0]);
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

/* Submit-time refusals: context, queue, params, vocabulary, pool. */
static void test_refusals(void) {
    mock *m = mock_new(8, 4, 64, false);
    nc_scheduler *s = make_sched(m, 40, 0, 0, 2);
    int32_t prompt[64];
    for (int i = 0; i < 64; i++) prompt[i] = 'x';
    nc_gen_params p = greedy(10);
    collector *c = calloc(1, sizeof *c);
    CHECK(nc_scheduler_submit(s, prompt, 40, &p, on_event, c, NULL) < 0 && strstr(nc_error(), "40"),
          "prompt filling the context refused, naming the limit: %s", nc_error());
    CHECK(nc_scheduler_submit(s, prompt, 0, &p, on_event, c, NULL) < 0, "empty prompt refused");
    prompt[3] = V + 5;
    CHECK(nc_scheduler_submit(s, prompt, 10, &p, on_event, c, NULL) < 0, "token outside the vocabulary refused");
    prompt[3] = 'x';
    nc_gen_params bad = p;
    bad.temperature = -1;
    CHECK(nc_scheduler_submit(s, prompt, 10, &bad, on_event, c, NULL) < 0 && strstr(nc_error(), "temperature"),
          "bad temperature refused: %s", nc_error());
    bad = p;
    bad.top_p = 0;
    CHECK(nc_scheduler_submit(s, prompt, 10, &bad, on_event, c, NULL) < 0, "top_p 0 refused");
    bad = p;
    bad.n = 5;
    CHECK(nc_scheduler_submit(s, prompt, 10, &bad, on_event, c, NULL) < 0, "n beyond max_running refused");
    CHECK(nc_scheduler_submit(s, prompt, 10, &p, on_event, c, NULL) == 0, "first queued");
    CHECK(nc_scheduler_submit(s, prompt, 10, &p, on_event, c, NULL) == 0, "second queued");
    CHECK(nc_scheduler_submit(s, prompt, 10, &p, on_event, c, NULL) < 0 && strstr(nc_error(), "queue"),
          "third refused: queue full (%s)", nc_error());
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    CHECK(st.queued == 2, "two queued, got %d", st.queued);
    nc_scheduler_free(s);
    mock_free(m);

    /* A request whose worst case exceeds the whole pool can never run. */
    m = mock_new(4, 4, 64, false);
    s = make_sched(m, 1000, 0, 0, 0);
    p = greedy(500);
    CHECK(nc_scheduler_submit(s, prompt, 10, &p, on_event, c, NULL) < 0 && strstr(nc_error(), "KV"),
          "too big for the pool: %s", nc_error());
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

/* The context limit ends generation with "length". */
static void test_context_limit(void) {
    mock *m = mock_new(16, 4, 64, false);
    nc_scheduler *s = make_sched(m, 48, 0, 0, 0);
    const char *text = "a prompt of some thirty tokens....";
    int np = 4 + (int)strlen(text); /* 38 tokens */
    collector *c = run_greedy_checked(s, "context limit", text, 100, 48);
    CHECK(c->n[0] == 48 - np && c->finish[0] == NC_FINISH_LENGTH, "stops at the context: %d tokens", c->n[0]);
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

/* n > 1: prefill once, fork; each row equals a lone n = 1 request with
 * seed + row. Prompts across a block boundary (shared full blocks plus a
 * copied partial one) and exactly on one. */
static void test_fork(bool device) {
    for (int plen = 100; plen <= 124; plen += 24) { /* 100 + 4 = 104 tokens; 124 + 4 = 128 */
        char text[256];
        for (int i = 0; i < plen; i++) text[i] = (char)('a' + (i * 7) % 26);
        text[plen] = 0;
        int32_t prompt[300];
        int np = chat_prompt(text, prompt);
        nc_gen_params p = nc_gen_params_default();
        p.temperature = 1.0f;
        p.seed = 1234;
        p.max_tokens = 40;
        p.n = 4;
        mock *m = mock_new(64, 8, 256, device);
        nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
        collector *c = calloc(1, sizeof *c);
        nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
        run_all(s);
        nc_scheduler_stats st;
        nc_scheduler_get_stats(s, &st);
        CHECK(st.tokens_prefilled == np, "fork: prompt prefilled once (%lld vs %d)", (long long)st.tokens_prefilled, np);
        CHECK(st.kv_blocks_used == 0, "fork: blocks released");
        int distinct = 0;
        for (int r = 0; r < 4; r++) {
            nc_gen_params one = p;
            one.n = 1;
            one.seed = p.seed + (uint64_t)r;
            mock *m1 = mock_new(64, 8, 256, device);
            nc_scheduler *s1 = make_sched(m1, 0, 0, 0, 0);
            collector *c1 = calloc(1, sizeof *c1);
            nc_scheduler_submit(s1, prompt, np, &one, on_event, c1, NULL);
            run_all(s1);
            bool same = c1->n[0] == c->n[r] && !memcmp(c1->toks[0], c->toks[r], sizeof(int32_t) * (size_t)c->n[r]);
            CHECK(same, "fork (prompt %d, dev %d): row %d differs from a lone request with seed+%d", np, device, r, r);
            CHECK(c->n_finish_events[r] == 1, "fork: one finish per row");
            if (r > 0 && memcmp(c->toks[r], c->toks[0], sizeof(int32_t) * 10)) distinct++;
            nc_scheduler_free(s1);
            mock_free(m1);
            free(c1);
        }
        CHECK(distinct > 0, "fork: rows sample independently");
        nc_scheduler_free(s);
        mock_free(m);
        free(c);
    }
    /* greedy n = 3: every row is the greedy continuation */
    int32_t prompt[64];
    int np = chat_prompt("greedy fork", prompt);
    nc_gen_params p = greedy(30);
    p.n = 3;
    mock *m = mock_new(64, 8, 256, device);
    nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
    collector *c = calloc(1, sizeof *c);
    nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
    run_all(s);
    ref_out ref;
    ref_generate(prompt, np, 30, 1024, true, &ref);
    for (int r = 0; r < 3; r++) check_matches_ref("greedy fork", c, r, &ref);
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

/* Cancel frees blocks at the next step; queued cancels end every row, and
 * leave the queue's count before their final events (a server answering
 * the client on that event must find the place free); a callback returning
 * true ends its row with CANCELLED. */
static void test_cancel(void) {
    mock *m = mock_new(32, 4, 64, false);
    nc_scheduler *s = make_sched(m, 0, 2, 0, 0);
    int32_t prompt[64];
    int np = chat_prompt("long one", prompt);
    nc_gen_params p = greedy(500);
    collector *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *q = calloc(1, sizeof *q);
    uint64_t ida, idb, idq;
    nc_scheduler_submit(s, prompt, np, &p, on_event, a, &ida);
    nc_gen_params p2 = p;
    p2.n = 2;
    q->sched = s;
    q->queued_at_finish[0] = q->queued_at_finish[1] = -1;
    nc_scheduler_submit(s, prompt, np, &p2, on_event, q, &idq); /* waits: max_running 2 */
    for (int i = 0; i < 5; i++) nc_scheduler_step(s);
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    CHECK(st.kv_blocks_used > 0 && st.queued == 1, "running one, one queued (used %d, queued %d)",
          st.kv_blocks_used, st.queued);
    nc_scheduler_cancel(s, idq);
    nc_scheduler_cancel(s, ida);
    nc_scheduler_cancel(s, 987654); /* unknown: ignored */
    CHECK(nc_scheduler_wait_for_work(s, 0.01), "cancel is work");
    nc_scheduler_step(s);
    nc_scheduler_get_stats(s, &st);
    CHECK(st.kv_blocks_used == 0 && st.running_rows == 0 && st.queued == 0,
          "blocks freed at once (used %d, rows %d, queued %d)", st.kv_blocks_used, st.running_rows, st.queued);
    CHECK(a->finish[0] == NC_FINISH_CANCELLED && a->n_finish_events[0] == 1 && a->n[0] == 5,
          "running request cancelled after 5 tokens (%d)", a->n[0]);
    CHECK(q->finish[0] == NC_FINISH_CANCELLED && q->finish[1] == NC_FINISH_CANCELLED && q->n[0] == 0,
          "queued request: both rows cancelled");
    CHECK(q->queued_at_finish[0] == 0 && q->queued_at_finish[1] == 0,
          "queued request: still counted as queued at its final events (%d, %d)", q->queued_at_finish[0],
          q->queued_at_finish[1]);
    CHECK(nc_scheduler_step(s) == 0, "nothing left");
    CHECK(!nc_scheduler_wait_for_work(s, 0.01), "no work when idle");

    b->stop_after = 3;
    nc_scheduler_submit(s, prompt, np, &p, on_event, b, &idb);
    run_all(s);
    CHECK(b->n[0] == 3 && b->finish[0] == NC_FINISH_CANCELLED && b->n_finish_events[0] == 1,
          "callback stop: %d tokens, finish %s", b->n[0], nc_finish_reason_name(b->finish[0]));
    nc_scheduler_get_stats(s, &st);
    CHECK(st.kv_blocks_used == 0, "callback stop frees blocks");
    nc_scheduler_free(s);
    mock_free(m);
    free(a);
    free(b);
    free(q);
}

/* A second chat turn reuses the first turn's KV: only new tokens are
 * prefilled, and the answer is what a cold start gives. */
static void test_prefix_reuse(void) {
    mock *m = mock_new(64, 4, 256, false);
    nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
    int32_t conv[2048];
    int n = chat_prompt("Say something, then Stop. This first message is long enough to fill a block or two of KV "
                        "cache, so that reuse crosses block boundaries.", conv);
    nc_gen_params p = greedy(40);
    collector *c1 = calloc(1, sizeof *c1);
    nc_scheduler_submit(s, conv, n, &p, on_event, c1, NULL);
    run_all(s);
    CHECK(c1->finish[0] == NC_FINISH_STOP, "turn 1 stops");
    int computed = n + c1->n[0] - 1; /* every token but the terminal was fed */
    memcpy(conv + n, c1->toks[0], sizeof(int32_t) * (size_t)c1->n[0]);
    n += c1->n[0];
    conv[n++] = USER_START;
    for (const char *t = "and #?"; *t; t++) conv[n++] = (uint8_t)*t;
    conv[n++] = USER_END;
    conv[n++] = ASSIST_START;
    nc_scheduler_stats before, after;
    nc_scheduler_get_stats(s, &before);
    CHECK(before.kv_blocks_cached > 0, "turn 1 left cached blocks (%d)", before.kv_blocks_cached);
    collector *c2 = calloc(1, sizeof *c2);
    int log_start = m->n_log;
    nc_scheduler_submit(s, conv, n, &p, on_event, c2, NULL);
    run_all(s);
    nc_scheduler_get_stats(s, &after);
    CHECK(c2->n_cached == computed, "turn 2 reused %d tokens, want %d", c2->n_cached, computed);
    CHECK(after.tokens_prefilled - before.tokens_prefilled == n - computed, "turn 2 prefilled %lld, want %d",
          (long long)(after.tokens_prefilled - before.tokens_prefilled), n - computed);
    CHECK(m->log[log_start].first_pos == computed, "first chunk starts at %d", m->log[log_start].first_pos);
    CHECK(after.tokens_cached - before.tokens_cached == computed, "stats.tokens_cached");
    ref_out ref;
    ref_generate(conv, n, 40, 1024, true, &ref);
    check_matches_ref("turn 2 after reuse", c2, 0, &ref);

    /* A different conversation sharing only <|bos|><|user_start|>Say...:
     * partial reuse; then the pool is made to need the cached blocks. */
    int32_t other[256];
    int no = chat_prompt("Say nothing", other);
    collector *c3 = calloc(1, sizeof *c3);
    nc_scheduler_submit(s, other, no, &p, on_event, c3, NULL);
    run_all(s);
    CHECK(c3->n_cached == 6, "shares <|bos|><|user_start|>Say  (%d)", c3->n_cached);
    ref_generate(other, no, 40, 1024, true, &ref);
    check_matches_ref("partial reuse", c3, 0, &ref);

    /* The same prompt again (regenerate): all but its last token reused. */
    collector *c4 = calloc(1, sizeof *c4);
    nc_scheduler_submit(s, other, no, &p, on_event, c4, NULL);
    run_all(s);
    CHECK(c4->n_cached == no - 1, "regenerate reuses %d, want %d", c4->n_cached, no - 1);
    check_matches_ref("regenerate", c4, 0, &ref);
    free(c4);
    nc_scheduler_free(s);
    mock_free(m);
    free(c1);
    free(c2);
    free(c3);
}

/* A long prompt arriving while another request decodes is prefilled in
 * chunks beside the decode rows; the running stream never pauses. */
static void test_chunked_prefill(void) {
    mock *m = mock_new(64, 8, 64, false);
    nc_scheduler *s = make_sched(m, 0, 0, 16, 0);
    int32_t pa[64], pb[512];
    int na = chat_prompt("short", pa);
    char text[300];
    for (int i = 0; i < 250; i++) text[i] = (char)('a' + i % 26);
    text[250] = 0;
    int nb = chat_prompt(text, pb);
    nc_gen_params p = greedy(60);
    p.speculative = false; /* one token per decode step, to count them (test_spec.c speculates) */
    collector *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    nc_scheduler_submit(s, pa, na, &p, on_event, a, NULL);
    nc_scheduler_step(s); /* prefill A (16-token chunks would split a 9-token prompt: it fits) */
    nc_scheduler_step(s);
    int log0 = m->n_log, first_a = a->n[0];
    nc_scheduler_submit(s, pb, nb, &p, on_event, b, NULL);
    int steps = 0;
    while (b->n[0] == 0 && steps < 100) {
        nc_scheduler_step(s);
        steps++;
    }
    int expect_steps = (nb + 15) / 16;
    CHECK(steps == expect_steps, "B's %d-token prompt took %d steps, want %d (16 per step)", nb, steps, expect_steps);
    CHECK(a->n[0] - first_a == steps, "A produced a token every step during B's prefill (%d in %d)",
          a->n[0] - first_a, steps);
    int mixed = 0;
    for (int i = log0; i < m->n_log; i++) {
        mixed += m->log[i].n_decode == 1 && m->log[i].n_prefill == 1;
        CHECK(m->log[i].max_chunk <= 16, "chunk of %d > prefill_chunk", m->log[i].max_chunk);
    }
    CHECK(mixed == steps, "%d batches mixed a decode row and a prefill chunk, want %d", mixed, steps);
    run_all(s);
    ref_out ref;
    ref_generate(pb, nb, 60, 1024, true, &ref);
    check_matches_ref("chunked B", b, 0, &ref);
    ref_generate(pa, na, 60, 1024, true, &ref);
    check_matches_ref("A beside chunked B", a, 0, &ref);
    nc_scheduler_free(s);
    mock_free(m);
    free(a);
    free(b);
}

/* 64 greedy requests of different lengths at once give what each gives
 * alone (the reference); also with a pool too small for all of them, so
 * requests queue for blocks and cached prefixes get evicted. */
static void test_many(int n_blocks, bool device) {
    enum { N = 64 };
    mock *m = mock_new(n_blocks, 64, 512, device);
    nc_scheduler *s = make_sched(m, 0, 64, 32, 0);
    collector *c = calloc(N, sizeof *c);
    static int32_t prompts[N][200];
    int np[N], maxt[N];
    int peak_queued = 0, peak_rows = 0;
    for (int i = 0; i < N; i++) {
        char text[160];
        int len = 3 + (i * 37) % 120;
        for (int k = 0; k < len; k++) text[k] = (char)('a' + (i * 5 + k * 3) % 26);
        text[len] = 0;
        if (i % 5 == 0) text[1] = '#';
        if (i % 7 == 0) text[0] = 'S';
        np[i] = chat_prompt(text, prompts[i]);
        maxt[i] = 5 + (i * 13) % 60;
        nc_gen_params p = greedy(maxt[i]);
        CHECK(nc_scheduler_submit(s, prompts[i], np[i], &p, on_event, &c[i], NULL) == 0, "submit %d: %s", i,
              nc_error());
    }
    int left, steps = 0;
    while ((left = nc_scheduler_step(s)) > 0 && steps++ < 10000) {
        nc_scheduler_stats st;
        nc_scheduler_get_stats(s, &st);
        peak_queued = NC_MAX(peak_queued, st.queued);
        peak_rows = NC_MAX(peak_rows, st.running_rows);
        CHECK(st.kv_blocks_used + st.kv_blocks_cached <= st.kv_blocks_total, "block accounting");
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        ref_out ref;
        ref_generate(prompts[i], np[i], maxt[i], 1024, true, &ref);
        bool same = c[i].n[0] == ref.n && !memcmp(c[i].toks[0], ref.toks, sizeof(int32_t) * (size_t)ref.n) &&
                    c[i].finish[0] == ref.finish && c[i].n_finish_events[0] == 1;
        if (!same && bad++ < 3) fprintf(stderr, "request %d: %d tokens vs %d\n", i, c[i].n[0], ref.n);
    }
    CHECK(bad == 0, "%d of 64 concurrent requests differ from their lone reference (pool %d, dev %d)", bad, n_blocks,
          device);
    if (n_blocks < 100) CHECK(peak_queued > 0, "a small pool makes requests wait (peak queue %d)", peak_queued);
    else CHECK(peak_rows > 32, "many rows decode together (peak %d)", peak_rows);
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    CHECK(st.kv_blocks_used == 0 && st.running_requests == 0, "all released");
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

/* Sampling on the device (forward_sample) and on the host give the same
 * tokens for the same seeds, forced calculator steps included, and a
 * request's tokens do not depend on what else is in the batch. */
static void test_sampled_paths(void) {
    enum { N = 12 };
    collector *res[3];
    for (int mode = 0; mode < 3; mode++) { /* 0 host batched, 1 device batched, 2 host one at a time */
        res[mode] = calloc(N, sizeof(collector));
        mock *m = mock_new(256, 16, 512, mode == 1);
        nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
        for (int i = 0; i < N; i++) {
            int32_t prompt[64];
            char text[32];
            snprintf(text, sizeof text, "%s sample %d", i % 3 == 0 ? "#" : "x", i);
            int np = chat_prompt(text, prompt);
            nc_gen_params p = nc_gen_params_default();
            p.temperature = 0.9f;
            p.top_k = i % 2 ? 3 : 0;
            p.seed = 100 + (uint64_t)i;
            p.max_tokens = 30;
            nc_scheduler_submit(s, prompt, np, &p, on_event, &res[mode][i], NULL);
            if (mode == 2) run_all(s);
        }
        run_all(s);
        nc_scheduler_free(s);
        mock_free(m);
    }
    for (int i = 0; i < N; i++) {
        CHECK(res[0][i].n[0] == res[1][i].n[0] &&
                  !memcmp(res[0][i].toks[0], res[1][i].toks[0], sizeof(int32_t) * (size_t)res[0][i].n[0]),
              "request %d: device and host sampling differ", i);
        CHECK(res[0][i].n[0] == res[2][i].n[0] &&
                  !memcmp(res[0][i].toks[0], res[2][i].toks[0], sizeof(int32_t) * (size_t)res[0][i].n[0]),
              "request %d: batched and alone differ", i);
    }
    int forced = 0, upper = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < res[0][i].n[0]; k++) {
            forced += res[0][i].forced[0][k];
            upper += res[0][i].toks[0][k] >= 'A' && res[0][i].toks[0][k] <= 'Z';
        }
    CHECK(forced > 0, "some calculator tokens were forced while sampling");
    CHECK(upper > 0, "sampling picked runners-up sometimes");
    for (int mode = 0; mode < 3; mode++) free(res[mode]);
}

/* logprobs: log-softmax of the model's logits (temperature 1, nothing
 * filtered) for the chosen token, whatever the sampling settings. A backend
 * that returns the sampled token's log-probability (sample_logprobs) keeps
 * rows that want only that on the device; alternatives (top_logprobs > 0),
 * or a backend without it, take the host path. */
static void test_logprobs(void) {
    struct { bool dev_logprobs; int top; float temperature; int top_k; bool on_device; } cases[] = {
        {false, 2, 0.0f, 0, false},
        {false, 0, 0.0f, 0, false},
        {true, 2, 0.0f, 0, false},
        {true, 2, 0.9f, 3, false},
        {true, 0, 0.0f, 0, true},
        {true, 0, 0.9f, 3, true},
        {true, 0, 1.3f, 0, true},
    };
    for (size_t t = 0; t < NC_ARRAY_LEN(cases); t++) {
        mock *m = mock_new(64, 4, 256, true);
        if (cases[t].dev_logprobs) m->b.ops = &mock_ops_dev_logprobs;
        nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
        int32_t prompt[64];
        int np = chat_prompt("log probs", prompt);
        nc_gen_params p = greedy(8);
        p.top_logprobs = cases[t].top;
        p.temperature = cases[t].temperature;
        p.top_k = cases[t].top_k;
        p.seed = 7 + t;
        collector *c = calloc(1, sizeof *c);
        nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
        run_all(s);
        CHECK(c->n[0] == 8, "case %zu: %d tokens", t, c->n[0]);
        int32_t h[128];
        memcpy(h, prompt, sizeof(int32_t) * (size_t)np);
        float lg[V];
        for (int k = 0; k < c->n[0]; k++) {
            model_logits(h, np + k, lg);
            double mx = -1e30, sum = 0;
            for (int i = 0; i < V; i++) mx = fmax(mx, lg[i]);
            for (int i = 0; i < V; i++) sum += exp(lg[i] - mx);
            double want = lg[c->toks[0][k]] - mx - log(sum);
            CHECK_NEAR(c->logprob[0][k], want, 1e-5, "case %zu: logprob of token %d", t, k);
            h[np + k] = c->toks[0][k];
        }
        int dev_calls = 0;
        for (int i = 0; i < m->n_log; i++) dev_calls += m->log[i].sample_call;
        if (cases[t].on_device)
            CHECK(dev_calls == m->n_log && dev_calls > 0, "case %zu: %d of %d calls sampled on the device", t,
                  dev_calls, m->n_log);
        else
            CHECK(dev_calls == 0, "case %zu: %d calls sampled on the device", t, dev_calls);
        nc_scheduler_free(s);
        mock_free(m);
        free(c);
    }
}

/* A backend failure ends the rows in the batch with ERROR and a message. */
static void test_backend_failure(void) {
    mock *m = mock_new(64, 4, 256, false);
    nc_scheduler *s = make_sched(m, 0, 0, 0, 0);
    int32_t prompt[64];
    int np = chat_prompt("fail", prompt);
    nc_gen_params p = greedy(20);
    p.n = 2;
    collector *c = calloc(1, sizeof *c);
    nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL);
    nc_scheduler_step(s);
    nc_scheduler_step(s);
    m->fail_next = true;
    CHECK(nc_scheduler_step(s) < 0, "step reports the failure");
    CHECK(c->finish[0] == NC_FINISH_ERROR && c->finish[1] == NC_FINISH_ERROR, "both rows end with ERROR");
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    CHECK(st.kv_blocks_used == 0 && st.running_requests == 0, "failed rows release their blocks");
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

/* submit/cancel from other threads while the engine thread steps. */
typedef struct {
    nc_scheduler *s;
    collector *c;
    int n;
} submitter_arg;

static void *submitter(void *arg) {
    submitter_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        int32_t prompt[64];
        char text[32];
        snprintf(text, sizeof text, "thread %d", i);
        int np = chat_prompt(text, prompt);
        nc_gen_params p = greedy(10 + i % 7);
        uint64_t id;
        while (nc_scheduler_submit(a->s, prompt, np, &p, on_event, &a->c[i], &id) != 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (i % 4 == 3) nc_scheduler_cancel(a->s, id);
    }
    return NULL;
}

static void test_threads(void) {
    enum { N = 40 };
    mock *m = mock_new(128, 16, 256, false);
    nc_scheduler *s = make_sched(m, 0, 0, 0, 8);
    collector *c = calloc(N, sizeof *c);
    submitter_arg arg = {s, c, N};
    pthread_t th;
    pthread_create(&th, NULL, submitter, &arg);
    int finished = 0;
    double t0 = nc_now();
    while (finished < N && nc_now() - t0 < 30) {
        if (nc_scheduler_wait_for_work(s, 0.05)) nc_scheduler_step(s);
        finished = 0;
        for (int i = 0; i < N; i++) finished += c[i].n_finish_events[0] == 1;
    }
    pthread_join(th, NULL);
    CHECK(finished == N, "every request finished exactly once (%d of %d)", finished, N);
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        cancelled += c[i].finish[0] == NC_FINISH_CANCELLED;
        CHECK(c[i].events_after_finish == 0, "request %d: events after its finish", i);
        if (c[i].finish[0] != NC_FINISH_CANCELLED) {
            int32_t prompt[64];
            char text[32];
            snprintf(text, sizeof text, "thread %d", i);
            int np = chat_prompt(text, prompt);
            ref_out ref;
            ref_generate(prompt, np, 10 + i % 7, 1024, true, &ref);
            check_matches_ref("threaded", &c[i], 0, &ref);
        }
    }
    CHECK(cancelled > 0 || true, "cancels raced with completion");
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

int main(void) {
    tok = byte_tokenizer();
    if (!tok) {
        fprintf(stderr, "tokenizer: %s\n", nc_error());
        return 1;
    }
    test_single(false);
    test_single(true);
    test_refusals();
    test_context_limit();
    test_fork(false);
    test_fork(true);
    test_cancel();
    test_prefix_reuse();
    test_chunked_prefill();
    test_many(1024, false);
    test_many(1024, true);
    test_many(40, false);
    test_sampled_paths();
    test_logprobs();
    test_backend_failure();
    test_threads();
    nc_tokenizer_free(tok);
    return check_summary("test_scheduler");
}
