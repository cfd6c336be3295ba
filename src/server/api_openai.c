/*
 * api_openai.c: the OpenAI-compatible API: POST /v1/chat/completions,
 * POST /v1/completions (streaming and not), GET /v1/models and
 * GET /v1/models/{id}.
 *
 * Shapes follow OpenAI's reference: chat.completion / chat.completion.chunk
 * and text_completion objects, `usage` (with prompt_tokens_details.
 * cached_tokens from the prefix cache), finish_reason "stop" (a stop token
 * or a stop string) or "length", logprobs in the chat form ({"content":
 * [{token, logprob, bytes, top_logprobs}]}) and the legacy completions form
 * ({tokens, token_logprobs, top_logprobs, text_offset}). A stream is
 * `data: {chunk}` events ending with `data: [DONE]`; with
 * stream_options.include_usage, a last chunk with empty choices carries the
 * usage. Stop strings are matched on the text, so they work across token
 * boundaries; text that might be the start of a stop string is held back
 * until it is known not to be. Tool tokens stay in the text as their
 * special-token strings (gen_text.h).
 */
#include "srv.h"

#include <string.h>
#include <time.h>

#include "../util/common.h"

typedef struct {
    nc_sse base;          /* first: the SSE layer sees only this */
    nc_job job;
    nc_api_request req;   /* kept alive: the job borrows its stop strings */
    bool chat;
    bool started;         /* role chunks / echo sent */
    char id[48];
    long long created;
} oa_stream;

static void make_id(nc_srv *srv, bool chat, char *id, size_t cap) {
    uint64_t n = atomic_fetch_add(&srv->next_id, 1);
    snprintf(id, cap, "%s-%llx%06llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)time(NULL),
             (unsigned long long)(n & 0xFFFFFF));
}

/* ==== logprobs ==== */

static void token_json(nc_sbuf *o, const nc_tokenizer *tok, int32_t id, bool with_bytes) {
    size_t n = 0;
    const uint8_t *b = nc_tokenizer_token_bytes(tok, id, &n);
    if (!b) { b = (const uint8_t *)""; n = 0; }
    nc_sbuf_json_string(o, (const char *)b, n);
    if (!with_bytes) return;
    nc_sbuf_puts(o, ",\"bytes\":[");
    for (size_t i = 0; i < n; i++) nc_sbuf_printf(o, "%s%u", i ? "," : "", b[i]);
    nc_sbuf_puts(o, "]");
}

/* Chat form: {"content": [...]} for records [from, to) of a row. */
static void chat_logprobs(nc_sbuf *o, const nc_gen_text *g, const nc_row_text *r, size_t from, size_t to) {
    int32_t per = g->top_logprobs > 0 ? g->top_logprobs : 0;
    nc_sbuf_puts(o, "{\"content\":[");
    for (size_t i = from; i < to; i++) {
        const nc_lp_entry *e = &r->lp[i];
        nc_sbuf_puts(o, i > from ? ",{\"token\":" : "{\"token\":");
        token_json(o, g->tok, e->token, false);
        nc_sbuf_puts(o, ",\"logprob\":");
        nc_sbuf_json_number(o, e->logprob);
        nc_sbuf_puts(o, ",\"bytes\":[");
        size_t n = 0;
        const uint8_t *b = nc_tokenizer_token_bytes(g->tok, e->token, &n);
        for (size_t k = 0; b && k < n; k++) nc_sbuf_printf(o, "%s%u", k ? "," : "", b[k]);
        nc_sbuf_puts(o, "],\"top_logprobs\":[");
        for (int32_t k = 0; k < e->n_top; k++) {
            const nc_token_logprob *t = &r->lp_top[i * (size_t)per + (size_t)k];
            nc_sbuf_puts(o, k ? ",{\"token\":" : "{\"token\":");
            token_json(o, g->tok, t->token, true);
            nc_sbuf_puts(o, ",\"logprob\":");
            nc_sbuf_json_number(o, t->logprob);
            nc_sbuf_puts(o, "}");
        }
        nc_sbuf_puts(o, "]}");
    }
    nc_sbuf_puts(o, "]}");
}

/* Legacy completions form; text offsets shifted by `base` (echoed prompt). */
static void completion_logprobs(nc_sbuf *o, const nc_gen_text *g, const nc_row_text *r, size_t from, size_t to,
                                size_t base) {
    int32_t per = g->top_logprobs > 0 ? g->top_logprobs : 0;
    nc_sbuf_puts(o, "{\"tokens\":[");
    for (size_t i = from; i < to; i++) {
        if (i > from) nc_sbuf_puts(o, ",");
        token_json(o, g->tok, r->lp[i].token, false);
    }
    nc_sbuf_puts(o, "],\"token_logprobs\":[");
    for (size_t i = from; i < to; i++) {
        if (i > from) nc_sbuf_puts(o, ",");
        nc_sbuf_json_number(o, r->lp[i].logprob);
    }
    nc_sbuf_puts(o, "],\"top_logprobs\":[");
    for (size_t i = from; i < to; i++) {
        nc_sbuf_puts(o, i > from ? ",{" : "{");
        for (int32_t k = 0; k < r->lp[i].n_top; k++) {
            const nc_token_logprob *t = &r->lp_top[i * (size_t)per + (size_t)k];
            if (k) nc_sbuf_puts(o, ",");
            token_json(o, g->tok, t->token, false);
            nc_sbuf_puts(o, ":");
            nc_sbuf_json_number(o, t->logprob);
        }
        nc_sbuf_puts(o, "}");
    }
    nc_sbuf_puts(o, "],\"text_offset\":[");
    for (size_t i = from; i < to; i++) nc_sbuf_printf(o, "%s%zu", i > from ? "," : "", base + r->lp[i].text_offset);
    nc_sbuf_puts(o, "]}");
}

static void usage_json(nc_sbuf *o, const nc_job *job) {
    int64_t gen = 0;
    for (int32_t r = 0; r < job->text.n_rows; r++) gen += job->text.rows[r].n_tokens;
    int32_t cached = job->q ? job->q->n_cached_tokens : 0;
    nc_sbuf_printf(o, "{\"prompt_tokens\":%d,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
                   job->n_prompt, (long long)gen, (long long)(job->n_prompt + gen), cached);
}

/* ==== streaming ==== */

static void chunk_open(oa_stream *s, nc_sbuf *o) {
    nc_sbuf_printf(o, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", s->id,
                   s->chat ? "chat.completion.chunk" : "text_completion", s->created);
    nc_sbuf_json_string(o, s->base.srv->model_name, strlen(s->base.srv->model_name));
    nc_sbuf_puts(o, ",\"system_fingerprint\":null,\"choices\":[");
}

static void chunk_close(oa_stream *s, nc_sbuf *o) {
    nc_sbuf_puts(o, s->req.include_usage ? "],\"usage\":null}\n\n" : "]}\n\n");
}

/* One chunk for row `row`: text [from, to), logprob records up to those
 * whose text starts before `to` (all of them once the row is done), and
 * the finish reason when `finish`. */
static void emit_row(oa_stream *s, int32_t row, const char *text, size_t n, bool finish) {
    nc_sbuf *o = &s->base.out;
    nc_gen_text *g = &s->job.text;
    nc_row_text *r = &g->rows[row];
    chunk_open(s, o);
    nc_sbuf_printf(o, "{\"index\":%d,", row);
    if (s->chat) {
        nc_sbuf_puts(o, finish && n == 0 ? "\"delta\":{}" : "\"delta\":{\"content\":");
        if (!(finish && n == 0)) {
            nc_sbuf_json_string(o, text, n);
            nc_sbuf_puts(o, "}");
        }
    } else {
        nc_sbuf_puts(o, "\"text\":");
        nc_sbuf_json_string(o, text, n);
    }
    nc_sbuf_puts(o, ",\"logprobs\":");
    size_t lp_to = r->lp_sent;
    if (s->req.logprobs) {
        size_t limit = r->sent + n;
        while (lp_to < r->n_lp && (r->done || r->lp[lp_to].text_offset < limit)) lp_to++;
    }
    if (s->req.logprobs && lp_to > r->lp_sent) {
        if (s->chat) chat_logprobs(o, g, r, r->lp_sent, lp_to);
        else completion_logprobs(o, g, r, r->lp_sent, lp_to, 0);
        r->lp_sent = lp_to;
    } else {
        nc_sbuf_puts(o, "null");
    }
    nc_sbuf_puts(o, ",\"finish_reason\":");
    if (finish) nc_sbuf_printf(o, "\"%s\"", nc_gen_text_finish_reason(r));
    else nc_sbuf_puts(o, "null");
    nc_sbuf_puts(o, "}");
    chunk_close(s, o);
}

/* First chunks: the assistant role of each chat choice, or the echoed
 * prompt of each completion choice. */
static void emit_start(oa_stream *s) {
    nc_sbuf *o = &s->base.out;
    bool echo = !s->chat && s->req.echo && s->req.prompt;
    for (int32_t row = 0; row < s->job.text.n_rows && (s->chat || echo); row++) {
        chunk_open(s, o);
        if (s->chat) {
            nc_sbuf_printf(o, "{\"index\":%d,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},", row);
        } else {
            nc_sbuf_printf(o, "{\"index\":%d,\"text\":", row);
            nc_sbuf_json_string(o, s->req.prompt, s->req.prompt_len);
            nc_sbuf_puts(o, ",");
        }
        nc_sbuf_puts(o, "\"logprobs\":null,\"finish_reason\":null}");
        chunk_close(s, o);
    }
    s->started = true;
}

static void emit_error_event(oa_stream *s, const nc_api_error *e) {
    nc_sbuf *o = &s->base.out;
    nc_sbuf_puts(o, "data: {\"error\":{\"message\":");
    nc_sbuf_json_string(o, e->message, strlen(e->message));
    nc_sbuf_printf(o, ",\"type\":\"%s\",\"param\":null,\"code\":%s%s%s}}\n\n",
                   e->status >= 500 ? "server_error" : "invalid_request_error", e->code ? "\"" : "",
                   e->code ? e->code : "null", e->code ? "\"" : "");
}

static void produce(nc_sse *base) {
    oa_stream *s = (oa_stream *)base;
    if (!s->started) emit_start(s);
    int rc = nc_job_poll(&s->job, 0.1, NULL, NULL);
    if (rc < 0 && s->job.fail == NC_JOB_GONE) {
        base->abort = true;
        return;
    }
    nc_gen_text *g = &s->job.text;
    for (int32_t row = 0; row < g->n_rows; row++) {
        nc_row_text *r = &g->rows[row];
        if (r->finish_sent) continue;
        size_t end = nc_gen_text_releasable(g, row);
        if (end > r->sent) {
            emit_row(s, row, r->text + r->sent, end - r->sent, false);
            r->sent = end;
        }
        if (r->done && r->finish != NC_FINISH_ERROR) {
            emit_row(s, row, "", 0, true);
            r->finish_sent = true;
        }
    }
    bool failed = rc < 0;
    for (int32_t row = 0; row < g->n_rows; row++)
        if (g->rows[row].done && g->rows[row].finish == NC_FINISH_ERROR) failed = true;
    if (failed) {
        nc_api_error e;
        nc_job_error(&s->job, &e);
        emit_error_event(s, &e);
    } else if (!nc_job_done(&s->job)) {
        return;
    } else if (s->req.include_usage) {
        chunk_open(s, &base->out);
        nc_sbuf_puts(&base->out, "],\"usage\":");
        usage_json(&base->out, &s->job);
        nc_sbuf_puts(&base->out, "}\n\n");
    }
    nc_sbuf_puts(&base->out, "data: [DONE]\n\n");
    base->finished = true;
}

static void destroy(nc_sse *base) {
    oa_stream *s = (oa_stream *)base;
    nc_job_end(&s->job);
    nc_api_request_free(&s->req);
    free(s);
}

/* ==== whole responses ==== */

static enum MHD_Result respond_whole(oa_stream *s, struct MHD_Connection *conn, nc_conn *c) {
    nc_job *job = &s->job;
    for (;;) {
        int rc = nc_job_poll(job, 0.1, NULL, NULL);
        if (rc < 0) {
            if (job->fail == NC_JOB_GONE) return MHD_NO; /* nobody to answer: close */
            nc_api_error e;
            nc_job_error(job, &e);
            return nc_http_error(conn, c, &e);
        }
        if (nc_job_done(job)) break;
    }
    nc_gen_text *g = &job->text;
    for (int32_t row = 0; row < g->n_rows; row++)
        if (g->rows[row].finish == NC_FINISH_ERROR && !g->rows[row].stop_hit) {
            nc_api_error e;
            job->fail = NC_JOB_ENGINE;
            nc_job_error(job, &e);
            return nc_http_error(conn, c, &e);
        }
    nc_sbuf o = {0};
    nc_sbuf_printf(&o, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", s->id,
                   s->chat ? "chat.completion" : "text_completion", s->created);
    nc_sbuf_json_string(&o, s->base.srv->model_name, strlen(s->base.srv->model_name));
    nc_sbuf_puts(&o, ",\"system_fingerprint\":null,\"choices\":[");
    bool echo = !s->chat && s->req.echo && s->req.prompt;
    size_t echo_len = echo ? s->req.prompt_len : 0;
    for (int32_t row = 0; row < g->n_rows; row++) {
        nc_row_text *r = &g->rows[row];
        nc_sbuf_printf(&o, "%s{\"index\":%d,", row ? "," : "", row);
        if (s->chat) {
            nc_sbuf_puts(&o, "\"message\":{\"role\":\"assistant\",\"content\":");
            nc_sbuf_json_string(&o, r->text ? r->text : "", r->len);
            nc_sbuf_puts(&o, "}");
        } else {
            nc_sbuf_puts(&o, "\"text\":");
            nc_sbuf t = {0};
            if (echo) nc_sbuf_append(&t, s->req.prompt, s->req.prompt_len);
            nc_sbuf_append(&t, r->text ? r->text : "", r->len);
            nc_sbuf_json_string(&o, t.buf, t.len);
            nc_sbuf_free(&t);
        }
        nc_sbuf_puts(&o, ",\"logprobs\":");
        if (s->req.logprobs) {
            if (s->chat) chat_logprobs(&o, g, r, 0, r->n_lp);
            else completion_logprobs(&o, g, r, 0, r->n_lp, echo_len);
        } else {
            nc_sbuf_puts(&o, "null");
        }
        nc_sbuf_printf(&o, ",\"finish_reason\":\"%s\"}", nc_gen_text_finish_reason(r));
    }
    nc_sbuf_puts(&o, "],\"usage\":");
    usage_json(&o, job);
    nc_sbuf_puts(&o, "}");
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}

/* ==== entry points ==== */

enum MHD_Result nc_api_openai(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    bool chat = c->ep == NC_EP_CHAT;
    enum MHD_Result ret;
    nc_api_error err;
    oa_stream *s = nc_xcalloc(1, sizeof *s);
    int32_t limit = nc_srv_ready(srv) ? srv->max_context : 0;
    if (nc_api_parse(chat ? NC_API_CHAT : NC_API_COMPLETION, c->body.buf, c->body.len, limit, &s->req, &err)) {
        free(s);
        return nc_http_error(conn, c, &err);
    }
    if (nc_srv_refuse_unready(srv, conn, c, &ret)) {
        nc_api_request_free(&s->req);
        free(s);
        return ret;
    }
    s->chat = chat;
    s->created = (long long)time(NULL);
    make_id(srv, chat, s->id, sizeof s->id);
    nc_tokens prompt = {0};
    nc_gen_params gen;
    int rc = nc_job_prompt(srv, &s->req, &prompt, &gen, &err);
    if (!rc)
        rc = nc_job_start(&s->job, srv, c, &prompt, &gen, false, s->req.stop, s->req.stop_len, s->req.n_stop,
                          nc_job_session(c, &s->req), &err);
    nc_tokens_free(&prompt);
    if (rc) {
        nc_api_request_free(&s->req);
        free(s);
        return nc_http_error(conn, c, &err);
    }
    s->base.srv = srv;
    s->base.produce = produce;
    s->base.destroy = destroy;
    if (s->req.stream) return nc_http_sse(conn, c, &s->base);
    ret = respond_whole(s, conn, c);
    destroy(&s->base);
    return ret;
}

static void model_json(nc_sbuf *o, nc_srv *srv) {
    nc_sbuf_puts(o, "{\"id\":");
    nc_sbuf_json_string(o, srv->model_name, strlen(srv->model_name));
    nc_sbuf_printf(o, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"nanochat-c\",\"max_model_len\":%d,"
                   "\"vocab_size\":%d}",
                   (long long)srv->t_created, srv->max_context, nc_tokenizer_vocab_size(srv->tok));
}

enum MHD_Result nc_api_models(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    nc_sbuf o = {0};
    nc_sbuf_puts(&o, "{\"object\":\"list\",\"data\":[");
    if (nc_srv_ready(srv)) model_json(&o, srv);
    nc_sbuf_puts(&o, "]}");
    enum MHD_Result ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}

/* GET /v1/models/{id} (the clients' models.retrieve): the model when the
 * id is its name, else OpenAI's 404. The id may hold slashes (OWNER/NAME). */
enum MHD_Result nc_api_model(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    enum MHD_Result ret;
    if (!nc_srv_ready(srv) && nc_srv_refuse_unready(srv, conn, c, &ret)) return ret;
    const char *id = c->url + strlen("/v1/models/");
    if (strcmp(id, srv->model_name)) {
        nc_api_error e;
        nc_api_fail(&e, 404, "model", "The model '%.200s' does not exist (this server serves '%s')", id,
                    srv->model_name);
        e.code = "model_not_found";
        return nc_http_error(conn, c, &e);
    }
    nc_sbuf o = {0};
    model_json(&o, srv);
    ret = nc_http_json(conn, c, 200, &o);
    nc_sbuf_free(&o);
    return ret;
}
