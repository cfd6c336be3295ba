/*
 * job.c: one generation request from the HTTP side (prompt, submit, wait,
 * cancel), and the engine thread that opens the engine bundle and steps
 * its scheduler.
 *
 * Prompts are built as nanochat's chat_web.py builds them (docs/model.md, Chat format): the
 * chat renderer for conversations, <|bos|> + text for completions. Unlike
 * nanochat's server, a conversation longer than the context is refused with
 * the limit in the message (nanochat crashes, issue #581), or, when the
 * request says "truncate": true, its oldest messages are dropped (a system
 * message is kept) until it fits.
 */
#include "srv.h"

#include <string.h>
#include <time.h>

#include "../util/common.h"

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

static int render_chat(nc_srv *srv, const nc_api_request *req, int first, nc_tokens *out, nc_api_error *err) {
    nc_chat_message *msgs = nc_xmalloc(sizeof *msgs * (size_t)req->n_messages);
    int n = 0;
    bool has_system = req->n_messages > 0 && req->messages[0].role == NC_ROLE_SYSTEM;
    if (has_system) msgs[n++] = req->messages[0];
    for (int i = NC_MAX(first, has_system ? 1 : 0); i < req->n_messages; i++) msgs[n++] = req->messages[i];
    out->n = 0;
    int rc = nc_chat_render(srv->b.tok, msgs, n, out);
    free(msgs);
    if (rc) return nc_api_fail(err, 400, "messages", "%s", nc_error());
    return 0;
}

int nc_job_prompt(nc_srv *srv, const nc_api_request *req, nc_tokens *prompt, nc_gen_params *gen,
                  nc_api_error *err) {
    const nc_tokenizer *tok = srv->b.tok;
    int32_t ctx = srv->b.max_context;
    *gen = req->gen;
    if (req->kind == NC_API_COMPLETION) {
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
        for (int first = 1; (int64_t)prompt->n >= ctx && req->truncate && first < req->n_messages; first++)
            if (render_chat(srv, req, first, prompt, err)) return -1;
    }
    if ((int64_t)prompt->n >= ctx) {
        nc_api_fail(err, 400, req->kind == NC_API_COMPLETION ? "prompt" : "messages",
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

int nc_job_start(nc_job *job, nc_srv *srv, struct MHD_Connection *conn, const nc_tokens *prompt,
                 const nc_gen_params *gen, bool tool_events, char *const *stop, const size_t *stop_len,
                 int n_stop, nc_api_error *err) {
    memset(job, 0, sizeof *job);
    if (atomic_load(&srv->stopping))
        return nc_api_fail(err, 503, NULL, "the server is shutting down");
    nc_gen_queue *q = nc_gen_queue_create(gen->n, gen->top_logprobs, srv->opt.max_lag_tokens, &srv->metrics,
                                          srv->waker);
    if (!q) return nc_api_fail(err, 503, NULL, "out of memory for a new request");
    job->srv = srv;
    job->q = q;
    job->fd = conn ? nc_http_client_fd(conn) : -1;
    job->t_start = nc_now();
    job->deadline = job->t_start + srv->opt.request_timeout_s;
    job->n_prompt = (int32_t)prompt->n;
    job->events_cap = q->cap;
    job->events = nc_xmalloc(sizeof *job->events * (size_t)q->cap);
    if (gen->top_logprobs > 0)
        job->tops = nc_xmalloc(sizeof *job->tops * (size_t)q->cap * (size_t)gen->top_logprobs);
    nc_gen_text_init(&job->text, srv->b.tok, gen->n, tool_events, gen->top_logprobs, stop, stop_len, n_stop);
    q->t_submit = job->t_start;
    if (nc_scheduler_submit(srv->b.sched, prompt->ids, (int32_t)prompt->n, gen, nc_gen_queue_callback, q,
                            &job->request_id)) {
        nc_scheduler_stats st;
        nc_scheduler_get_stats(srv->b.sched, &st);
        int full = srv->opt.model.max_queue > 0 && st.queued >= srv->opt.model.max_queue;
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
    return 0;
}

static void cancel(nc_job *job) {
    if (job->cancel_sent || job->engine_done) return;
    nc_gen_queue_stop_all(job->q);
    nc_scheduler_cancel(job->srv->b.sched, job->request_id);
    job->cancel_sent = true;
}

bool nc_job_done(const nc_job *job) { return nc_gen_text_all_done(&job->text); }

int nc_job_poll(nc_job *job, double slice_s, nc_job_tool_fn on_tool, void *user) {
    if (job->fail != NC_JOB_RUNNING) return -1;
    bool engine_done = false;
    int32_t n = nc_gen_queue_take(job->q, job->events, job->tops, job->events_cap, slice_s, &engine_done);
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
        cancel(job);
        return -1;
    }
    if (nc_job_done(job)) {
        /* Rows ended by stop strings: free their KV blocks now. */
        if (!engine_done) cancel(job);
        return n > 0;
    }
    nc_srv *srv = job->srv;
    if (nc_now() > job->deadline) job->fail = NC_JOB_TIMEOUT;
    else if (atomic_load(&srv->abort_jobs)) job->fail = NC_JOB_SHUTDOWN;
    else if (n == 0 && nc_http_client_gone(job->fd)) job->fail = NC_JOB_GONE;
    if (job->fail == NC_JOB_RUNNING) return n > 0;
    cancel(job);
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

void nc_job_end(nc_job *job) {
    if (!job->q) return;
    bool early = !nc_job_done(job); /* the client left (or the job failed) mid-generation */
    cancel(job);
    if (early || job->fail != NC_JOB_RUNNING) nc_metrics_cancelled(&job->srv->metrics);
    nc_metrics_e2e(&job->srv->metrics, nc_now() - job->t_start);
    nc_gen_queue_release(job->q);
    free(job->events);
    free(job->tops);
    nc_gen_text_free(&job->text);
    atomic_fetch_sub(&job->srv->active_jobs, 1);
    memset(job, 0, sizeof *job);
}

/* ==== the engine thread ==== */

static void set_model_name(nc_srv *srv) {
    if (srv->opt.model_name && srv->opt.model_name[0]) {
        snprintf(srv->model_name, sizeof srv->model_name, "%s", srv->opt.model_name);
        return;
    }
    /* The model's directory name ("models/picochat/model_000100.pt" ->
     * "picochat"), or a random model's description. */
    const char *src = srv->b.model->source ? srv->b.model->source : "nanochat";
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", src);
    for (int pass = 0; pass < 2; pass++) {
        size_t n = strlen(tmp);
        while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
        char *slash = strrchr(tmp, '/');
        const char *base = slash ? slash + 1 : tmp;
        bool is_file = strstr(base, ".pt") || strstr(base, ".safetensors") || strstr(base, ".json");
        if (pass == 0 && is_file && slash) { *slash = 0; continue; }
        snprintf(srv->model_name, sizeof srv->model_name, "%.127s", base);
        break;
    }
}

void *nc_engine_main(void *arg) {
    nc_srv *srv = arg;
    double t0 = nc_now();
    if (nc_bundle_open(&srv->b, &srv->opt.model)) {
        fprintf(stderr, "nanochat serve: %s\n", nc_error());
        atomic_store(&srv->state, NC_SRV_FAILED);
        return NULL;
    }
    /* No sequence holds KV blocks yet: the one moment prepare_decode may run. */
    if (srv->b.backend->ops->prepare_decode) {
        double tp = nc_now();
        if (srv->b.backend->ops->prepare_decode(srv->b.backend, srv->b.backend->max_seqs)) {
            fprintf(stderr, "nanochat serve: preparing decode steps: %s\n", nc_error());
            atomic_store(&srv->state, NC_SRV_FAILED);
            return NULL;
        }
        fprintf(stderr, "nanochat serve: decode steps of 1..%d rows prepared in %.1f s\n", srv->b.backend->max_seqs,
                nc_now() - tp);
    }
    const nc_model_config *cfg = &srv->b.model->cfg;
    set_model_name(srv);
    snprintf(srv->device, sizeof srv->device, "%s", nc_backend_describe(srv->b.backend));
    atomic_store_explicit(&srv->state, NC_SRV_READY, memory_order_release);
    fprintf(stderr, "nanochat serve: ready in %.1f s: %s (%s, %d layers), context %d, %s\n", nc_now() - t0,
            srv->model_name, nc_generation_name(cfg->generation), cfg->n_layer, srv->b.max_context, srv->device);
    fflush(stderr);

    double last_report = 0.0;
    while (!atomic_load(&srv->engine_stop)) {
        if (!nc_scheduler_wait_for_work(srv->b.sched, 0.1)) continue;
        if (nc_scheduler_step(srv->b.sched) < 0) {
            /* The failing rows got NC_FINISH_ERROR events; say it at most once a second. */
            if (nc_now() - last_report >= 1.0) {
                fprintf(stderr, "nanochat serve: engine step failed: %s\n", nc_error());
                last_report = nc_now();
            }
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        nc_gen_waker_kick(srv->waker); /* the consumers of this step's tokens */
        nc_scheduler_stats st;
        nc_scheduler_get_stats(srv->b.sched, &st);
        nc_metrics_step(&srv->metrics, st.last_batch_rows);
    }
    return NULL;
}
