/*
 * gen_queue.c: the bounded engine -> HTTP event queue (see gen_queue.h).
 *
 * Memory is allocated once at create(); the callback, which runs on the
 * engine thread for every generated token, only copies into the ring and,
 * with a waker, leaves the consumer's wake-up (a system call) to the
 * waker thread.
 */
#include "gen_queue.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/common.h"
#include "metrics.h"

/* A condition variable whose timed waits use CLOCK_MONOTONIC (immune to
 * wall-clock changes). */
static void monotonic_cond_init(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

nc_gen_queue *nc_gen_queue_create(int32_t n_rows, int32_t top_per, int32_t max_lag,
                                  struct nc_srv_metrics *metrics, nc_gen_waker *waker) {
    NC_ASSERT(n_rows >= 1 && top_per >= -1 && top_per <= NC_MAX_TOP_LOGPROBS && max_lag >= 1);
    nc_gen_queue *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->max_lag = max_lag;
    q->cap = max_lag + n_rows;
    q->ring = calloc((size_t)q->cap, sizeof *q->ring);
    q->row_stop = calloc((size_t)n_rows, sizeof *q->row_stop);
    q->t_last = calloc((size_t)n_rows, sizeof *q->t_last);
    if (top_per > 0) q->tops = calloc((size_t)q->cap * (size_t)top_per, sizeof *q->tops);
    if (!q->ring || !q->row_stop || !q->t_last || (top_per > 0 && !q->tops)) {
        free(q->ring);
        free(q->row_stop);
        free(q->t_last);
        free(q->tops);
        free(q);
        return NULL;
    }
    monotonic_cond_init(&q->cv);
    pthread_mutex_init(&q->mu, NULL);
    q->refs = 2;
    q->top_per = top_per;
    q->n_rows = n_rows;
    q->metrics = metrics;
    q->waker = waker;
    q->t_submit = nc_now();
    return q;
}

void nc_gen_queue_release(nc_gen_queue *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    int left = --q->refs;
    pthread_mutex_unlock(&q->mu);
    if (left > 0) return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->ring);
    free(q->tops);
    free(q->row_stop);
    free(q->t_last);
    free(q);
}

/* Appends one event; the caller holds the lock and has checked capacity. */
/* ==== the waker ==== */

struct nc_gen_waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    nc_gen_queue **pending; /* queues with new events, one reference each */
    int32_t n, cap;
    bool kicked, stop;
    pthread_t thread;
};

static void waker_add(nc_gen_waker *w, nc_gen_queue *q) {
    pthread_mutex_lock(&w->mu);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->pending = nc_xrealloc(w->pending, (size_t)w->cap * sizeof *w->pending);
    }
    w->pending[w->n++] = q;
    pthread_mutex_unlock(&w->mu);
}

static void *waker_main(void *arg) {
    nc_gen_waker *w = arg;
    nc_gen_queue **batch = NULL;
    int32_t batch_cap = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        /* A missed kick only delays the wake-ups (50 ms), never loses them. */
        if (!w->kicked && !w->stop) {
            struct timespec ts = nc_monotonic_deadline(0.05);
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
        w->kicked = false;
        bool stop = w->stop;
        int32_t n = w->n;
        if (n > batch_cap) {
            batch_cap = w->cap;
            batch = nc_xrealloc(batch, (size_t)batch_cap * sizeof *batch);
        }
        if (n) memcpy(batch, w->pending, (size_t)n * sizeof *batch);
        w->n = 0;
        pthread_mutex_unlock(&w->mu);
        for (int32_t i = 0; i < n; i++) {
            nc_gen_queue *q = batch[i];
            pthread_mutex_lock(&q->mu);
            q->wake_pending = false;
            pthread_cond_broadcast(&q->cv);
            pthread_mutex_unlock(&q->mu);
            nc_gen_queue_release(q);
        }
        pthread_mutex_lock(&w->mu);
        if (stop && w->n == 0) break;
    }
    pthread_mutex_unlock(&w->mu);
    free(batch);
    return NULL;
}

nc_gen_waker *nc_gen_waker_create(void) {
    nc_gen_waker *w = nc_xcalloc(1, sizeof *w);
    monotonic_cond_init(&w->cv);
    pthread_mutex_init(&w->mu, NULL);
    if (pthread_create(&w->thread, NULL, waker_main, w)) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void nc_gen_waker_kick(nc_gen_waker *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    bool work = w->n > 0;
    if (work) w->kicked = true;
    pthread_mutex_unlock(&w->mu);
    if (work) pthread_cond_signal(&w->cv);
}

void nc_gen_waker_free(nc_gen_waker *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_mutex_unlock(&w->mu);
    pthread_cond_signal(&w->cv);
    pthread_join(w->thread, NULL);
    free(w->pending);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ==== the queue ==== */

static void push(nc_gen_queue *q, const nc_gen_event *ev, int32_t token, nc_finish_reason finish) {
    int32_t slot = (q->head + q->count) % q->cap;
    nc_gq_event *e = &q->ring[slot];
    e->row = ev->row;
    e->token = token;
    e->forced = ev->forced;
    e->terminal = ev->is_terminal;
    e->finish = (uint8_t)finish;
    e->has_logprob = false;
    e->n_top = 0;
    if (token >= 0 && q->top_per >= 0 && !ev->forced && isfinite(ev->chosen.logprob)) {
        e->has_logprob = true;
        e->logprob = ev->chosen.logprob;
        if (q->tops) {
            int32_t n = NC_MIN(ev->n_top, q->top_per);
            memcpy(&q->tops[(size_t)slot * (size_t)q->top_per], ev->top, sizeof(nc_token_logprob) * (size_t)NC_MAX(n, 0));
            e->n_top = NC_MAX(n, 0);
        }
    }
    q->count++;
}

bool nc_gen_queue_callback(void *user, const nc_gen_event *ev) {
    nc_gen_queue *q = user;
    NC_ASSERT(ev->row >= 0 && ev->row < q->n_rows);
    double now = nc_now();
    if (ev->token >= 0 && q->metrics) {
        double ttft = -1.0, itl = -1.0;
        if (!q->first_seen) {
            q->first_seen = true;
            ttft = now - q->t_submit;
            nc_metrics_prefix(q->metrics, ev->n_cached_tokens >= NC_KV_BLOCK_TOKENS);
        }
        if (q->t_last[ev->row] > 0) itl = now - q->t_last[ev->row];
        q->t_last[ev->row] = now;
        nc_metrics_token(q->metrics, ttft, itl);
    }
    if (ev->finish != NC_FINISH_NONE && q->metrics) nc_metrics_finish(q->metrics, ev->finish);

    pthread_mutex_lock(&q->mu);
    q->n_prompt_tokens = ev->n_prompt_tokens;
    q->n_cached_tokens = ev->n_cached_tokens;
    bool stop = q->cancel_all || q->row_stop[ev->row];
    if (ev->token >= 0) {
        if (q->n_token_events >= q->max_lag) {
            /* Far beyond normal: this client stopped reading. Drop the token
             * and stop the row; its finish still has a reserved slot. */
            q->overflowed = true;
            stop = true;
        } else {
            /* A token that also finishes the row becomes two events, so
             * every finish uses its reserved slot. */
            push(q, ev, ev->token, NC_FINISH_NONE);
            q->n_token_events++;
        }
    }
    bool last = false;
    if (ev->finish != NC_FINISH_NONE) {
        if (ev->finish == NC_FINISH_ERROR && !q->error[0])
            snprintf(q->error, sizeof q->error, "%s", ev->error ? ev->error : "engine error");
        NC_ASSERT(q->count < q->cap);
        push(q, ev, -1, ev->finish);
        q->rows_finished++;
        last = q->rows_finished == q->n_rows;
    }
    bool enqueue = false;
    if (!q->waker) {
        pthread_cond_broadcast(&q->cv);
    } else if (!q->wake_pending) {
        q->wake_pending = true;
        q->refs++; /* the waker's, until it has woken the consumer */
        enqueue = true;
    }
    pthread_mutex_unlock(&q->mu);
    if (enqueue) waker_add(q->waker, q);
    if (last) nc_gen_queue_release(q);
    return stop;
}

int32_t nc_gen_queue_take(nc_gen_queue *q, nc_gq_event *out, nc_token_logprob *tops_out,
                          int32_t max, double timeout_s, bool *engine_done) {
    pthread_mutex_lock(&q->mu);
    if (q->count == 0 && q->rows_finished < q->n_rows && timeout_s > 0) {
        struct timespec ts = nc_monotonic_deadline(timeout_s);
        while (q->count == 0 && q->rows_finished < q->n_rows)
            if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT) break;
    }
    int32_t n = NC_MIN(q->count, max);
    for (int32_t i = 0; i < n; i++) {
        int32_t slot = (q->head + i) % q->cap;
        out[i] = q->ring[slot];
        if (q->top_per > 0 && tops_out)
            memcpy(&tops_out[(size_t)i * (size_t)q->top_per], &q->tops[(size_t)slot * (size_t)q->top_per],
                   sizeof(nc_token_logprob) * (size_t)q->top_per);
        if (out[i].token >= 0) q->n_token_events--;
    }
    q->head = (q->head + n) % q->cap;
    q->count -= n;
    *engine_done = q->count == 0 && q->rows_finished == q->n_rows;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void nc_gen_queue_stop_row(nc_gen_queue *q, int32_t row) {
    pthread_mutex_lock(&q->mu);
    if (row >= 0 && row < q->n_rows) q->row_stop[row] = true;
    pthread_mutex_unlock(&q->mu);
}

void nc_gen_queue_stop_all(nc_gen_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->cancel_all = true;
    pthread_mutex_unlock(&q->mu);
}

bool nc_gen_queue_overflowed(nc_gen_queue *q) {
    pthread_mutex_lock(&q->mu);
    bool o = q->overflowed;
    pthread_mutex_unlock(&q->mu);
    return o;
}

bool nc_gen_queue_error(nc_gen_queue *q, char *buf, size_t cap) {
    pthread_mutex_lock(&q->mu);
    bool e = q->error[0] != 0;
    if (e) snprintf(buf, cap, "%s", q->error);
    pthread_mutex_unlock(&q->mu);
    return e;
}
