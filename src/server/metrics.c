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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* `name{labels,extra} v`, the braces only when there are labels. */
static void series(strbuf *b, const char *name, const char *labels, const char *extra, double v) {
    bool any = labels[0] || extra[0];
    sb_printf(b, "%s%s%s%s%s%s %.17g\n", name, any ? "{" : "", labels, labels[0] && extra[0] ? "," : "", extra,
              any ? "}" : "", v);
}

static void head(strbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_series(strbuf *b, const char *name, const char *labels, const nc_histogram *h) {
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        if (i < h->n_bounds)
            sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i], (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    sb_printf(b, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %llu\n", name, open, labels, close, h->sum, name, open, labels,
              close, (unsigned long long)h->total);
}

/* The engines' records and statistics as rendered: copies taken under
 * each record's lock, and each engine's label set. */
typedef struct {
    nc_srv_metrics m;
    const nc_scheduler_stats *st;
    char labels[160];
    bool serving;
} engine_view;

/* One metric over every engine: the value `get` reads from a view (views
 * without statistics skipped when `needs_stats`). */
typedef double (*view_value)(const engine_view *v);

static void per_engine(strbuf *b, const engine_view *v, int n, const char *name, const char *type, const char *help,
                       bool needs_stats, view_value get) {
    bool any = false;
    for (int i = 0; i < n; i++) any |= !needs_stats || v[i].st;
    if (!any) return;
    head(b, name, type, help);
    for (int i = 0; i < n; i++)
        if (!needs_stats || v[i].st) series(b, name, v[i].labels, "", get(&v[i]));
}

#define VIEW_VALUE(fn, expr) \
    static double fn(const engine_view *v) { return (double)(expr); }
VIEW_VALUE(v_generated, v->m.generated_tokens)
VIEW_VALUE(v_hits, v->m.prefix_hits)
VIEW_VALUE(v_misses, v->m.prefix_misses)
VIEW_VALUE(v_up, v->serving)
VIEW_VALUE(v_queued, v->st->queued)
VIEW_VALUE(v_requests, v->st->running_requests)
VIEW_VALUE(v_rows, v->st->running_rows)
/* The scheduler keeps its last step's sizes; with nothing running the
 * engine takes no steps, and the batch is empty. */
VIEW_VALUE(v_batch_rows, v->st->running_requests || v->st->running_rows ? v->st->last_batch_rows : 0)
VIEW_VALUE(v_batch_tokens, v->st->running_requests || v->st->running_rows ? v->st->last_batch_tokens : 0)
VIEW_VALUE(v_kv_total, v->st->kv_blocks_total)
VIEW_VALUE(v_kv_used, v->st->kv_blocks_used)
VIEW_VALUE(v_kv_cached, v->st->kv_blocks_cached)
VIEW_VALUE(v_prefilled, v->st->tokens_prefilled)
VIEW_VALUE(v_cached, v->st->tokens_cached)
VIEW_VALUE(v_step_s, v->st->step_seconds)
VIEW_VALUE(v_forward_s, v->st->forward_seconds)
VIEW_VALUE(v_spec_verifies, v->st->spec_verifies)
VIEW_VALUE(v_spec_emitted, v->st->spec_emitted)
#undef VIEW_VALUE

/* Speculative decoding's counters (docs/speculative.md): the per-proposer
 * pair carries a `method` label beside the engine's. */
static void render_spec(strbuf *b, const engine_view *v, int n) {
    bool any = false;
    for (int i = 0; i < n; i++) any |= v[i].st != NULL;
    if (!any) return;
    struct {
        const char *name, *help;
        size_t offset;
    } by_method[] = {
        {"nanochat_spec_draft_tokens_total", "Draft tokens verified by speculative decoding, by proposer.",
         offsetof(nc_scheduler_stats, spec_drafted)},
        {"nanochat_spec_accepted_tokens_total", "Draft tokens the model accepted, by proposer.",
         offsetof(nc_scheduler_stats, spec_accepted)},
    };
    for (size_t k = 0; k < NC_ARRAY_LEN(by_method); k++) {
        head(b, by_method[k].name, "counter", by_method[k].help);
        for (int i = 0; i < n; i++) {
            if (!v[i].st) continue;
            const int64_t *counts = (const int64_t *)((const char *)v[i].st + by_method[k].offset);
            for (int j = 0; j < NC_SPEC_KINDS; j++) {
                char extra[48];
                snprintf(extra, sizeof extra, "method=\"%s\"", nc_spec_kind_name((nc_spec_kind)j));
                series(b, by_method[k].name, v[i].labels, extra, (double)counts[j]);
            }
        }
    }
    per_engine(b, v, n, "nanochat_spec_verify_steps_total", "counter", "Sequence-steps that verified drafts.", true,
               v_spec_verifies);
    per_engine(b, v, n, "nanochat_spec_emitted_tokens_total", "counter",
               "Tokens those sequence-steps emitted (accepted drafts plus one each).", true, v_spec_emitted);
}

static void render_engines(strbuf *b, const engine_view *v, int n) {
    per_engine(b, v, n, "nanochat_generation_tokens_total", "counter", "Tokens generated (sampled and tool-forced).",
               false, v_generated);
    per_engine(b, v, n, "nanochat_prefix_cache_hits_total", "counter",
               "Requests whose prompt reused at least one whole KV block (64 tokens) of the prefix cache.", false,
               v_hits);
    per_engine(b, v, n, "nanochat_prefix_cache_misses_total", "counter",
               "Requests that reused less than one KV block of the prefix cache.", false, v_misses);
    head(b, "nanochat_rows_finished_total", "counter", "Generated sequences by finish reason.");
    static const char *const reasons[] = {"none", "stop", "length", "cancelled", "error"};
    for (int i = 0; i < n; i++)
        for (int r = NC_FINISH_STOP; r <= NC_FINISH_ERROR; r++) {
            char extra[32];
            snprintf(extra, sizeof extra, "reason=\"%s\"", reasons[r]);
            series(b, "nanochat_rows_finished_total", v[i].labels, extra, (double)v[i].m.finished[r]);
        }
    struct {
        const char *name, *help;
        size_t offset;
    } hists[] = {
        {"nanochat_time_to_first_token_seconds", "Time from submit to the first token.", offsetof(nc_srv_metrics, ttft)},
        {"nanochat_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.",
         offsetof(nc_srv_metrics, itl)},
        {"nanochat_batch_rows", "Rows in each engine step.", offsetof(nc_srv_metrics, batch_rows)},
    };
    for (size_t k = 0; k < NC_ARRAY_LEN(hists); k++) {
        head(b, hists[k].name, "histogram", hists[k].help);
        for (int i = 0; i < n; i++)
            hist_series(b, hists[k].name, v[i].labels, (const nc_histogram *)((const char *)&v[i].m + hists[k].offset));
    }
    if (n > 1)
        per_engine(b, v, n, "nanochat_engine_up", "gauge", "1 while the engine serves (0: loading or failed).", false,
                   v_up);
    per_engine(b, v, n, "nanochat_queue_depth", "gauge", "Requests waiting to start.", true, v_queued);
    per_engine(b, v, n, "nanochat_running_requests", "gauge", "Requests generating.", true, v_requests);
    per_engine(b, v, n, "nanochat_running_rows", "gauge", "Sequences decoding.", true, v_rows);
    per_engine(b, v, n, "nanochat_batch_size", "gauge", "Rows in the engine's current step (0 when idle).", true,
               v_batch_rows);
    per_engine(b, v, n, "nanochat_batch_tokens", "gauge", "Tokens in the engine's current step (0 when idle).", true,
               v_batch_tokens);
    per_engine(b, v, n, "nanochat_kv_blocks_total", "gauge", "KV-cache blocks in the pool.", true, v_kv_total);
    per_engine(b, v, n, "nanochat_kv_blocks_used", "gauge", "KV-cache blocks held by running sequences.", true,
               v_kv_used);
    per_engine(b, v, n, "nanochat_kv_blocks_cached", "gauge", "KV-cache blocks held only by the prefix cache.", true,
               v_kv_cached);
    per_engine(b, v, n, "nanochat_tokens_prefilled_total", "counter", "Prompt tokens run through prefill.", true,
               v_prefilled);
    per_engine(b, v, n, "nanochat_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.", true,
               v_cached);
    per_engine(b, v, n, "nanochat_engine_step_seconds_total", "counter", "Wall time of the engine's scheduling steps.",
               true, v_step_s);
    per_engine(b, v, n, "nanochat_engine_forward_seconds_total", "counter",
               "Part of the step time spent in the backend's forward passes (the rest is host work).", true,
               v_forward_s);
    render_spec(b, v, n);
}

char *nc_metrics_render(nc_srv_metrics *m, const nc_metrics_engine *engines, int n, int ready) {
    strbuf b = {nc_xmalloc(8192), 0, 8192};
    b.buf[0] = 0;
    pthread_mutex_lock(&m->mu);
    head(&b, "nanochat_requests_total", "counter", "HTTP requests by endpoint and status code.");
    for (int e = 0; e < NC_EP_COUNT; e++)
        for (int s = 0; s < NC_METRICS_MAX_STATUS; s++)
            if (m->requests[e][s])
                sb_printf(&b, "nanochat_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                          endpoint_paths[e], m->statuses[s], (unsigned long long)m->requests[e][s]);
    head(&b, "nanochat_prompt_tokens_total", "counter", "Prompt tokens of submitted requests.");
    series(&b, "nanochat_prompt_tokens_total", "", "", (double)m->prompt_tokens);
    head(&b, "nanochat_requests_cancelled_total", "counter",
         "Requests ended early by a client disconnect, a timeout or a lagging client.");
    series(&b, "nanochat_requests_cancelled_total", "", "", (double)m->cancelled);
    head(&b, "nanochat_request_duration_seconds", "histogram", "Time from submit to the end of a generation response.");
    hist_series(&b, "nanochat_request_duration_seconds", "", &m->e2e);
    double uptime = nc_now() - m->t_start;
    pthread_mutex_unlock(&m->mu);
    head(&b, "nanochat_ready", "gauge", "1 once the model is loaded.");
    series(&b, "nanochat_ready", "", "", ready ? 1 : 0);
    head(&b, "nanochat_uptime_seconds", "gauge", "Seconds since the server started.");
    series(&b, "nanochat_uptime_seconds", "", "", uptime);

    engine_view *v = nc_xcalloc((size_t)NC_MAX(n, 1), sizeof *v);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&engines[i].m->mu);
        v[i].m = *engines[i].m;
        pthread_mutex_unlock(&engines[i].m->mu);
        v[i].st = engines[i].st;
        v[i].serving = engines[i].serving;
        if (n > 1) snprintf(v[i].labels, sizeof v[i].labels, "engine=\"%d\",device=\"%s\"", engines[i].index,
                            engines[i].device);
    }
    render_engines(&b, v, n);
    free(v);
    return b.buf;
}
