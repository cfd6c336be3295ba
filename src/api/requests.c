/*
 * requests.c: many requests at once through the public API
 * (include/nanochat.h: nc_request_*, nc_engine_step): submit, step, read
 * per-row tokens / masks / log-probabilities, cancel, free.
 *
 * A request is the engine's scheduler request plus what its rows have
 * produced so far. The scheduler's callback (on whichever thread steps)
 * appends each token to its row under the engine's req_lock; readers copy
 * under the same lock, so any thread may read while another steps. The
 * scheduler calls a request's callback until its last row's final event,
 * so the handle must outlive that: freeing an unfinished request only
 * marks it and cancels it, and the final event frees it (or
 * nc_engine_close does, after the scheduler is gone). Live requests are
 * kept in a list on the engine for that.
 *
 * Mirrors nanochat's Engine.generate (one request, n rows, token columns,
 * token_masks) for many requests sharing the continuous-batching
 * scheduler; nanochat runs them one prompt at a time.
 */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "../util/common.h"
#include "api_internal.h"

typedef struct {
    int32_t *tokens; /* generated ids, the terminal one included */
    uint8_t *masks;  /* 1 sampled, 0 forced by the calculator */
    float *logprobs; /* NULL unless asked for */
    int64_t n, cap;
    nc_finish_reason finish;
} req_row;

struct nc_request {
    nc_engine *e;
    uint64_t id;
    int32_t n_rows, n_finished;
    bool logprobs;
    bool released; /* nc_request_free came first: the last final event frees it */
    req_row *rows;
    char error[NC_ERROR_MAX];
    nc_request *prev, *next; /* the engine's list */
};

/* ==== the list (req_lock held) ==== */

static void link_request(nc_engine *e, nc_request *r) {
    r->next = e->requests;
    if (e->requests) e->requests->prev = r;
    e->requests = r;
}

static void unlink_and_free(nc_request *r) {
    nc_engine *e = r->e;
    if (r->prev) r->prev->next = r->next;
    else e->requests = r->next;
    if (r->next) r->next->prev = r->prev;
    for (int32_t i = 0; i < r->n_rows; i++) {
        free(r->rows[i].tokens);
        free(r->rows[i].masks);
        free(r->rows[i].logprobs);
    }
    free(r->rows);
    free(r);
}

void nc_pub_requests_free_all(nc_engine *e) {
    while (e->requests) unlink_and_free(e->requests);
}

/* ==== events (the stepping thread) ==== */

static void row_reserve(req_row *row, int64_t cap, bool logprobs) {
    row->cap = cap;
    row->tokens = nc_xrealloc(row->tokens, (size_t)cap * sizeof *row->tokens);
    row->masks = nc_xrealloc(row->masks, (size_t)cap * sizeof *row->masks);
    if (logprobs) row->logprobs = nc_xrealloc(row->logprobs, (size_t)cap * sizeof *row->logprobs);
}

/* Rows are sized at submit for every token they can produce, so the token
 * loop does not allocate; growing is only a safety net. */
static void row_append(req_row *row, const nc_gen_event *ev, bool logprobs) {
    if (row->n == row->cap) row_reserve(row, 2 * row->cap + 16, logprobs);
    row->tokens[row->n] = ev->token;
    row->masks[row->n] = !ev->forced;
    if (logprobs) row->logprobs[row->n] = ev->forced ? 0.0f : ev->chosen.logprob;
    row->n++;
}

static bool on_event(void *user, const nc_gen_event *ev) {
    nc_request *r = user;
    nc_engine *e = r->e; /* r may be freed below */
    pthread_mutex_lock(&e->req_lock);
    req_row *row = &r->rows[ev->row];
    if (ev->token >= 0) row_append(row, ev, r->logprobs);
    if (ev->finish != NC_FINISH_NONE) {
        row->finish = ev->finish;
        if (ev->error && !r->error[0]) snprintf(r->error, sizeof r->error, "%s", ev->error);
        if (++r->n_finished == r->n_rows && r->released) unlink_and_free(r);
    }
    pthread_mutex_unlock(&e->req_lock);
    return false;
}

/* ==== submitting ==== */

static int to_params(const nc_request_options *o, nc_gen_params *g) {
    if (nc_pub_gen_params(o ? &o->sampling : NULL, g)) return -1;
    if (!o) return 0;
    if (o->n < 0) return nc_pub_fail("n must be >= 1 (0 = 1), got %d", o->n);
    g->n = o->n ? o->n : 1;
    g->top_logprobs = o->logprobs ? 0 : -1;
    return nc_gen_params_validate(g) ? nc_pub_failed() : 0;
}

nc_request *nc_request_submit(nc_engine *e, const nc_prompt *prompt, const nc_request_options *opts) {
    nc_pub_clear_error();
    if (!e) {
        nc_pub_fail("nc_request_submit: engine is NULL");
        return NULL;
    }
    nc_gen_params g;
    nc_tokens ids = {0};
    if (to_params(opts, &g) || nc_pub_build_prompt(e, prompt, &ids)) {
        nc_tokens_free(&ids);
        return NULL;
    }
    if (g.n > e->max_batch) {
        nc_tokens_free(&ids);
        nc_pub_fail("n = %d exceeds max_batch = %d, the rows this engine decodes at once (nc_engine_options)",
                    g.n, e->max_batch);
        return NULL;
    }
    nc_request *r = nc_xcalloc(1, sizeof *r);
    r->e = e;
    r->n_rows = g.n;
    r->logprobs = g.top_logprobs >= 0;
    r->rows = nc_xcalloc((size_t)g.n, sizeof *r->rows);
    int64_t room = NC_MAX(1, NC_MIN((int64_t)g.max_tokens, (int64_t)e->b.max_context - (int64_t)ids.n));
    for (int32_t i = 0; i < g.n; i++) row_reserve(&r->rows[i], room, r->logprobs);
    /* Linked before the scheduler sees it: another thread may step at once. */
    pthread_mutex_lock(&e->req_lock);
    link_request(e, r);
    pthread_mutex_unlock(&e->req_lock);
    int rc = nc_scheduler_submit(e->b.sched, ids.ids, (int32_t)ids.n, &g, on_event, r, &r->id);
    nc_tokens_free(&ids);
    if (rc) {
        nc_pub_failed();
        pthread_mutex_lock(&e->req_lock);
        unlink_and_free(r);
        pthread_mutex_unlock(&e->req_lock);
        return NULL;
    }
    return r;
}

/* ==== stepping ==== */

int nc_engine_step(nc_engine *e) {
    nc_pub_clear_error();
    if (!e) return nc_pub_fail("nc_engine_step: engine is NULL");
    if (nc_pub_generating == e) return nc_pub_fail("nc_engine_step: called from a stream callback of the same engine");
    pthread_mutex_lock(&e->gen_lock);
    int left = nc_scheduler_step(e->b.sched);
    pthread_mutex_unlock(&e->gen_lock);
    return left < 0 ? nc_pub_failed() : left;
}

int nc_request_done(const nc_request *r) {
    if (!r) return 1;
    pthread_mutex_lock(&r->e->req_lock);
    int done = r->n_finished == r->n_rows;
    pthread_mutex_unlock(&r->e->req_lock);
    return done;
}

int nc_request_wait(nc_request *r) {
    nc_pub_clear_error();
    if (!r) return nc_pub_fail("nc_request_wait: request is NULL");
    while (!nc_request_done(r))
        if (nc_engine_step(r->e) < 0 && !nc_request_done(r)) return -1;
    const char *err = nc_request_error(r);
    return *err ? nc_pub_fail("generation failed: %s", err) : 0;
}

/* ==== reading ==== */

int nc_request_rows(const nc_request *r) {
    return r ? r->n_rows : 0;
}

int64_t nc_request_read(const nc_request *r, int row, size_t from, int32_t *tokens, uint8_t *masks,
                        float *logprobs, size_t cap, nc_reply_finish *finish) {
    nc_pub_clear_error();
    if (!r) return nc_pub_fail("nc_request_read: request is NULL");
    if (row < 0 || row >= r->n_rows)
        return nc_pub_fail("nc_request_read: row %d is outside 0..%d", row, r->n_rows - 1);
    pthread_mutex_lock(&r->e->req_lock);
    const req_row *x = &r->rows[row];
    int64_t n = x->n;
    size_t k = from < (size_t)n ? NC_MIN(cap, (size_t)n - from) : 0;
    if (k && tokens) memcpy(tokens, x->tokens + from, k * sizeof *tokens);
    if (k && masks) memcpy(masks, x->masks + from, k * sizeof *masks);
    if (k && logprobs) {
        if (x->logprobs) memcpy(logprobs, x->logprobs + from, k * sizeof *logprobs);
        else memset(logprobs, 0, k * sizeof *logprobs);
    }
    if (finish) *finish = (nc_reply_finish)x->finish;
    pthread_mutex_unlock(&r->e->req_lock);
    return n;
}

const char *nc_request_error(const nc_request *r) {
    if (!r) return "";
    pthread_mutex_lock(&r->e->req_lock);
    const char *err = r->error; /* written once, by the first error event */
    pthread_mutex_unlock(&r->e->req_lock);
    return err;
}

/* ==== ending ==== */

void nc_request_cancel(nc_request *r) {
    if (!r) return;
    pthread_mutex_lock(&r->e->req_lock);
    bool running = r->n_finished < r->n_rows;
    pthread_mutex_unlock(&r->e->req_lock);
    if (running) nc_scheduler_cancel(r->e->b.sched, r->id);
}

void nc_request_free(nc_request *r) {
    if (!r) return;
    nc_engine *e = r->e;
    pthread_mutex_lock(&e->req_lock);
    bool running = r->n_finished < r->n_rows;
    uint64_t id = r->id;
    if (running) r->released = true;
    else unlink_and_free(r);
    pthread_mutex_unlock(&e->req_lock);
    if (running) nc_scheduler_cancel(e->b.sched, id);
}
