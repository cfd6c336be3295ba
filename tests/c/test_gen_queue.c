/*
 * test_gen_queue.c: the server's per-request event queue and its waker
 * (src/server/gen_queue.c): a consumer blocked in nc_gen_queue_take is
 * woken for every event the engine pushes, in order, whether the queue wakes
 * it inline or through the waker thread (after the engine's per-step kick,
 * or by the waker's own periodic pass when a kick is missed), and the
 * references the waker holds keep a queue alive until its wake-up is done.
 */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "server/gen_queue.h"
#include "util/common.h"

#define N_TOKENS 200

typedef struct {
    nc_gen_queue *q;
    int32_t tokens[N_TOKENS + 8];
    int n_tokens;
    int finish;          /* the finish reason seen, -1: none yet */
    bool done;           /* engine_done reported */
    double first_at;     /* nc_now() when the first token arrived, -1: none yet */
} consumer;

static void *consume(void *arg) {
    consumer *c = arg;
    nc_gq_event ev[16];
    double t0 = nc_now();
    while (!c->done && nc_now() - t0 < 10.0) {
        bool done = false;
        int32_t n = nc_gen_queue_take(c->q, ev, NULL, 16, 5.0, &done);
        if (c->first_at < 0 && n > 0) c->first_at = nc_now();
        for (int32_t i = 0; i < n; i++) {
            if (ev[i].token >= 0 && c->n_tokens < N_TOKENS + 8) c->tokens[c->n_tokens++] = ev[i].token;
            if (ev[i].finish != NC_FINISH_NONE) c->finish = ev[i].finish;
        }
        c->done = done;
    }
    return NULL;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static bool push_token(nc_gen_queue *q, int32_t token, nc_finish_reason finish) {
    nc_gen_event ev;
    memset(&ev, 0, sizeof ev);
    ev.row = 0;
    ev.token = token;
    ev.finish = finish;
    ev.n_prompt_tokens = 3;
    return nc_gen_queue_callback(q, &ev);
}

/* One request of N_TOKENS tokens and a finish: with `waker` (kicked after
 * every `per_step` tokens when kick is true) or inline (waker NULL). The
 * consumer starts blocked, so the first token must wake it. */
static void run_stream(const char *what, nc_gen_waker *waker, bool kick, int per_step) {
    consumer c;
    memset(&c, 0, sizeof c);
    c.finish = -1;
    c.first_at = -1.0;
    c.q = nc_gen_queue_create(1, -1, 4096, NULL, waker);
    CHECK(c.q != NULL, "%s: queue", what);
    if (!c.q) return;
    pthread_t th;
    pthread_create(&th, NULL, consume, &c);
    sleep_s(0.1); /* let the consumer block in take() */
    double pushed_at = nc_now();
    for (int i = 0; i < N_TOKENS; i++) {
        bool last = i == N_TOKENS - 1;
        CHECK(!push_token(c.q, 1000 + i, last ? NC_FINISH_LENGTH : NC_FINISH_NONE), "%s: stop asked", what);
        if (kick && (i + 1) % per_step == 0) nc_gen_waker_kick(waker);
        if ((i + 1) % per_step == 0) sleep_s(0.001); /* a GPU step */
    }
    if (kick) nc_gen_waker_kick(waker);
    pthread_join(th, NULL);
    CHECK(c.done, "%s: the consumer saw the request end", what);
    CHECK(c.n_tokens == N_TOKENS, "%s: %d tokens delivered, %d pushed", what, c.n_tokens, N_TOKENS);
    bool ordered = true;
    for (int i = 0; i < c.n_tokens && i < N_TOKENS; i++) ordered &= c.tokens[i] == 1000 + i;
    CHECK(ordered, "%s: tokens out of order", what);
    CHECK(c.finish == NC_FINISH_LENGTH, "%s: finish %d", what, c.finish);
    /* The consumer blocks before the first push, then is woken: in about a
     * millisecond when pushed inline or kicked, within the waker's 50 ms
     * periodic pass when not. Timed from the first push (not from the
     * consumer's start, which a loaded machine may delay); the limits leave
     * room for such a machine and still tell a wake-up from take()'s own
     * 5 s timeout. */
    double limit = kick || !waker ? 1.0 : 2.0, wait = c.first_at - pushed_at;
    CHECK(c.first_at >= pushed_at && wait < limit, "%s: first token %.3f s after the first push (limit %.2f)",
          what, wait, limit);
    nc_gen_queue_release(c.q); /* the consumer's reference; the engine's went with the finish */
}

/* The consumer gives up (stop_all) while the engine is mid-stream: the
 * next callback asks to stop, and the waker's pending reference keeps the
 * queue alive until the waker has done its wake-up. */
static void run_abandon(nc_gen_waker *waker) {
    nc_gen_queue *q = nc_gen_queue_create(1, -1, 4096, NULL, waker);
    CHECK(q != NULL, "abandon: queue");
    if (!q) return;
    CHECK(!push_token(q, 7, NC_FINISH_NONE), "abandon: stop before the consumer asked");
    nc_gen_queue_stop_all(q);
    nc_gen_queue_release(q); /* the consumer leaves */
    CHECK(push_token(q, 8, NC_FINISH_NONE), "abandon: the engine was not told to stop");
    push_token(q, -1, NC_FINISH_CANCELLED); /* drops the engine's reference */
    nc_gen_waker_kick(waker);               /* the waker's wake-up releases the last one */
}

int main(void) {
    run_stream("inline", NULL, false, 8);
    nc_gen_waker *w = nc_gen_waker_create();
    CHECK(w != NULL, "waker thread");
    if (w) {
        run_stream("waker, kicked every step", w, true, 8);
        run_stream("waker, kicked every token", w, true, 1);
        run_stream("waker, never kicked", w, false, 8);
        for (int i = 0; i < 50; i++) run_abandon(w);
        nc_gen_waker_free(w); /* wakes what is pending, joins the thread */
    }
    return check_summary("test_gen_queue");
}
