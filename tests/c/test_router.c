/*
 * test_router.c: how the server spreads requests over several engines
 * (docs/multi-device.md, Routing): the router's rules on hand-made engine
 * states, the session-key table, --devices lists, and the two scheduler
 * hooks the engines need - how much of a prompt a prefix cache holds, and
 * failing every request of an engine whose device died - on the mock
 * backend of test_scheduler.c.
 */
#include <string.h>

#include "check.h"
#include "sched_mock.h"
#include "server/srv.h"

/* ==== the rules ==== */

static nc_route_engine eng(bool serving, int load, int capacity, int cached) {
    nc_route_engine e = {serving, load, capacity, cached};
    return e;
}

static void test_choose(void) {
    nc_route_engine e[3];
    /* Nothing serves: nowhere to go. */
    e[0] = eng(false, 0, 8, 0), e[1] = eng(false, 0, 8, 0);
    CHECK(nc_route_choose(e, 2, -1, 0) == -1, "no engine serving");
    /* Equal loads: the tie rotates with the turn. */
    e[0] = eng(true, 0, 8, 0), e[1] = eng(true, 0, 8, 0), e[2] = eng(true, 0, 8, 0);
    for (unsigned t = 0; t < 6; t++) CHECK(nc_route_choose(e, 3, -1, t) == (int)(t % 3), "tie, turn %u", t);
    /* The least outstanding work. */
    e[0] = eng(true, 3, 8, 0), e[1] = eng(true, 1, 8, 0), e[2] = eng(true, 2, 8, 0);
    CHECK(nc_route_choose(e, 3, -1, 0) == 1 && nc_route_choose(e, 3, -1, 2) == 1, "least loaded");
    /* ... among those that serve. */
    e[1].serving = false;
    CHECK(nc_route_choose(e, 3, -1, 0) == 2, "a failed engine is passed by");
    /* A session stays on its engine while it has room, even when busier. */
    e[0] = eng(true, 5, 8, 0), e[1] = eng(true, 0, 8, 0);
    CHECK(nc_route_choose(e, 2, 0, 1) == 0, "sticky, not saturated");
    e[0].load = 8;
    CHECK(nc_route_choose(e, 2, 0, 0) == 1, "sticky but saturated, room elsewhere");
    e[1].load = 9;
    CHECK(nc_route_choose(e, 2, 0, 1) == 0, "sticky and saturated, no room elsewhere either");
    e[0] = eng(false, 0, 8, 0), e[1] = eng(true, 2, 8, 0);
    CHECK(nc_route_choose(e, 2, 0, 0) == 1, "sticky engine failed");
    /* The most whole cached blocks of the prompt: 0, 2 and 1 blocks. */
    e[0] = eng(true, 0, 8, 0), e[1] = eng(true, 5, 8, 130), e[2] = eng(true, 0, 8, 70);
    CHECK(nc_route_choose(e, 3, -1, 0) == 1, "longest cached prefix");
    /* Equally many blocks (128 and 150 tokens: 2 each): the less loaded. */
    e[0] = eng(true, 3, 8, 128), e[1] = eng(true, 1, 8, 150), e[2] = eng(true, 0, 8, 0);
    CHECK(nc_route_choose(e, 3, -1, 0) == 1, "cached prefix tie");
    /* Less than a block counts for nothing (every chat shares its first tokens). */
    e[0] = eng(true, 3, 8, 63), e[1] = eng(true, 1, 8, 10), e[2] = eng(true, 2, 8, 0);
    CHECK(nc_route_choose(e, 3, -1, 0) == 1, "partial block");
    /* A saturated cache holder yields to room elsewhere; a failed one counts for nothing. */
    e[0] = eng(true, 8, 8, 640), e[1] = eng(true, 2, 8, 0), e[2] = eng(true, 1, 8, 0);
    CHECK(nc_route_choose(e, 3, -1, 0) == 2, "cache holder saturated");
    e[0] = eng(false, 0, 8, 640);
    CHECK(nc_route_choose(e, 3, -1, 0) == 2, "cache holder failed");
    /* The session key wins over the cached prefix. */
    e[0] = eng(true, 1, 8, 640), e[1] = eng(true, 1, 8, 0);
    CHECK(nc_route_choose(e, 2, 1, 0) == 1, "sticky over prefix");
}

/* ==== session keys ==== */

static void test_sessions(void) {
    nc_session_table *t = nc_session_table_new(16, 60);
    CHECK(nc_session_lookup(t, "alice", 0) == -1, "unknown key");
    nc_session_store(t, "alice", 1, 0);
    nc_session_store(t, "bob", 0, 1);
    CHECK(nc_session_lookup(t, "alice", 30) == 1 && nc_session_lookup(t, "bob", 30) == 0, "stored keys");
    nc_session_store(t, "alice", 2, 40);
    CHECK(nc_session_lookup(t, "alice", 90) == 2, "moved, and kept 60 s from its last use");
    CHECK(nc_session_lookup(t, "bob", 90) == -1, "expired 60 s after its last use");
    /* Far more keys than slots: each key stored last is found, the table holds at most 16. */
    int found = 0;
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "user-%d", i);
        nc_session_store(t, key, i % 3, 100 + i);
        CHECK(nc_session_lookup(t, key, 100 + i) == i % 3, "key %d right after storing it", i);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "user-%d", i);
        found += nc_session_lookup(t, key, 300) >= 0;
    }
    CHECK(found > 0 && found <= 16, "%d of 200 keys kept in 16 slots", found);
    nc_session_table_free(t);
}

/* ==== --devices ==== */

static void expect_devices(const char *list, int tp, int threads, int gpus, const char *want) {
    nc_server_device d[NC_SERVER_MAX_ENGINES];
    int n = 0;
    char why[256], got[8192] = "";
    if (nc_server_parse_devices(list, tp, threads, gpus, d, &n, why, sizeof why)) {
        CHECK(0, "'%s' (tp %d): %s", list, tp, why);
        return;
    }
    for (int i = 0; i < n; i++) {
        size_t len = strlen(got);
        snprintf(got + len, sizeof got - len, "%s%s/%d", i ? " " : "", d[i].name, d[i].threads);
    }
    CHECK(!strcmp(got, want), "'%s' (tp %d, %d threads, %d GPUs): %s, want %s", list, tp, threads, gpus, got, want);
}

static void expect_refused(const char *list, int tp, int gpus, const char *says) {
    nc_server_device d[NC_SERVER_MAX_ENGINES];
    int n = 0;
    char why[256] = "";
    CHECK(nc_server_parse_devices(list, tp, 0, gpus, d, &n, why, sizeof why) < 0 && strstr(why, says),
          "'%s' (tp %d) refused saying '%s': %s", list, tp, says, why);
}

static void test_devices(void) {
    expect_devices("cpu,cpu", 0, 8, 0, "cpu/4 cpu/4");
    expect_devices("cpu,cpu,cpu", 0, 2, 0, "cpu/1 cpu/1 cpu/1");
    expect_devices("cpu:6,cpu", 0, 8, 0, "cpu/6 cpu/8");
    expect_devices("cuda:1,cuda:0", 0, 0, 2, "cuda:1/0 cuda:0/0");
    expect_devices("all", 0, 0, 3, "cuda:0/0 cuda:1/0 cuda:2/0");
    expect_devices("all", 2, 0, 4, "cuda:0+1/0 cuda:2+3/0");
    expect_devices("cuda:3,cuda:1,cuda:0,cuda:2", 2, 0, 0, "cuda:3+1/0 cuda:0+2/0");
    expect_devices("cuda:0+1,cuda:2+3", 0, 0, 0, "cuda:0+1/0 cuda:2+3/0");
    expect_refused("all", 0, 0, "sees none");
    expect_refused("all", 2, 3, "3 GPUs do not split");
    expect_refused("cuda:0+1,cuda:2", 2, 0, "names its GPUs already");
    expect_refused("cuda:0,cuda:1+0", 0, 0, "GPU 0 is listed twice");
    expect_refused("cpu,cuda:0", 0, 0, "mixed");
    expect_refused("cpu,cpu", 2, 0, "needs GPUs");
    expect_refused("cpu:0", 0, 0, "cpu:THREADS");
    expect_refused("cpu:2x", 0, 0, "cpu:THREADS");
    expect_refused("auto", 0, 0, "not a device");
    expect_refused(",", 0, 0, "no devices");
}

/* ==== the scheduler hooks ==== */

static nc_tokenizer *tok;

static nc_scheduler *make_sched(mock *m, int max_running) {
    nc_scheduler_params sp = {.max_running = max_running};
    nc_scheduler *s = nc_scheduler_create(&m->b, tok, &sp);
    CHECK(s != NULL, "create: %s", nc_error());
    return s;
}

static void test_cached_prefix(void) {
    mock *m = mock_new(64, 4, 256, false);
    nc_scheduler *s = make_sched(m, 0);
    int32_t conv[2048];
    int n = chat_prompt("Say something, then Stop. This first message is long enough to fill a block or two of KV "
                        "cache, so that reuse crosses block boundaries.", conv);
    CHECK(nc_scheduler_cached_prefix(s, conv, n) == 0, "nothing cached before any request");
    nc_gen_params p = greedy(40);
    collector *c = calloc(1, sizeof *c);
    nc_scheduler_submit(s, conv, n, &p, on_event, c, NULL);
    run_all(s);
    ref_out ref;
    ref_generate(conv, n, 40, 1024, true, &ref);
    check_matches_ref("the first turn", c, 0, &ref);
    /* The finished row's computed positions are cached: every token but the terminal one. */
    int computed = n + c->n[0] - 1;
    memcpy(conv + n, c->toks[0], sizeof(int32_t) * (size_t)c->n[0]);
    conv[n + c->n[0]] = USER_START;
    CHECK(nc_scheduler_cached_prefix(s, conv, n + c->n[0] + 1) == computed, "the next turn: %d cached, want %d",
          nc_scheduler_cached_prefix(s, conv, n + c->n[0] + 1), computed);
    CHECK(nc_scheduler_cached_prefix(s, conv, 10) == 10, "a shorter prompt inside the cached sequence");
    int32_t other[64];
    int no = chat_prompt("Say nothing", other);
    CHECK(nc_scheduler_cached_prefix(s, other, no) == 6, "shares <|bos|><|user_start|>Say : %d",
          nc_scheduler_cached_prefix(s, other, no));
    nc_scheduler_free(s);
    mock_free(m);
    free(c);
}

typedef struct {
    collector c;
    char error[64];
} failing_collector;

static bool on_failing_event(void *user, const nc_gen_event *ev) {
    failing_collector *f = user;
    if (ev->finish == NC_FINISH_ERROR && ev->error) snprintf(f->error, sizeof f->error, "%s", ev->error);
    return on_event(&f->c, ev);
}

static void test_fail_all(void) {
    mock *m = mock_new(64, 4, 256, false);
    nc_scheduler *s = make_sched(m, 2);
    enum { N = 5 };
    failing_collector *f = calloc(N, sizeof *f);
    int32_t prompt[64];
    char text[32];
    nc_gen_params p = greedy(30);
    p.n = 2; /* two rows each: only one request runs at a time */
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "request %d", i);
        int np = chat_prompt(text, prompt);
        CHECK(nc_scheduler_submit(s, prompt, np, &p, on_failing_event, &f[i], NULL) == 0, "submit %d", i);
    }
    nc_scheduler_step(s);
    nc_scheduler_step(s); /* request 0 runs, 1 and 2 wait */
    int np = chat_prompt("request 3", prompt);
    nc_scheduler_submit(s, prompt, np, &p, on_failing_event, &f[3], NULL); /* not yet taken in */
    int forwards = m->n_log;
    nc_scheduler_fail_all(s, "the device is gone");
    for (int i = 0; i < 4; i++)
        for (int r = 0; r < 2; r++)
            CHECK(f[i].c.n_finish_events[r] == 1 && f[i].c.finish[r] == NC_FINISH_ERROR &&
                      !strcmp(f[i].error, "the device is gone"),
                  "request %d row %d: %d finishes, reason %d, '%s'", i, r, f[i].c.n_finish_events[r], f[i].c.finish[r],
                  f[i].error);
    nc_scheduler_stats st;
    nc_scheduler_get_stats(s, &st);
    CHECK(st.queued == 0 && st.running_requests == 0 && st.kv_blocks_used == 0, "nothing left: %d queued, %d "
          "running, %d blocks", st.queued, st.running_requests, st.kv_blocks_used);
    /* Later arrivals fail at the next call too, and the backend is never called again. */
    np = chat_prompt("request 4", prompt);
    nc_scheduler_submit(s, prompt, np, &p, on_failing_event, &f[4], NULL);
    CHECK(nc_scheduler_wait_for_work(s, 0.01), "the new request is work");
    nc_scheduler_fail_all(s, "the device is gone");
    CHECK(f[4].c.finish[0] == NC_FINISH_ERROR && f[4].c.finish[1] == NC_FINISH_ERROR, "a later request fails");
    CHECK(m->n_log == forwards, "no forward pass after the failure (%d, then %d)", forwards, m->n_log);
    CHECK(!nc_scheduler_wait_for_work(s, 0.01), "no work left");
    nc_scheduler_free(s);
    mock_free(m);
    free(f);
}

int main(void) {
    tok = byte_tokenizer();
    if (!tok) {
        fprintf(stderr, "tokenizer: %s\n", nc_error());
        return 1;
    }
    test_choose();
    test_sessions();
    test_devices();
    test_cached_prefix();
    test_fail_all();
    nc_tokenizer_free(tok);
    return check_summary("test_router");
}
