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
    const nc_tokenizer *tok = srv->b.tok;
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
    nc_sbuf_printf(&o, "],\"count\":%zu,\"max_model_len\":%d}", t.n, srv->b.max_context);
    nc_tokens_free(&t);
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}

static enum MHD_Result detokenize(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c, const nc_api_request *req) {
    nc_api_error err;
    int vocab = nc_tokenizer_vocab_size(srv->b.tok);
    for (int32_t i = 0; i < req->n_prompt_ids; i++)
        if (req->prompt_ids[i] >= vocab) {
            nc_api_fail(&err, 400, "tokens", "token id %d is out of range (vocabulary size %d)", req->prompt_ids[i],
                        vocab);
            return nc_http_error(conn, c, &err);
        }
    size_t len = 0;
    char *text = nc_tokenizer_decode(srv->b.tok, req->prompt_ids, (size_t)req->n_prompt_ids, &len);
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

/* GET /health answers 200 while the process serves HTTP (nanochat's
 * contract; a liveness check). GET /health?ready is the readiness check of
 * load balancers and Kubernetes, which look only at the status: 503 until
 * the model is loaded and its decode steps prepared (CUDA graphs captured),
 * and again once shutdown has begun. */
enum MHD_Result nc_api_health(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    bool ready = nc_srv_ready(srv);
    bool readiness = MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "ready", 5, NULL, NULL) == MHD_YES;
    nc_sbuf o = {0};
    nc_sbuf_printf(&o, "{\"status\":\"ok\",\"ready\":%s,\"model\":", ready ? "true" : "false");
    if (ready) nc_sbuf_json_string(&o, srv->model_name, strlen(srv->model_name));
    else nc_sbuf_puts(&o, "null");
    nc_sbuf_puts(&o, ",\"device\":");
    if (ready) nc_sbuf_json_string(&o, srv->device, strlen(srv->device));
    else nc_sbuf_puts(&o, "null");
    /* nanochat's fields: one engine, shared by every request. */
    nc_sbuf_printf(&o, ",\"max_context\":%d,\"num_gpus\":1,\"available_workers\":%d,\"stopping\":%s}",
                   ready ? srv->b.max_context : 0, ready ? 1 : 0, atomic_load(&srv->stopping) ? "true" : "false");
    int status = readiness && (!ready || atomic_load(&srv->stopping)) ? 503 : 200;
    enum MHD_Result ret = nc_http_json(conn, c, status, &o);
    nc_sbuf_free(&o);
    return ret;
}

enum MHD_Result nc_api_stats(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    bool ready = nc_srv_ready(srv);
    nc_scheduler_stats st = {0};
    if (ready) nc_scheduler_get_stats(srv->b.sched, &st);
    bool busy = st.running_requests > 0 || st.queued > 0;
    nc_sbuf o = {0};
    nc_sbuf_printf(&o, "{\"total_workers\":%d,\"available_workers\":%d,\"busy_workers\":%d,\"workers\":[",
                   ready ? 1 : 0, ready && !busy ? 1 : 0, ready && busy ? 1 : 0);
    if (ready) {
        nc_sbuf_puts(&o, "{\"gpu_id\":0,\"device\":");
        nc_sbuf_json_string(&o, srv->device, strlen(srv->device));
        nc_sbuf_printf(&o, ",\"available\":%s}", busy ? "false" : "true");
    }
    nc_sbuf_printf(&o, "],\"scheduler\":{\"queued\":%d,\"running_requests\":%d,\"running_rows\":%d,"
                   "\"kv_blocks_total\":%d,\"kv_blocks_used\":%d,\"kv_blocks_cached\":%d,"
                   "\"tokens_prefilled\":%lld,\"tokens_cached\":%lld,\"tokens_generated\":%lld,"
                   "\"last_batch_rows\":%d,\"last_batch_tokens\":%d},\"active_requests\":%d}",
                   st.queued, st.running_requests, st.running_rows, st.kv_blocks_total, st.kv_blocks_used,
                   st.kv_blocks_cached, (long long)st.tokens_prefilled, (long long)st.tokens_cached,
                   (long long)st.tokens_generated, st.last_batch_rows, st.last_batch_tokens,
                   atomic_load(&srv->active_jobs));
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}

enum MHD_Result nc_api_metrics(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    bool ready = nc_srv_ready(srv);
    nc_scheduler_stats st;
    if (ready) nc_scheduler_get_stats(srv->b.sched, &st);
    char *text = nc_metrics_render(&srv->metrics, ready ? &st : NULL, ready);
    enum MHD_Result ret = nc_http_send(conn, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
    return ret;
}

/* ==== / ==== */

enum MHD_Result nc_api_index(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    size_t len;
    const char *html = nc_web_index_html(&len);
    return nc_http_send(conn, c, 200, "text/html; charset=utf-8", html, len);
}
