/*
 * api_nanochat.c: nanochat's own POST /chat/completions (scripts/chat_web.py),
 * kept so nanochat's web UI and scripts work unchanged.
 *
 * Request: {"messages": [{"role", "content"}], "temperature"?, "top_k"?,
 * "max_tokens"?} with nanochat's limits (api_request.h), plus our optional
 * "seed" and "truncate". Response: text/event-stream of
 *     data: {"token": "<text delta>", "gpu": 0}
 * ("gpu": the engine generating it, as nanochat's worker's GPU)
 *     ...
 *     data: {"done": true}
 * Deltas are whole UTF-8 characters. Calculator tool calls do not appear as
 * text: each becomes an extra event that nanochat's UI ignores (its "token"
 * is empty) and ours draws as a tool box:
 *     data: {"token": "", "gpu": 0, "tool": {"type": "calculator", "state": "call", "expr": "37*41"}}
 *     data: {"token": "", "gpu": 0, "tool": {"type": "calculator", "state": "result", "expr": "37*41", "result": "1517"}}
 * A failure after the stream started (timeout, engine error, shutdown) is
 * reported as data: {"error": "<message>"} before the final done event.
 */
#include "srv.h"

#include <string.h>

#include "../util/common.h"

typedef struct {
    nc_sse base;  /* first: the SSE layer sees only this */
    nc_job job;
} nanochat_stream;

static void emit_text(nanochat_stream *s) {
    nc_row_text *r = &s->job.text.rows[0];
    size_t end = nc_gen_text_releasable(&s->job.text, 0);
    if (end <= r->sent) return;
    nc_sbuf_puts(&s->base.out, "data: {\"token\": ");
    nc_sbuf_json_string(&s->base.out, r->text + r->sent, end - r->sent);
    nc_sbuf_printf(&s->base.out, ", \"gpu\": %d}\n\n", s->job.engine->index);
    r->sent = end;
}

static void on_tool(void *user, int32_t row, const nc_tool_event *t) {
    nanochat_stream *s = user;
    emit_text(s); /* the text before the tool call goes first */
    nc_sbuf *o = &s->base.out;
    nc_sbuf_printf(o, "data: {\"token\": \"\", \"gpu\": %d, \"tool\": {\"type\": \"calculator\", \"state\": "
                   "\"%s\", \"expr\": ", s->job.engine->index, t->kind == NC_TOOL_CALL ? "call" : "result");
    nc_sbuf_json_string(o, t->expr, strlen(t->expr));
    if (t->kind == NC_TOOL_RESULT) {
        nc_sbuf_puts(o, ", \"result\": ");
        nc_sbuf_json_string(o, t->result, strlen(t->result));
    }
    nc_sbuf_puts(o, "}}\n\n");
}

static void emit_error(nanochat_stream *s, const char *msg) {
    nc_sbuf_puts(&s->base.out, "data: {\"error\": ");
    nc_sbuf_json_string(&s->base.out, msg, strlen(msg));
    nc_sbuf_puts(&s->base.out, "}\n\n");
}

static void produce(nc_sse *base) {
    nanochat_stream *s = (nanochat_stream *)base;
    int r = nc_job_poll(&s->job, 0.1, on_tool, s);
    if (r < 0) {
        if (s->job.fail == NC_JOB_GONE) {
            base->abort = true;
            return;
        }
        emit_text(s);
        nc_api_error e;
        nc_job_error(&s->job, &e);
        emit_error(s, e.message);
        nc_sbuf_puts(&base->out, "data: {\"done\": true}\n\n");
        base->finished = true;
        return;
    }
    emit_text(s);
    if (nc_job_done(&s->job)) {
        if (s->job.text.rows[0].finish == NC_FINISH_ERROR) {
            nc_api_error e;
            nc_job_error(&s->job, &e);
            emit_error(s, e.message);
        }
        nc_sbuf_puts(&base->out, "data: {\"done\": true}\n\n");
        base->finished = true;
    }
}

static void destroy(nc_sse *base) {
    nanochat_stream *s = (nanochat_stream *)base;
    nc_job_end(&s->job);
    free(s);
}

enum MHD_Result nc_api_nanochat(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    enum MHD_Result ret;
    nc_api_request req;
    nc_api_error err;
    if (nc_api_parse(NC_API_NANOCHAT, c->body.buf, c->body.len, 0, &req, &err))
        return nc_http_error(conn, c, &err);
    if (nc_srv_refuse_unready(srv, conn, c, &ret)) {
        nc_api_request_free(&req);
        return ret;
    }
    nc_tokens prompt = {0};
    nc_gen_params gen;
    nanochat_stream *s = nc_xcalloc(1, sizeof *s);
    int rc = nc_job_prompt(srv, &req, &prompt, &gen, &err);
    if (!rc) rc = nc_job_start(&s->job, srv, c, &prompt, &gen, true, NULL, NULL, 0, nc_job_session(c, &req), &err);
    nc_tokens_free(&prompt);
    nc_api_request_free(&req);
    if (rc) {
        free(s);
        return nc_http_error(conn, c, &err);
    }
    s->base.srv = srv;
    s->base.produce = produce;
    s->base.destroy = destroy;
    return nc_http_sse(conn, c, &s->base);
}
