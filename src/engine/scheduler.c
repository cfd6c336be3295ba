/*
 * scheduler.c: continuous batching (scheduler.h) - the public API, the
 * queue, admission against the KV pool with prefix reuse, forking into n
 * rows, and retiring requests. One forward pass per step is built and run
 * by sched_step.c. See sched_internal.h for a request's life and the KV
 * reservation rule.
 *
 * Mirrors nanochat's Engine.generate (engine.py) for one request - prefill
 * once, copy the cache to n rows, sample each row, the calculator tool -
 * and does for many requests at once what nanochat's server cannot:
 * sequences join and leave the batch at every step.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tool/calculator.h"
#include "../util/common.h"
#include "sched_internal.h"

#define DEFAULT_PREFILL_CHUNK 512
#define DEFAULT_MAX_QUEUE 256
#define MAX_SAMPLES 256

/* ==== parameters ==== */

nc_gen_params nc_gen_params_default(void) {
    /* nanochat's chat CLI: temperature 0.6, top_k 50, 256 new tokens. */
    return (nc_gen_params){.temperature = 0.6f, .top_k = 50, .top_p = 1.0f, .min_p = 0.0f, .seed = 42,
                           .max_tokens = 256, .n = 1, .use_calculator = true, .top_logprobs = -1,
                           .speculative = true};
}

int nc_gen_params_validate(const nc_gen_params *p) {
    if (!(p->temperature >= 0.0f && p->temperature <= 10.0f))
        return nc_fail("temperature must be in [0, 10] (0 = greedy), got %g", (double)p->temperature);
    if (p->top_k < 0) return nc_fail("top_k must be >= 0 (0 = off), got %d", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return nc_fail("top_p must be in (0, 1] (1 = off), got %g", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return nc_fail("min_p must be in [0, 1] (0 = off), got %g", (double)p->min_p);
    if (p->max_tokens < 1) return nc_fail("max_tokens must be >= 1, got %d", p->max_tokens);
    if (p->n < 1 || p->n > MAX_SAMPLES) return nc_fail("n must be in [1, %d], got %d", MAX_SAMPLES, p->n);
    if (p->top_logprobs < -1 || p->top_logprobs > NC_MAX_TOP_LOGPROBS)
        return nc_fail("top_logprobs must be in [0, %d] (or -1 for none), got %d", NC_MAX_TOP_LOGPROBS,
                       p->top_logprobs);
    return 0;
}

const char *nc_finish_reason_name(nc_finish_reason r) {
    switch (r) {
    case NC_FINISH_NONE: return "none";
    case NC_FINISH_STOP: return "stop";
    case NC_FINISH_LENGTH: return "length";
    case NC_FINISH_CANCELLED: return "cancelled";
    case NC_FINISH_ERROR: return "error";
    }
    return "unknown";
}

/* ==== create / free ==== */

static int32_t blocks_for(int32_t tokens) { return (tokens + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS; }

nc_scheduler *nc_scheduler_create(nc_backend *backend, const nc_tokenizer *tok, const nc_scheduler_params *p) {
    if (!backend || !backend->model || !tok) {
        nc_fail("scheduler: a backend with a model and a tokenizer are required");
        return NULL;
    }
    const nc_model_config *cfg = &backend->model->cfg;
    if (nc_tokenizer_vocab_size(tok) > cfg->vocab_size) {
        nc_fail("scheduler: the tokenizer has %d ids but the model's vocabulary is %d",
                nc_tokenizer_vocab_size(tok), cfg->vocab_size);
        return NULL;
    }
    if (backend->max_seqs < 1 || backend->max_batch_tokens < 1) {
        nc_fail("scheduler: the backend allows no batch (max_seqs %d, max_batch_tokens %d)", backend->max_seqs,
                backend->max_batch_tokens);
        return NULL;
    }
    nc_scheduler_params def = {0};
    if (!p) p = &def;
    if (p->max_context < 0 || p->max_running < 0 || p->prefill_chunk < 0 || p->max_queue < 0) {
        nc_fail("scheduler: parameters must not be negative");
        return NULL;
    }
    nc_scheduler *s = nc_xcalloc(1, sizeof *s);
    s->backend = backend;
    s->tok = tok;
    s->V = cfg->vocab_size;
    s->max_context = p->max_context ? p->max_context : cfg->sequence_len;
    s->max_seqs = backend->max_seqs;
    s->max_batch_tokens = backend->max_batch_tokens;
    s->max_running = p->max_running ? p->max_running : s->max_seqs;
    s->max_running = NC_MIN(s->max_running, NC_MIN(s->max_seqs, s->max_batch_tokens));
    s->prefill_chunk = NC_MIN(p->prefill_chunk ? p->prefill_chunk : DEFAULT_PREFILL_CHUNK, s->max_batch_tokens);
    s->max_queue = p->max_queue ? p->max_queue : DEFAULT_MAX_QUEUE;
    for (int i = 0; i < NC_TOK_SPECIAL_COUNT; i++) s->special[i] = nc_tokenizer_special_id(tok, (nc_special_token)i);
    s->tool_ok = s->special[NC_TOK_PYTHON_START] >= 0 && s->special[NC_TOK_PYTHON_END] >= 0 &&
                 s->special[NC_TOK_OUTPUT_START] >= 0 && s->special[NC_TOK_OUTPUT_END] >= 0;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->next_id = 1;

    if (sched_spec_init(s, &p->spec)) goto fail;
    if (nc_kv_pool_init(&s->pool, backend->n_kv_blocks)) goto fail;
    nc_prefix_cache_init(&s->cache, 4 * s->max_running + 64);
    size_t ms = (size_t)s->max_seqs;
    s->decoding = nc_xcalloc((size_t)s->max_running, sizeof *s->decoding);
    s->host_chunks = nc_xcalloc(ms, sizeof *s->host_chunks);
    s->dev_chunks = nc_xcalloc(ms, sizeof *s->dev_chunks);
    s->host_meta = nc_xcalloc(ms, sizeof *s->host_meta);
    s->dev_meta = nc_xcalloc(ms, sizeof *s->dev_meta);
    s->dev_rows = nc_xcalloc(ms, sizeof *s->dev_rows);
    s->dev_tokens = nc_xcalloc(ms, sizeof *s->dev_tokens);
    size_t logit_rows = ms + (size_t)s->spec.max_tokens; /* a verified chunk has a row per draft too */
    s->dev_verified = nc_xcalloc(logit_rows, sizeof *s->dev_verified);
    s->dev_verified_lp = nc_xcalloc(logit_rows, sizeof *s->dev_verified_lp);
    s->logits = malloc(logit_rows * (size_t)s->V * sizeof *s->logits);
    if (!s->logits) {
        nc_fail("scheduler: out of memory for %zu rows of logits", logit_rows);
        goto fail;
    }
    if (nc_sampler_scratch_init(&s->scratch, s->V)) goto fail;
    s->expr = nc_xmalloc(NC_CALC_MAX_EXPR + 1);
    s->calc_out = nc_xmalloc(NC_CALC_RESULT_MAX);
    s->stats.kv_blocks_total = s->pool.n_blocks;
    return s;
fail:
    nc_scheduler_free(s);
    return NULL;
}

static void free_request(sched_req *r) {
    if (r->rows) {
        for (int32_t i = 0; i < r->params.n; i++) {
            free(r->rows[i].tokens);
            free(r->rows[i].blocks);
            free(r->rows[i].forced);
        }
        free(r->rows);
    }
    free(r->prompt);
    free(r);
}

static void release_row_blocks(nc_scheduler *s, sched_row *row) {
    for (int32_t b = 0; b < row->n_blocks; b++) nc_kv_pool_unref(&s->pool, row->blocks[b], false);
    row->n_blocks = 0;
    sched_spec_row_end(s, row);
}

void nc_scheduler_free(nc_scheduler *s) {
    if (!s) return;
    for (sched_req *r = s->in_head, *next; r; r = next) {
        next = r->next;
        free_request(r);
    }
    for (int32_t i = 0; i < s->n_waiting; i++) free_request(s->waiting[i]);
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        for (int32_t k = 0; k < r->params.n; k++) release_row_blocks(s, &r->rows[k]);
        free_request(r);
    }
    sched_spec_free(s);
    if (s->pool.n_blocks) nc_prefix_cache_free(&s->cache, &s->pool);
    nc_kv_pool_free(&s->pool);
    free(s->waiting);
    free(s->running);
    free(s->cancel_ids);
    free(s->decoding);
    free(s->host_chunks);
    free(s->dev_chunks);
    free(s->host_meta);
    free(s->dev_meta);
    free(s->dev_rows);
    free(s->dev_tokens);
    free(s->dev_verified);
    free(s->dev_verified_lp);
    free(s->logits);
    nc_sampler_scratch_free(&s->scratch);
    free(s->expr);
    free(s->calc_out);
    nc_tokens_free(&s->enc);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* ==== submit / cancel (any thread) ==== */

int nc_scheduler_submit(nc_scheduler *s, const int32_t *prompt, int32_t n_prompt, const nc_gen_params *params,
                        nc_gen_callback cb, void *user, uint64_t *request_id) {
    if (!params || !cb) return nc_fail("submit: params and a callback are required");
    if (nc_gen_params_validate(params)) return -1;
    if (!prompt || n_prompt < 1) return nc_fail("the prompt is empty");
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->V)
            return nc_fail("prompt token %d at position %d is outside the vocabulary [0, %d)", prompt[i], i, s->V);
    if (n_prompt >= s->max_context)
        return nc_fail("the prompt has %d tokens, which leaves no room to generate within the context limit "
                       "of %d tokens", n_prompt, s->max_context);
    if (params->n > s->max_running)
        return nc_fail("n = %d exceeds the %d rows this engine runs at once", params->n, s->max_running);
    int64_t row_tokens = NC_MIN((int64_t)n_prompt + params->max_tokens, (int64_t)s->max_context);
    int64_t B = blocks_for((int32_t)row_tokens);
    int64_t need = B + (int64_t)(params->n - 1) * (B - n_prompt / NC_KV_BLOCK_TOKENS);
    if (need > s->pool.n_blocks)
        return nc_fail("the request needs %lld KV blocks of %d tokens but the pool has %d; lower max_tokens "
                       "or n", (long long)need, NC_KV_BLOCK_TOKENS, s->pool.n_blocks);

    sched_req *r = calloc(1, sizeof *r);
    int32_t *pr = malloc((size_t)n_prompt * sizeof *pr);
    if (!r || !pr) {
        free(r);
        free(pr);
        return nc_fail("out of memory queueing a request");
    }
    memcpy(pr, prompt, (size_t)n_prompt * sizeof *pr);
    r->params = *params;
    r->prompt = pr;
    r->n_prompt = n_prompt;
    r->cb = cb;
    r->user = user;
    r->state = REQ_QUEUED;
    r->row_tokens = (int32_t)row_tokens;
    r->row_blocks = (int32_t)B;

    pthread_mutex_lock(&s->mu);
    if (s->stats.queued >= s->max_queue) {
        int32_t q = s->stats.queued;
        pthread_mutex_unlock(&s->mu);
        free_request(r);
        return nc_fail("the request queue is full (%d waiting)", q);
    }
    r->id = s->next_id++;
    if (s->in_tail) s->in_tail->next = r;
    else s->in_head = r;
    s->in_tail = r;
    s->n_incoming++;
    s->stats.queued++;
    if (request_id) *request_id = r->id;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void nc_scheduler_cancel(nc_scheduler *s, uint64_t request_id) {
    pthread_mutex_lock(&s->mu);
    if (s->n_cancel == s->cap_cancel) {
        s->cap_cancel = s->cap_cancel ? 2 * s->cap_cancel : 16;
        s->cancel_ids = nc_xrealloc(s->cancel_ids, (size_t)s->cap_cancel * sizeof *s->cancel_ids);
    }
    s->cancel_ids[s->n_cancel++] = request_id;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

bool nc_scheduler_wait_for_work(nc_scheduler *s, double timeout_s) {
    pthread_mutex_lock(&s->mu);
    struct timespec deadline = nc_monotonic_deadline(timeout_s);
    while (!s->n_incoming && !s->n_cancel && !s->n_active_published) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) break;
    }
    bool work = s->n_incoming || s->n_cancel || s->n_active_published;
    pthread_mutex_unlock(&s->mu);
    return work;
}

void nc_scheduler_get_stats(nc_scheduler *s, nc_scheduler_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}

/* ==== rows and events (stepping thread) ==== */

nc_gen_event sched_event(const sched_row *row) {
    nc_gen_event ev;
    memset(&ev, 0, sizeof ev);
    ev.request_id = row->req->id;
    ev.row = row->index;
    ev.token = -1;
    ev.n_prompt_tokens = row->req->n_prompt;
    ev.n_cached_tokens = row->req->n_cached;
    return ev;
}

void sched_row_finish(nc_scheduler *s, sched_row *row, nc_finish_reason why, const char *error) {
    if (row->state == ROW_DONE || row->state == ROW_DROPPED) return;
    nc_gen_event ev = sched_event(row);
    ev.finish = why;
    ev.error = error;
    row->req->cb(row->req->user, &ev);
    release_row_blocks(s, row);
    row->state = ROW_DROPPED;
}

int sched_row_add_block(nc_scheduler *s, sched_row *row) {
    NC_ASSERT(row->n_blocks < row->req->blk_cap);
    while (s->pool.n_free == 0)
        if (!nc_prefix_cache_evict_lru(&s->cache, &s->pool))
            return nc_fail("the KV pool is exhausted (%d blocks)", s->pool.n_blocks);
    row->blocks[row->n_blocks++] = nc_kv_pool_alloc(&s->pool);
    return 0;
}

/* Row `dst` starts as a copy of `src`'s first n_tokens computed positions:
 * full blocks shared, the partial one copied. */
static int share_prefix(nc_scheduler *s, sched_row *dst, const int32_t *src_blocks, int32_t n_tokens) {
    int32_t full = n_tokens / NC_KV_BLOCK_TOKENS, part = n_tokens % NC_KV_BLOCK_TOKENS;
    for (int32_t b = 0; b < full; b++) {
        nc_kv_pool_ref(&s->pool, src_blocks[b], false);
        dst->blocks[dst->n_blocks++] = src_blocks[b];
    }
    if (!part) return 0;
    int32_t src = src_blocks[full];
    nc_kv_pool_ref(&s->pool, src, false); /* keep the source alive through any eviction */
    int rc = sched_row_add_block(s, dst);
    if (!rc) rc = s->backend->ops->copy_kv_block(s->backend, src, dst->blocks[full], part);
    nc_kv_pool_unref(&s->pool, src, false);
    return rc;
}

int sched_fork(nc_scheduler *s, sched_req *r) {
    sched_row *row0 = &r->rows[0];
    for (int32_t i = 1; i < r->params.n; i++) {
        sched_row *row = &r->rows[i];
        memcpy(row->tokens, row0->tokens, (size_t)r->n_prompt * sizeof *row->tokens);
        row->n_tokens = row->n_computed = r->n_prompt;
        row->state = ROW_LIVE;
        if (share_prefix(s, row, row0->blocks, r->n_prompt)) return -1;
    }
    return 0;
}

/* ==== admission ==== */

/* Blocks that admitted rows may still allocate, at worst. */
static int64_t reserved_blocks(const nc_scheduler *s) {
    int64_t sum = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        const sched_req *r = s->running[i];
        if (r->state == REQ_PREFILL) {
            sum += r->row_blocks - r->rows[0].n_blocks;
            sum += (int64_t)(r->params.n - 1) * (r->row_blocks - r->n_prompt / NC_KV_BLOCK_TOKENS);
        } else {
            for (int32_t k = 0; k < r->params.n; k++)
                if (r->rows[k].state == ROW_LIVE) sum += r->row_blocks - r->rows[k].n_blocks;
        }
    }
    return sum;
}

static void remove_waiting_head(nc_scheduler *s) {
    memmove(s->waiting, s->waiting + 1, (size_t)(s->n_waiting - 1) * sizeof *s->waiting);
    s->n_waiting--;
    pthread_mutex_lock(&s->mu);
    s->stats.queued--;
    pthread_mutex_unlock(&s->mu);
}

/* Every row of a request that never ran gets one final event. */
static void finish_unstarted(sched_req *r, nc_finish_reason why, const char *error) {
    sched_row tmp = {.req = r};
    for (int32_t i = 0; i < r->params.n; i++) {
        tmp.index = i;
        nc_gen_event ev = sched_event(&tmp);
        ev.finish = why;
        ev.error = error;
        r->cb(r->user, &ev);
    }
}

static int alloc_rows(nc_scheduler *s, sched_req *r) {
    int32_t n = r->params.n;
    r->tok_cap = r->row_tokens + 1;
    r->blk_cap = r->row_blocks + 1;
    r->forced_cap = r->params.use_calculator ? NC_CALC_RESULT_MAX + 2 : 0;
    r->rows = calloc((size_t)n, sizeof *r->rows);
    if (!r->rows) return -1;
    for (int32_t i = 0; i < n; i++) {
        sched_row *row = &r->rows[i];
        row->req = r;
        row->index = i;
        row->state = ROW_IDLE;
        row->tokens = malloc((size_t)r->tok_cap * sizeof *row->tokens);
        row->blocks = malloc((size_t)r->blk_cap * sizeof *row->blocks);
        row->forced = r->forced_cap ? malloc((size_t)r->forced_cap * sizeof *row->forced) : NULL;
        if (!row->tokens || !row->blocks || (r->forced_cap && !row->forced)) return -1;
        nc_rng_seed(row->rng, r->params.seed + (uint64_t)i);
        sched_spec_row_init(s, row);
    }
    return 0;
}

static void admit(nc_scheduler *s) {
    while (s->n_waiting > 0) {
        sched_req *r = s->waiting[0];
        if (s->running_rows + r->params.n > s->max_running) return;
        int32_t match = 0;
        int32_t e = nc_prefix_cache_lookup(&s->cache, r->prompt, r->n_prompt, &match);
        int32_t reuse = NC_MIN(match, r->n_prompt - 1); /* the last prompt token is recomputed for its logits */
        int32_t full = reuse / NC_KV_BLOCK_TOKENS;
        int64_t need = (r->row_blocks - full) +
                       (int64_t)(r->params.n - 1) * (r->row_blocks - r->n_prompt / NC_KV_BLOCK_TOKENS);
        int64_t avail = (int64_t)s->pool.n_free + s->pool.n_cached - reserved_blocks(s) - full;
        if (need > avail) return; /* first come, first served: wait for blocks */

        remove_waiting_head(s);
        if (alloc_rows(s, r)) {
            finish_unstarted(r, NC_FINISH_ERROR, "out of memory starting the request");
            free_request(r);
            continue;
        }
        sched_row *row = &r->rows[0];
        memcpy(row->tokens, r->prompt, (size_t)r->n_prompt * sizeof *row->tokens);
        row->n_tokens = r->n_prompt;
        row->state = ROW_LIVE;
        if (e >= 0 && reuse > 0) {
            nc_prefix_cache_touch(&s->cache, e);
            if (share_prefix(s, row, s->cache.entries[e].blocks, reuse)) {
                release_row_blocks(s, row); /* could not copy: prefill from scratch */
                reuse = 0;
            }
        } else {
            reuse = 0;
        }
        row->n_computed = reuse;
        r->n_cached = reuse;
        s->acc.tokens_cached += reuse;
        r->state = REQ_PREFILL;
        s->running[s->n_running++] = r;
        s->running_rows += r->params.n;
    }
}

/* ==== step ==== */

static void retire_finished(nc_scheduler *s) {
    int32_t k = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        bool done = true;
        for (int32_t j = 0; j < r->params.n && done; j++)
            done = r->rows[j].state == ROW_DONE || r->rows[j].state == ROW_DROPPED;
        if (done) {
            s->running_rows -= r->params.n;
            for (int32_t j = 0; j < r->params.n; j++) sched_spec_row_end(s, &r->rows[j]);
            free_request(r);
        } else {
            s->running[k++] = r;
        }
    }
    s->n_running = k;
}

/* Ends every request marked `cancel`: each row gets one final event with
 * `why` (and `error`), blocks go back to the pool. A waiting request leaves
 * the queue's count before its final event, so whoever sees that event
 * (the server answering its client) finds its place free for the next. */
static void end_marked(nc_scheduler *s, nc_finish_reason why, const char *error) {
    int32_t k = 0;
    for (int32_t i = 0; i < s->n_waiting; i++) {
        sched_req *r = s->waiting[i];
        if (!r->cancel) {
            s->waiting[k++] = r;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->stats.queued--;
        pthread_mutex_unlock(&s->mu);
        finish_unstarted(r, why, error);
        free_request(r);
    }
    s->n_waiting = k;
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        if (!r->cancel) continue;
        for (int32_t j = 0; j < r->params.n; j++) {
            sched_row *row = &r->rows[j];
            if (row->state == ROW_IDLE) row->state = ROW_LIVE; /* not forked yet: still owed an event */
            sched_row_finish(s, row, why, error);
        }
    }
    retire_finished(s);
}

static void apply_cancels(nc_scheduler *s, const uint64_t *ids, int32_t n) {
    for (int32_t c = 0; c < n; c++) {
        for (int32_t i = 0; i < s->n_waiting; i++)
            if (s->waiting[i]->id == ids[c]) s->waiting[i]->cancel = true;
        for (int32_t i = 0; i < s->n_running; i++)
            if (s->running[i]->id == ids[c]) s->running[i]->cancel = true;
    }
    end_marked(s, NC_FINISH_CANCELLED, NULL);
}

static void publish(nc_scheduler *s) {
    int32_t rows = 0;
    for (int32_t i = 0; i < s->n_running; i++)
        for (int32_t j = 0; j < s->running[i]->params.n; j++)
            rows += s->running[i]->rows[j].state == ROW_LIVE;
    pthread_mutex_lock(&s->mu);
    int32_t queued = s->stats.queued;
    s->stats = s->acc;
    s->stats.queued = queued;
    s->stats.running_requests = s->n_running;
    s->stats.running_rows = rows;
    s->stats.kv_blocks_total = s->pool.n_blocks;
    s->stats.kv_blocks_used = s->pool.n_used;
    s->stats.kv_blocks_cached = s->pool.n_cached;
    s->n_active_published = s->n_waiting + s->n_running;
    pthread_mutex_unlock(&s->mu);
}

/* Moves submitted requests to the waiting queue and takes the pending
 * cancellations: into `local` (of `cap` ids) when they fit, else into a
 * malloc'ed array the caller frees. */
static int32_t take_incoming(nc_scheduler *s, uint64_t *local, int32_t cap, uint64_t **ids) {
    pthread_mutex_lock(&s->mu);
    while (s->in_head) {
        sched_req *r = s->in_head;
        s->in_head = r->next;
        r->next = NULL;
        if (s->n_waiting == s->cap_waiting) {
            s->cap_waiting = s->cap_waiting ? 2 * s->cap_waiting : 64;
            s->waiting = nc_xrealloc(s->waiting, (size_t)s->cap_waiting * sizeof *s->waiting);
        }
        s->waiting[s->n_waiting++] = r;
    }
    s->in_tail = NULL;
    s->n_incoming = 0;
    *ids = s->n_cancel > cap ? nc_xmalloc((size_t)s->n_cancel * sizeof **ids) : local;
    if (s->n_cancel) memcpy(*ids, s->cancel_ids, (size_t)s->n_cancel * sizeof **ids);
    int32_t n = s->n_cancel;
    s->n_cancel = 0;
    pthread_mutex_unlock(&s->mu);
    if (!s->running) s->running = nc_xcalloc((size_t)s->max_running, sizeof *s->running);
    return n;
}

int nc_scheduler_step(nc_scheduler *s) {
    double t0 = nc_now();
    uint64_t local_ids[64], *ids;
    int32_t n_ids = take_incoming(s, local_ids, (int32_t)NC_ARRAY_LEN(local_ids), &ids);
    if (n_ids) apply_cancels(s, ids, n_ids);
    if (ids != local_ids) free(ids);
    admit(s);
    int rc = s->n_running ? sched_run_batch(s) : 0;
    retire_finished(s);
    s->acc.step_seconds += nc_now() - t0;
    publish(s);
    return rc < 0 ? -1 : s->n_waiting + s->n_running;
}

void nc_scheduler_fail_all(nc_scheduler *s, const char *error) {
    uint64_t local_ids[64], *ids;
    take_incoming(s, local_ids, (int32_t)NC_ARRAY_LEN(local_ids), &ids);
    if (ids != local_ids) free(ids);
    for (int32_t i = 0; i < s->n_waiting; i++) s->waiting[i]->cancel = true;
    for (int32_t i = 0; i < s->n_running; i++) s->running[i]->cancel = true;
    end_marked(s, NC_FINISH_ERROR, error);
    publish(s);
}

int32_t nc_scheduler_cached_prefix(nc_scheduler *s, const int32_t *prompt, int32_t n) {
    return nc_prefix_cache_match(&s->cache, prompt, n);
}

int nc_scheduler_run(nc_scheduler *s, const int32_t *prompt, int32_t n_prompt, const nc_gen_params *params,
                     nc_gen_callback cb, void *user) {
    if (nc_scheduler_submit(s, prompt, n_prompt, params, cb, user, NULL)) return -1;
    /* A failed step has already failed and retired its requests (their rows
     * got NC_FINISH_ERROR events): keep stepping until nothing is left. */
    while (nc_scheduler_step(s) != 0) {}
    return 0;
}
