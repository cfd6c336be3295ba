/*
 * job.c: one generation request from the HTTP side (prompt, submit, wait,
 * cancel).
 *
 * The router (router.c) picks the engine a request runs on; the engine
 * threads themselves are engines.c's.
 *
 * Prompts are built as nanochat's chat_web.py builds them (docs/model.md, Chat format): the
 * chat renderer for conversations, <|bos|> + text for completions. Unlike
 * nanochat's server, a conversation longer than the context is refused with
 * the limit in the message (nanochat crashes, issue #581), or, when the
 * request says "truncate": true, its oldest whole turns are dropped (a
 * system message is kept) until it fits.
 */
#include "srv.h"

#include <string.h>
#include <time.h>

#include "../util/common.h"

/* How often a job that keeps receiving tokens checks that its client is
 * still connected (a peek at the socket). */
#define NC_JOB_GONE_CHECK_S 0.25
/* After cancelling, how long a failing job waits for the engine to let go
 * of its request (one engine step, normally) before answering anyway. */
#define NC_JOB_RELEASE_WAIT_S 5.0

/* ==== readiness ==== */

bool nc_srv_ready(nc_srv *srv) {
    return atomic_load_explicit(&srv->state, memory_order_acquire) == NC_SRV_READY;
}

bool nc_srv_refuse_unready(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c, enum MHD_Result *ret) {
    nc_api_error e = {.status = 503, .code = "unavailable"};
    if (atomic_load(&srv->stopping)) {
        snprintf(e.message, sizeof e.message, "the server is shutting down");
        *ret = nc_http_error(conn, c, &e);
        return true;
    }
    if (!nc_srv_ready(srv)) {
        snprintf(e.message, sizeof e.message, "the model is still loading; retry shortly (GET /health says when it is ready)");
        *ret = nc_http_error_retry(conn, c, &e, 5);
        return true;
    }
    return false;
}

/* ==== prompts ==== */

static uint64_t random_seed(nc_srv *srv) {
    /* splitmix64 over a shared counter: distinct seeds for concurrent requests. */
    uint64_t z = atomic_fetch_add(&srv->seed_state, 0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (z ^ (z >> 31)) & 0x7FFFFFFFull; /* nanochat draws from [0, 2^31) */
}

/* Renders the system message (if any) and messages[first..]. */
static int render_chat(nc_srv *srv, const nc_api_request *req, int first, nc_tokens *out, nc_api_error *err) {
    nc_chat_message *msgs = nc_xmalloc(sizeof *msgs * (size_t)req->n_messages);
    int n = 0;
    bool has_system = req->messages[0].role == NC_ROLE_SYSTEM;
    if (has_system) msgs[n++] = req->messages[0];
    for (int i = NC_MAX(first, has_system ? 1 : 0); i < req->n_messages; i++) msgs[n++] = req->messages[i];
    out->n = 0;
    int rc = nc_chat_render(srv->tok, msgs, n, out);
    free(msgs);
    if (rc) return nc_api_fail(err, 400, "messages", "%s", nc_error());
    return 0;
}

/* A conversation too long for the context, with "truncate": drops its
 * oldest whole turns (each from a user message up to the next one), never
 * the system message, until the rest fits. Returns 1 if even the last turn
 * alone is too long (`prompt` holds that attempt). */
static int truncate_chat(nc_srv *srv, const nc_api_request *req, nc_tokens *prompt, nc_api_error *err) {
    int first = req->messages[0].role == NC_ROLE_SYSTEM ? 1 : 0;
    for (int i = first + 1; i < req->n_messages; i++) {
        if (req->messages[i].role != NC_ROLE_USER) continue;
        if (render_chat(srv, req, i, prompt, err)) return -1;
        if ((int64_t)prompt->n < srv->max_context) return 0;
    }
    return 1;
}

int nc_job_prompt(nc_srv *srv, const nc_api_request *req, nc_tokens *prompt, nc_gen_params *gen,
                  nc_api_error *err) {
    const nc_tokenizer *tok = srv->tok;
    int32_t ctx = srv->max_context;
    *gen = req->gen;
    bool chat = req->kind != NC_API_COMPLETION;
    if (!chat) {
        if (req->has_prompt_ids) {
            int vocab = nc_tokenizer_vocab_size(tok);
            for (int32_t i = 0; i < req->n_prompt_ids; i++)
                if (req->prompt_ids[i] >= vocab)
                    return nc_api_fail(err, 400, "prompt", "token id %d is out of range (vocabulary size %d)",
                                       req->prompt_ids[i], vocab);
            if (req->n_prompt_ids == 0) return nc_api_fail(err, 400, "prompt", "'prompt' holds no tokens");
            nc_tokens_append(prompt, req->prompt_ids, (size_t)req->n_prompt_ids);
        } else {
            nc_tokens_push(prompt, nc_tokenizer_special_id(tok, NC_TOK_BOS));
            if (nc_tokenizer_encode(tok, req->prompt, req->prompt_len, prompt))
                return nc_api_fail(err, 400, "prompt", "%s", nc_error());
        }
        if ((int64_t)prompt->n >= ctx && req->truncate && ctx >= 2) {
            /* Keep the first token (<|bos|>) and the newest ctx - 2. */
            size_t keep = (size_t)ctx - 2;
            memmove(prompt->ids + 1, prompt->ids + prompt->n - keep, keep * sizeof *prompt->ids);
            prompt->n = keep + 1;
        }
    } else {
        if (render_chat(srv, req, 0, prompt, err)) return -1;
        if ((int64_t)prompt->n >= ctx && req->truncate) {
            int rc = truncate_chat(srv, req, prompt, err);
            if (rc < 0) return -1;
            if (rc > 0) {
                bool system = req->messages[0].role == NC_ROLE_SYSTEM;
                nc_api_fail(err, 400, "messages",
                            "This model's maximum context length is %d tokens, and the last turn alone%s is "
                            "%zu tokens (at least one token must be left to generate); \"truncate\" drops only "
                            "older turns. Shorten the last message.", ctx, system ? " with the system message" : "",
                            prompt->n);
                err->code = "context_length_exceeded";
                return -1;
            }
        }
    }
    if ((int64_t)prompt->n >= ctx) {
        nc_api_fail(err, 400, chat ? "messages" : "prompt",
                    "This model's maximum context length is %d tokens, but the prompt is %zu tokens "
                    "(at least one token must be left to generate). Shorten it, or send \"truncate\": true "
                    "to drop the oldest context.", ctx, prompt->n);
        err->code = "context_length_exceeded";
        return -1;
    }
    int32_t room = ctx - (int32_t)prompt->n;
    if (gen->max_tokens <= 0 || gen->max_tokens > room) gen->max_tokens = room;
    if (!req->seed_given) gen->seed = random_seed(srv);
    return 0;
}

/* ==== submit, wait, end ==== */

const char *nc_job_session(const nc_conn *c, const nc_api_request *req) {
    if (c && c->session[0]) return c->session;
    return req->user && req->user[0] ? req->user : NULL;
}

/* Gives back a request's rows to its engine's load. */
static void unroute(nc_job *job) {
    if (job->engine) atomic_fetch_sub(&job->engine->outstanding, job->rows);
    job->engine = NULL;
}

int nc_job_start(nc_job *job, nc_srv *srv, nc_conn *c, const nc_tokens *prompt,
                 const nc_gen_params *gen, bool tool_events, char *const *stop, const size_t *stop_len,
                 int n_stop, const char *session, nc_api_error *err) {
    memset(job, 0, sizeof *job);
    if (atomic_load(&srv->stopping))
        return nc_api_fail(err, 503, NULL, "the server is shutting down");
    job->engine = nc_router_pick(srv, prompt, session, gen->n);
    if (!job->engine) {
        nc_api_fail(err, 503, NULL, "no engine is serving (every device has failed; see GET /health)");
        err->code = "no_engine";
        return -1;
    }
    job->rows = gen->n;
    nc_gen_queue *q = nc_gen_queue_create(gen->n, gen->top_logprobs, srv->opt.max_lag_tokens,
                                          &job->engine->metrics, srv->waker);
    if (!q) {
        unroute(job);
        return nc_api_fail(err, 503, NULL, "out of memory for a new request");
    }
    job->srv = srv;
    job->q = q;
    job->fd = c ? c->fd : -1;
    job->t_start = nc_now();
    job->deadline = job->t_start + srv->opt.request_timeout_s;
    job->n_prompt = (int32_t)prompt->n;
    job->events_cap = q->cap;
    job->events = nc_xmalloc(sizeof *job->events * (size_t)q->cap);
    if (gen->top_logprobs > 0)
        job->tops = nc_xmalloc(sizeof *job->tops * (size_t)q->cap * (size_t)gen->top_logprobs);
    nc_gen_text_init(&job->text, srv->tok, gen->n, tool_events, gen->top_logprobs, stop, stop_len, n_stop);
    q->t_submit = job->t_start;
    nc_scheduler *sched = job->engine->sched;
    if (nc_scheduler_submit(sched, prompt->ids, (int32_t)prompt->n, gen, nc_gen_queue_callback, q,
                            &job->request_id)) {
        nc_scheduler_stats st;
        nc_scheduler_get_stats(sched, &st);
        int full = srv->opt.model.max_queue > 0 && st.queued >= srv->opt.model.max_queue;
        unroute(job);
        nc_api_fail(err, full ? 503 : 400, NULL, "%s", full ? "the server is at capacity (request queue full); "
                    "retry shortly" : nc_error());
        if (full) err->code = "queue_full";
        nc_gen_queue_release(q); /* the callback will never run: drop both references */
        nc_gen_queue_release(q);
        free(job->events);
        free(job->tops);
        nc_gen_text_free(&job->text);
        memset(job, 0, sizeof *job);
        return -1;
    }
    atomic_fetch_add(&srv->active_jobs, 1);
    nc_metrics_prompt_tokens(&srv->metrics, (int64_t)prompt->n);
    if (c) {
        job->c = c;
        c->job = job;
        c->log.generation = true;
    }
    return 0;
}

static void cancel(nc_job *job) {
    if (job->cancel_sent || job->engine_done) return;
    nc_gen_queue_stop_all(job->q);
    nc_scheduler_cancel(job->engine->sched, job->request_id);
    job->cancel_sent = true;
}

/* Cancels a job that failed (a timeout, a slow client) and waits,
 * at most NC_JOB_RELEASE_WAIT_S, for the engine's last event of it: the
 * cancel takes effect at the engine's next step, and until then the
 * request still holds its place in the queue, so a client answered before
 * that and sending its next request at once could meet 503 queue_full.
 * The events that arrive meanwhile are dropped (the answer is an error). */
static void cancel_and_release(nc_job *job) {
    cancel(job);
    double until = nc_now() + NC_JOB_RELEASE_WAIT_S;
    while (!job->engine_done && nc_now() < until) {
        bool done = false;
        nc_gen_queue_take(job->q, job->events, job->tops, job->events_cap, 0.05, &done);
        job->engine_done = done;
    }
}

bool nc_job_done(const nc_job *job) { return nc_gen_text_all_done(&job->text); }

int nc_job_poll(nc_job *job, double slice_s, nc_job_tool_fn on_tool, void *user) {
    if (job->fail != NC_JOB_RUNNING) return -1;
    bool engine_done = false;
    int32_t n = nc_gen_queue_take(job->q, job->events, job->tops, job->events_cap, slice_s, &engine_done);
    for (int32_t i = 0; i < n && job->t_first_token == 0; i++)
        if (job->events[i].token >= 0) job->t_first_token = nc_now();
    int32_t per = job->text.top_logprobs > 0 ? job->text.top_logprobs : 0;
    for (int32_t i = 0; i < n; i++) {
        nc_tool_event tool;
        int flags = nc_gen_text_feed(&job->text, &job->events[i], job->tops ? &job->tops[(size_t)i * (size_t)per] : NULL,
                                     &tool);
        if (flags & NC_FEED_STOP_HIT) nc_gen_queue_stop_row(job->q, job->events[i].row);
        if ((flags & NC_FEED_TOOL) && on_tool) on_tool(user, job->events[i].row, &tool);
    }
    job->engine_done = engine_done;
    if (nc_gen_queue_overflowed(job->q)) {
        /* Tokens were dropped for this client: its answer is incomplete. */
        job->fail = NC_JOB_OVERFLOW;
        cancel_and_release(job);
        return -1;
    }
    if (nc_job_done(job)) {
        /* Rows ended by stop strings: free their KV blocks now. */
        if (!engine_done) cancel(job);
        return n > 0;
    }
    nc_srv *srv = job->srv;
    double now = nc_now();
    /* A client that left is noticed by a failed write, but a whole
     * (non-streamed) response writes nothing until the end: look at the
     * socket when nothing arrived, and at least every NC_JOB_GONE_CHECK_S. */
    bool look = n == 0 || now >= job->next_gone_check;
    if (look) job->next_gone_check = now + NC_JOB_GONE_CHECK_S;
    if (now > job->deadline) job->fail = NC_JOB_TIMEOUT;
    else if (atomic_load(&srv->abort_jobs)) job->fail = NC_JOB_SHUTDOWN;
    else if (look && nc_http_client_gone(job->fd)) job->fail = NC_JOB_GONE;
    if (job->fail == NC_JOB_RUNNING) return n > 0;
    if (job->fail == NC_JOB_TIMEOUT) cancel_and_release(job);
    else cancel(job); /* gone: nobody to answer; shutdown: no next request */
    return -1;
}

void nc_job_error(const nc_job *job, nc_api_error *err) {
    char msg[256];
    switch (job->fail) {
    case NC_JOB_TIMEOUT:
        nc_api_fail(err, 504, NULL, "the request ran past the server's limit of %.0f s and was cancelled",
                    job->srv->opt.request_timeout_s);
        err->code = "timeout";
        break;
    case NC_JOB_SHUTDOWN:
        nc_api_fail(err, 503, NULL, "the server is shutting down");
        break;
    case NC_JOB_OVERFLOW:
        nc_api_fail(err, 500, NULL, "the client read the stream too slowly; the request was cancelled");
        break;
    default:
        if (!nc_gen_queue_error(job->q, msg, sizeof msg)) snprintf(msg, sizeof msg, "generation failed");
        nc_api_fail(err, 500, NULL, "%s", msg);
        break;
    }
}

/* The request's outcome for its log line: the rows' finish reasons (each
 * distinct one, in row order), or why the job failed. */
static void finish_text(const nc_job *job, char *out, size_t cap) {
    static const char *const failures[] = {"", "cancelled", "timeout", "shutdown", "client_too_slow", "error"};
    out[0] = 0;
    if (job->fail != NC_JOB_RUNNING) {
        snprintf(out, cap, "%s", failures[job->fail]);
        return;
    }
    if (!nc_job_done(job)) {
        snprintf(out, cap, "cancelled"); /* the client left mid-generation */
        return;
    }
    for (int32_t r = 0; r < job->text.n_rows; r++) {
        const char *reason = nc_gen_text_finish_reason(&job->text.rows[r]);
        bool seen = false;
        for (int32_t k = 0; k < r && !seen; k++) seen = !strcmp(reason, nc_gen_text_finish_reason(&job->text.rows[k]));
        if (seen) continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? "," : "", reason);
    }
}

void nc_job_report(nc_job *job) {
    nc_conn *c = job->c;
    if (!c) return;
    nc_reqlog *log = &c->log;
    log->prompt_tokens = job->n_prompt;
    log->cached_tokens = job->q ? job->q->n_cached_tokens : 0;
    log->completion_tokens = 0;
    for (int32_t r = 0; r < job->text.n_rows; r++) log->completion_tokens += job->text.rows[r].n_tokens;
    log->t_first_token = job->t_first_token;
    finish_text(job, log->finish, sizeof log->finish);
    if (job->fail == NC_JOB_GONE) log->disconnected = true;
    c->job = NULL;
    job->c = NULL;
}

void nc_job_end(nc_job *job) {
    if (!job->q) return;
    nc_job_report(job);
    bool early = !nc_job_done(job); /* the client left (or the job failed) mid-generation */
    cancel(job);
    if (early || job->fail != NC_JOB_RUNNING) nc_metrics_cancelled(&job->srv->metrics);
    nc_metrics_e2e(&job->srv->metrics, nc_now() - job->t_start);
    nc_gen_queue_release(job->q);
    free(job->events);
    free(job->tops);
    nc_gen_text_free(&job->text);
    unroute(job);
    atomic_fetch_sub(&job->srv->active_jobs, 1);
    memset(job, 0, sizeof *job);
}
