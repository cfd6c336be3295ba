/*
 * metrics.c: counters and histograms behind GET /metrics (see metrics.h).
 *
 * Names follow Prometheus conventions (`nanochat_` prefix, `_total` for
 * counters, `_seconds` for durations, cumulative `le` buckets). Latency
 * buckets span 1 ms .. 60 s: decode steps on an H100 are milliseconds,
 * a CPU prefill of a long prompt can take tens of seconds.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../util/common.h"

static const char *const endpoint_paths[NC_EP_COUNT] = {
    "/", "/chat/completions", "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{id}",
    "/tokenize", "/detokenize", "/health", "/stats", "/metrics", "other",
};

static void hist_init(nc_histogram *h, const double *bounds, int n) {
    NC_ASSERT(n <= NC_METRICS_MAX_BUCKETS);
    memset(h, 0, sizeof *h);
    h->n_bounds = n;
    memcpy(h->bounds, bounds, sizeof(double) * (size_t)n);
}

static void hist_observe(nc_histogram *h, double v) {
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->total++;
}

void nc_metrics_init(nc_srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->t_start = nc_now();
    static const double lat[] = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                                 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double e2e[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600};
    static const double rows[] = {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 512};
    hist_init(&m->ttft, lat, (int)NC_ARRAY_LEN(lat));
    hist_init(&m->itl, lat, (int)NC_ARRAY_LEN(lat));
    hist_init(&m->e2e, e2e, (int)NC_ARRAY_LEN(e2e));
    hist_init(&m->batch_rows, rows, (int)NC_ARRAY_LEN(rows));
}

void nc_metrics_free(nc_srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void nc_metrics_request(nc_srv_metrics *m, nc_endpoint e, int status) {
    if (e < 0 || e >= NC_EP_COUNT) e = NC_EP_OTHER;
    pthread_mutex_lock(&m->mu);
    int slot = -1;
    for (int i = 0; i < NC_METRICS_MAX_STATUS; i++) {
        if (m->statuses[i] == status) { slot = i; break; }
        if (m->statuses[i] == 0) { m->statuses[i] = status; slot = i; break; }
    }
    if (slot < 0) slot = NC_METRICS_MAX_STATUS - 1; /* more distinct codes than slots: lump */
    m->requests[e][slot]++;
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_prompt_tokens(nc_srv_metrics *m, int64_t n) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)n;
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_cancelled(nc_srv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->cancelled++;
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_e2e(nc_srv_metrics *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->e2e, seconds);
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_token(nc_srv_metrics *m, double ttft, double itl) {
    pthread_mutex_lock(&m->mu);
    m->generated_tokens++;
    if (ttft >= 0) hist_observe(&m->ttft, ttft);
    if (itl >= 0) hist_observe(&m->itl, itl);
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_finish(nc_srv_metrics *m, nc_finish_reason r) {
    pthread_mutex_lock(&m->mu);
    if ((int)r >= 0 && (int)r < 8) m->finished[r]++;
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_prefix(nc_srv_metrics *m, bool hit) {
    pthread_mutex_lock(&m->mu);
    if (hit) m->prefix_hits++;
    else m->prefix_misses++;
    pthread_mutex_unlock(&m->mu);
}

void nc_metrics_step(nc_srv_metrics *m, int32_t rows) {
    if (rows <= 0) return;
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->batch_rows, rows);
    pthread_mutex_unlock(&m->mu);
}

/* ==== rendering ==== */

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        NC_ASSERT(n >= 0);
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->buf = nc_xrealloc(b->buf, b->cap);
    }
}

static void render_hist(strbuf *b, const char *name, const char *help, const nc_histogram *h) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
              (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->total);
}

static void gauge(strbuf *b, const char *name, const char *help, double v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void counter(strbuf *b, const char *name, const char *help, double v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %.17g\n", name, help, name, name, v);
}

char *nc_metrics_render(nc_srv_metrics *m, const nc_scheduler_stats *st, int ready) {
    strbuf b = {nc_xmalloc(8192), 0, 8192};
    b.buf[0] = 0;
    pthread_mutex_lock(&m->mu);
    sb_printf(&b, "# HELP nanochat_requests_total HTTP requests by endpoint and status code.\n"
                  "# TYPE nanochat_requests_total counter\n");
    for (int e = 0; e < NC_EP_COUNT; e++)
        for (int s = 0; s < NC_METRICS_MAX_STATUS; s++)
            if (m->requests[e][s])
                sb_printf(&b, "nanochat_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                          endpoint_paths[e], m->statuses[s], (unsigned long long)m->requests[e][s]);
    counter(&b, "nanochat_prompt_tokens_total", "Prompt tokens of submitted requests.",
            (double)m->prompt_tokens);
    counter(&b, "nanochat_generation_tokens_total", "Tokens generated (sampled and tool-forced).",
            (double)m->generated_tokens);
    counter(&b, "nanochat_requests_cancelled_total",
            "Requests ended early by a client disconnect, a timeout or a lagging client.",
            (double)m->cancelled);
    counter(&b, "nanochat_prefix_cache_hits_total",
            "Requests whose prompt reused at least one whole KV block (64 tokens) of the prefix cache.",
            (double)m->prefix_hits);
    counter(&b, "nanochat_prefix_cache_misses_total",
            "Requests that reused less than one KV block of the prefix cache.", (double)m->prefix_misses);
    sb_printf(&b, "# HELP nanochat_rows_finished_total Generated sequences by finish reason.\n"
                  "# TYPE nanochat_rows_finished_total counter\n");
    static const char *const reasons[] = {"none", "stop", "length", "cancelled", "error"};
    for (int r = NC_FINISH_STOP; r <= NC_FINISH_ERROR; r++)
        sb_printf(&b, "nanochat_rows_finished_total{reason=\"%s\"} %llu\n", reasons[r],
                  (unsigned long long)m->finished[r]);
    render_hist(&b, "nanochat_time_to_first_token_seconds", "Time from submit to the first token.", &m->ttft);
    render_hist(&b, "nanochat_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.", &m->itl);
    render_hist(&b, "nanochat_request_duration_seconds", "Time from submit to the end of a generation response.", &m->e2e);
    render_hist(&b, "nanochat_batch_rows", "Rows in each engine step.", &m->batch_rows);
    double uptime = nc_now() - m->t_start;
    pthread_mutex_unlock(&m->mu);

    gauge(&b, "nanochat_ready", "1 once the model is loaded.", ready ? 1 : 0);
    gauge(&b, "nanochat_uptime_seconds", "Seconds since the server started.", uptime);
    if (st) {
        gauge(&b, "nanochat_queue_depth", "Requests waiting to start.", st->queued);
        gauge(&b, "nanochat_running_requests", "Requests generating.", st->running_requests);
        gauge(&b, "nanochat_running_rows", "Sequences decoding.", st->running_rows);
        /* The scheduler keeps its last step's sizes; with nothing running
         * the engine takes no steps, and the batch is empty. */
        bool idle = st->running_requests == 0 && st->running_rows == 0;
        gauge(&b, "nanochat_batch_size", "Rows in the engine's current step (0 when idle).",
              idle ? 0 : st->last_batch_rows);
        gauge(&b, "nanochat_batch_tokens", "Tokens in the engine's current step (0 when idle).",
              idle ? 0 : st->last_batch_tokens);
        gauge(&b, "nanochat_kv_blocks_total", "KV-cache blocks in the pool.", st->kv_blocks_total);
        gauge(&b, "nanochat_kv_blocks_used", "KV-cache blocks held by running sequences.", st->kv_blocks_used);
        gauge(&b, "nanochat_kv_blocks_cached", "KV-cache blocks held only by the prefix cache.", st->kv_blocks_cached);
        counter(&b, "nanochat_tokens_prefilled_total", "Prompt tokens run through prefill.",
                (double)st->tokens_prefilled);
        counter(&b, "nanochat_tokens_cached_total", "Prompt tokens served from the prefix cache.",
                (double)st->tokens_cached);
        counter(&b, "nanochat_engine_step_seconds_total", "Wall time of the engine's scheduling steps.",
                st->step_seconds);
        counter(&b, "nanochat_engine_forward_seconds_total",
                "Part of the step time spent in the backend's forward passes (the rest is host work).",
                st->forward_seconds);
        sb_printf(&b, "# HELP nanochat_spec_draft_tokens_total Draft tokens verified by speculative decoding, by "
                      "proposer.\n# TYPE nanochat_spec_draft_tokens_total counter\n");
        for (int k = 0; k < NC_SPEC_KINDS; k++)
            sb_printf(&b, "nanochat_spec_draft_tokens_total{method=\"%s\"} %lld\n", nc_spec_kind_name((nc_spec_kind)k),
                      (long long)st->spec_drafted[k]);
        sb_printf(&b, "# HELP nanochat_spec_accepted_tokens_total Draft tokens the model accepted, by proposer.\n"
                      "# TYPE nanochat_spec_accepted_tokens_total counter\n");
        for (int k = 0; k < NC_SPEC_KINDS; k++)
            sb_printf(&b, "nanochat_spec_accepted_tokens_total{method=\"%s\"} %lld\n",
                      nc_spec_kind_name((nc_spec_kind)k), (long long)st->spec_accepted[k]);
        counter(&b, "nanochat_spec_verify_steps_total", "Sequence-steps that verified drafts.",
                (double)st->spec_verifies);
        counter(&b, "nanochat_spec_emitted_tokens_total",
                "Tokens those sequence-steps emitted (accepted drafts plus one each).", (double)st->spec_emitted);
    }
    return b.buf;
}
