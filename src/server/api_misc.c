/*
 * api_misc.c: the small endpoints: POST /tokenize and /detokenize (vLLM's
 * shapes), GET /health and /stats (nanochat's fields, plus ours), GET
 * /metrics (Prometheus) and GET / (the embedded chat page).
 */
#include "srv.h"

#include <string.h>

#include "../util/common.h"

/* ==== /tokenize, /detokenize ==== */

static enum MHD_Result tokenize(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c, const nc_api_request *req) {
    nc_api_error err;
    nc_tokens t = {0};
    const nc_tokenizer *tok = srv->tok;
    if (req->n_messages > 0) {
        if (nc_chat_render(tok, req->messages, req->n_messages, &t)) {
            nc_api_fail(&err, 400, "messages", "%s", nc_error());
            nc_tokens_free(&t);
            return nc_http_error(conn, c, &err);
        }
    } else if (req->has_prompt_ids) {
        nc_api_fail(&err, 400, "prompt", "'prompt' must be a string for /tokenize");
        return nc_http_error(conn, c, &err);
    } else {
        if (req->add_special_tokens) nc_tokens_push(&t, nc_tokenizer_special_id(tok, NC_TOK_BOS));
        if (nc_tokenizer_encode(tok, req->prompt, req->prompt_len, &t)) {
            nc_api_fail(&err, 400, "prompt", "%s", nc_error());
            nc_tokens_free(&t);
            return nc_http_error(conn, c, &err);
        }
    }
    nc_sbuf o = {0};
    nc_sbuf_puts(&o, "{\"tokens\":[");
    for (size_t i = 0; i < t.n; i++) nc_sbuf_printf(&o, "%s%d", i ? "," : "", t.ids[i]);
    nc_sbuf_printf(&o, "],\"count\":%zu,\"max_model_len\":%d}", t.n, srv->max_context);
    nc_tokens_free(&t);
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}

static enum MHD_Result detokenize(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c, const nc_api_request *req) {
    nc_api_error err;
    int vocab = nc_tokenizer_vocab_size(srv->tok);
    for (int32_t i = 0; i < req->n_prompt_ids; i++)
        if (req->prompt_ids[i] >= vocab) {
            nc_api_fail(&err, 400, "tokens", "token id %d is out of range (vocabulary size %d)", req->prompt_ids[i],
                        vocab);
            return nc_http_error(conn, c, &err);
        }
    size_t len = 0;
    char *text = nc_tokenizer_decode(srv->tok, req->prompt_ids, (size_t)req->n_prompt_ids, &len);
    if (!text) {
        nc_api_fail(&err, 400, "tokens", "%s", nc_error());
        return nc_http_error(conn, c, &err);
    }
    nc_sbuf o = {0};
    nc_sbuf_puts(&o, "{\"prompt\":");
    nc_sbuf_json_string(&o, text, len);
    nc_sbuf_puts(&o, "}");
    free(text);
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}

enum MHD_Result nc_api_tokenize(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    enum MHD_Result ret;
    nc_api_request req;
    nc_api_error err;
    nc_api_kind kind = c->ep == NC_EP_TOKENIZE ? NC_API_TOKENIZE : NC_API_DETOKENIZE;
    if (nc_api_parse(kind, c->body.buf, c->body.len, 0, &req, &err)) return nc_http_error(conn, c, &err);
    if (nc_srv_refuse_unready(srv, conn, c, &ret)) {
        nc_api_request_free(&req);
        return ret;
    }
    ret = kind == NC_API_TOKENIZE ? tokenize(srv, conn, c, &req) : detokenize(srv, conn, c, &req);
    nc_api_request_free(&req);
    return ret;
}

/* ==== /health, /stats, /metrics ==== */

static const char *engine_state_name(int state) {
    return state == NC_ENGINE_READY ? "ready" : state == NC_ENGINE_FAILED ? "failed" : "loading";
}

/* The engine's scheduler statistics, false while it has none. */
static bool engine_stats(nc_srv_engine *e, nc_scheduler_stats *st) {
    memset(st, 0, sizeof *st);
    if (atomic_load_explicit(&e->state, memory_order_acquire) == NC_ENGINE_LOADING || !e->sched) return false;
    nc_scheduler_get_stats(e->sched, st);
    return true;
}

/* Every engine as /health lists it. */
static void engines_json(nc_srv *srv, nc_sbuf *o) {
    nc_sbuf_puts(o, "[");
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        int state = atomic_load_explicit(&e->state, memory_order_acquire);
        nc_sbuf_printf(o, "%s{\"engine\":%d,\"device\":", i ? "," : "", i);
        nc_sbuf_json_string(o, e->dev.name, strlen(e->dev.name));
        nc_sbuf_printf(o, ",\"state\":\"%s\",\"description\":", engine_state_name(state));
        if (state == NC_ENGINE_LOADING) nc_sbuf_puts(o, "null");
        else nc_sbuf_json_string(o, e->description, strlen(e->description));
        nc_sbuf_puts(o, ",\"error\":");
        if (state == NC_ENGINE_FAILED) nc_sbuf_json_string(o, e->error, strlen(e->error));
        else nc_sbuf_puts(o, "null");
        nc_sbuf_printf(o, ",\"outstanding_rows\":%d}", atomic_load(&e->outstanding));
    }
    nc_sbuf_puts(o, "]");
}

/* GET /health answers 200 while the process serves HTTP (nanochat's
 * contract; a liveness check). GET /health?ready is the readiness check of
 * load balancers and Kubernetes, which look only at the status: 503 until
 * the model is loaded on every engine and their decode steps prepared
 * (CUDA graphs captured), and again once shutdown has begun. An engine
 * that failed later does not make it 503 while another serves. */
enum MHD_Result nc_api_health(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    bool ready = nc_srv_ready(srv);
    int serving = ready ? nc_engines_serving(srv) : 0;
    bool readiness = MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "ready", 5, NULL, NULL) == MHD_YES;
    nc_sbuf o = {0};
    nc_sbuf_printf(&o, "{\"status\":\"ok\",\"ready\":%s,\"model\":", ready ? "true" : "false");
    if (ready) nc_sbuf_json_string(&o, srv->model_name, strlen(srv->model_name));
    else nc_sbuf_puts(&o, "null");
    nc_sbuf_puts(&o, ",\"device\":");
    if (ready) nc_sbuf_json_string(&o, srv->device, strlen(srv->device));
    else nc_sbuf_puts(&o, "null");
    /* nanochat's fields: its workers are our engines, each shared by every
     * request it holds. */
    nc_sbuf_printf(&o, ",\"max_context\":%d,\"num_gpus\":%d,\"available_workers\":%d,\"stopping\":%s,"
                   "\"engines\":", ready ? srv->max_context : 0, srv->n_engines, serving,
                   atomic_load(&srv->stopping) ? "true" : "false");
    engines_json(srv, &o);
    nc_sbuf_puts(&o, "}");
    int status = readiness && (!ready || serving == 0 || atomic_load(&srv->stopping)) ? 503 : 200;
    enum MHD_Result ret = nc_http_json(conn, c, status, &o);
    nc_sbuf_free(&o);
    return ret;
}

static void scheduler_json(nc_sbuf *o, const nc_scheduler_stats *st) {
    nc_sbuf_printf(o, "{\"queued\":%d,\"running_requests\":%d,\"running_rows\":%d,"
                   "\"kv_blocks_total\":%d,\"kv_blocks_used\":%d,\"kv_blocks_cached\":%d,"
                   "\"tokens_prefilled\":%lld,\"tokens_cached\":%lld,\"tokens_generated\":%lld,"
                   "\"last_batch_rows\":%d,\"last_batch_tokens\":%d}",
                   st->queued, st->running_requests, st->running_rows, st->kv_blocks_total, st->kv_blocks_used,
                   st->kv_blocks_cached, (long long)st->tokens_prefilled, (long long)st->tokens_cached,
                   (long long)st->tokens_generated, st->last_batch_rows, st->last_batch_tokens);
}

static void stats_add(nc_scheduler_stats *sum, const nc_scheduler_stats *st) {
    sum->queued += st->queued;
    sum->running_requests += st->running_requests;
    sum->running_rows += st->running_rows;
    sum->kv_blocks_total += st->kv_blocks_total;
    sum->kv_blocks_used += st->kv_blocks_used;
    sum->kv_blocks_cached += st->kv_blocks_cached;
    sum->tokens_prefilled += st->tokens_prefilled;
    sum->tokens_cached += st->tokens_cached;
    sum->tokens_generated += st->tokens_generated;
    sum->last_batch_rows += st->last_batch_rows;
    sum->last_batch_tokens += st->last_batch_tokens;
}

/* nanochat's worker fields (one worker per engine), the schedulers'
 * counters summed, and each engine's own. */
enum MHD_Result nc_api_stats(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    bool ready = nc_srv_ready(srv);
    nc_scheduler_stats sum, *st = nc_xcalloc((size_t)srv->n_engines, sizeof *st);
    memset(&sum, 0, sizeof sum);
    int busy = 0, available = 0;
    nc_sbuf workers = {0}, engines = {0};
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        bool has = engine_stats(e, &st[i]);
        bool serving = atomic_load_explicit(&e->state, memory_order_acquire) == NC_ENGINE_READY;
        bool is_busy = st[i].running_requests > 0 || st[i].queued > 0;
        stats_add(&sum, &st[i]);
        if (ready && serving) {
            nc_sbuf_printf(&workers, "%s{\"gpu_id\":%d,\"device\":", busy + available ? "," : "", i);
            nc_sbuf_json_string(&workers, e->description, strlen(e->description));
            nc_sbuf_printf(&workers, ",\"available\":%s}", is_busy ? "false" : "true");
            busy += is_busy;
            available += !is_busy;
        }
        nc_sbuf_printf(&engines, "%s{\"engine\":%d,\"device\":", i ? "," : "", i);
        nc_sbuf_json_string(&engines, e->dev.name, strlen(e->dev.name));
        nc_sbuf_printf(&engines, ",\"state\":\"%s\",\"scheduler\":",
                       engine_state_name(atomic_load_explicit(&e->state, memory_order_acquire)));
        if (has) scheduler_json(&engines, &st[i]);
        else nc_sbuf_puts(&engines, "null");
        nc_sbuf_puts(&engines, "}");
    }
    nc_sbuf o = {0};
    nc_sbuf_printf(&o, "{\"total_workers\":%d,\"available_workers\":%d,\"busy_workers\":%d,\"workers\":[",
                   busy + available, available, busy);
    if (workers.len) nc_sbuf_append(&o, workers.buf, workers.len);
    nc_sbuf_puts(&o, "],\"scheduler\":");
    scheduler_json(&o, &sum);
    nc_sbuf_puts(&o, ",\"engines\":[");
    if (engines.len) nc_sbuf_append(&o, engines.buf, engines.len);
    nc_sbuf_printf(&o, "],\"active_requests\":%d}", atomic_load(&srv->active_jobs));
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    nc_sbuf_free(&workers);
    nc_sbuf_free(&engines);
    free(st);
    return ret;
}

enum MHD_Result nc_api_metrics(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    int n = srv->n_engines;
    nc_scheduler_stats *st = nc_xcalloc((size_t)n, sizeof *st);
    nc_metrics_engine *me = nc_xcalloc((size_t)n, sizeof *me);
    for (int i = 0; i < n; i++) {
        nc_srv_engine *e = &srv->engines[i];
        me[i].m = &e->metrics;
        me[i].st = engine_stats(e, &st[i]) ? &st[i] : NULL;
        me[i].index = i;
        me[i].device = e->dev.name;
        me[i].serving = atomic_load_explicit(&e->state, memory_order_acquire) == NC_ENGINE_READY;
    }
    char *text = nc_metrics_render(&srv->metrics, me, n, nc_srv_ready(srv));
    enum MHD_Result ret = nc_http_send(conn, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
    free(me);
    free(st);
    return ret;
}

/* ==== / ==== */

enum MHD_Result nc_api_index(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    size_t len;
    const char *html = nc_web_index_html(&len);
    return nc_http_send(conn, c, 200, "text/html; charset=utf-8", html, len);
}
