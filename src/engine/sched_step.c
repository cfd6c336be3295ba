/*
 * sched_step.c: one scheduling step's forward pass (see sched_internal.h).
 *
 * Batch: every decoding row contributes its last token (one position, or
 * more with drafts to verify); then requests still prefilling contribute
 * chunks of their prompt (at most prefill_chunk each) while the backend's
 * token and sequence limits allow, oldest first. Decode rows come first, so a long prompt never
 * stalls running streams: it is spread over several steps.
 *
 * When the backend samples on the device, chunks whose tokens can be
 * sampled there (decode rows, the final chunk of an n = 1 prompt; with
 * logprobs only if the backend also returns the chosen token's
 * log-probability and no alternatives are asked for) and mid-prompt chunks
 * (no logits at all) go to forward_sample, so a step that mixes decode and
 * prefill is one pass over the weights. Only chunks whose logits the host
 * must see (n > 1 forks that sample several rows from one set of logits,
 * top_logprobs > 0, or any logprobs without the backend's sample_logprobs)
 * go to forward with host sampling: such steps cost two calls. Without
 * forward_sample, everything is one forward call.
 *
 * Then per row, as nanochat's Engine.generate: a pending forced token
 * replaces the sampled one; the calculator state machine watches
 * <|python_start|> .. <|python_end|>; <|assistant_end|> / <|bos|> stop the
 * row; max_tokens and the context limit end it with "length".
 *
 * Speculation (sched_spec.c) hooks in at three points: it places drafts
 * before the batch is built (a row's chunk is then its last token and its
 * drafts: sampled at every position on the device where the backend can
 * (sample_all) and every draft is certain, else the step goes to
 * `forward`, whose logits the verification needs), it verifies those
 * chunks instead of sampling them, and it learns the step's price
 * afterwards.
 */
#include <string.h>

#include "../tool/calculator.h"
#include "../util/common.h"
#include "sched_internal.h"

/* ==== the calculator tool ==== */

/* On <|python_end|>: decode the expression, evaluate it, queue
 * <|output_start|> result <|output_end|> to be forced (nanochat's engine). */
static void run_tool(nc_scheduler *s, sched_row *row, int32_t end) {
    size_t n = 0;
    bool fits = true;
    for (int32_t i = row->expr_start; i < end && fits; i++) {
        size_t len;
        const uint8_t *b = nc_tokenizer_token_bytes(s->tok, row->tokens[i], &len);
        if (!b || n + len > NC_CALC_MAX_EXPR) {
            fits = false;
            break;
        }
        memcpy(s->expr + n, b, len);
        n += len;
    }
    if (!fits || n == 0) return;
    int rl = nc_calculator(s->expr, n, s->calc_out, NC_CALC_RESULT_MAX);
    if (rl < 0) return;
    s->enc.n = 0;
    if (nc_tokenizer_encode(s->tok, s->calc_out, (size_t)rl, &s->enc)) return;
    if ((int64_t)s->enc.n + 2 > row->req->forced_cap) return;
    row->forced[0] = s->special[NC_TOK_OUTPUT_START];
    memcpy(row->forced + 1, s->enc.ids, s->enc.n * sizeof *row->forced);
    row->forced[1 + s->enc.n] = s->special[NC_TOK_OUTPUT_END];
    row->n_forced = (int32_t)s->enc.n + 2;
    row->forced_pos = 0;
}

/* ==== delivering one token ==== */

/* Without `logits`, `dev_logprob` is the sampled token's log-probability
 * as the device computed it (top_logprobs == 0 only). */
void sched_emit(nc_scheduler *s, sched_row *row, int32_t sampled, const float *logits, float dev_logprob) {
    sched_req *r = row->req;
    bool forced = row->forced_pos < row->n_forced;
    int32_t token = forced ? row->forced[row->forced_pos++] : sampled;
    if (row->forced_pos == row->n_forced) row->n_forced = row->forced_pos = 0;

    nc_gen_event ev = sched_event(row);
    ev.token = token;
    ev.forced = forced;
    if (!forced && logits && r->params.top_logprobs >= 0) {
        int32_t ids[NC_MAX_TOP_LOGPROBS];
        float lp[NC_MAX_TOP_LOGPROBS];
        int32_t k = r->params.top_logprobs;
        ev.chosen.token = token;
        ev.chosen.logprob = nc_sample_logprobs(logits, s->V, token, k, ids, lp);
        for (int32_t j = 0; j < k; j++) ev.top[j] = (nc_token_logprob){ids[j], lp[j]};
        ev.n_top = k;
    } else if (!forced && r->params.top_logprobs == 0) {
        ev.chosen.token = token;
        ev.chosen.logprob = dev_logprob;
    }
    NC_ASSERT(row->n_tokens < r->tok_cap);
    row->tokens[row->n_tokens++] = token;
    row->n_generated++;
    s->acc.tokens_generated++;

    if (r->params.use_calculator && s->tool_ok) {
        if (token == s->special[NC_TOK_PYTHON_START]) {
            row->in_python = true;
            row->expr_start = row->n_tokens;
        } else if (token == s->special[NC_TOK_PYTHON_END] && row->in_python) {
            row->in_python = false;
            run_tool(s, row, row->n_tokens - 1);
        }
    }

    bool terminal = !forced && (token == s->special[NC_TOK_ASSISTANT_END] || token == s->special[NC_TOK_BOS]);
    ev.is_terminal = terminal;
    ev.finish = terminal ? NC_FINISH_STOP : row->n_tokens >= r->row_tokens ? NC_FINISH_LENGTH : NC_FINISH_NONE;
    bool stop = r->cb(r->user, &ev);
    if (ev.finish != NC_FINISH_NONE) {
        /* Finished normally: its computed positions become a cached prefix. */
        nc_prefix_cache_insert(&s->cache, &s->pool, row->tokens, row->n_computed, row->blocks, row->n_blocks);
        row->n_blocks = 0;
        row->state = ROW_DONE;
        sched_spec_row_end(s, row);
    } else if (stop) {
        sched_row_finish(s, row, NC_FINISH_CANCELLED, NULL);
    }
}

int32_t sched_sample(nc_scheduler *s, sched_row *row, const float *logits) {
    const nc_gen_params *p = &row->req->params;
    if (row->forced_pos < row->n_forced) {
        if (p->temperature > 0.0f) nc_rng_next(row->rng); /* a device sampler would have drawn too */
        return row->forced[row->forced_pos];
    }
    nc_sampling sp = {p->temperature, p->top_k, p->top_p, p->min_p};
    return nc_sample(logits, s->V, &sp, row->rng, &s->scratch);
}

/* Samples (host side) and emits the next token of a row from its logits. */
static void sample_and_emit(nc_scheduler *s, sched_row *row, const float *logits) {
    sched_emit(s, row, sched_sample(s, row, logits), logits, 0.0f);
}

/* ==== building the batch ==== */

/* Whether the device sampler can give a request what it asks for: its
 * token, and the chosen token's log-probability if the backend returns it. */
static bool device_samples(const nc_scheduler *s, const sched_req *r) {
    const nc_backend_ops *ops = s->backend->ops;
    if (!ops->forward_sample) return false;
    return r->params.top_logprobs < 0 || (r->params.top_logprobs == 0 && ops->sample_logprobs);
}

/* Makes sure row's block table covers positions [0, end). */
static int cover(nc_scheduler *s, sched_row *row, int32_t end) {
    while (row->n_blocks * NC_KV_BLOCK_TOKENS < end)
        if (sched_row_add_block(s, row)) return -1;
    return 0;
}

/* A chunk of `len` tokens from the row's first uncomputed position; a
 * decode chunk of several (the last token and its drafts) asks for the
 * logits of every position. */
static void add_chunk(nc_scheduler *s, bool host, sched_row *row, int32_t len, bool prefill, bool last) {
    int32_t pos = row->n_computed, drafts = prefill ? 0 : len - 1;
    nc_seq_chunk c = {.tokens = row->tokens + pos, .n_tokens = len, .pos = pos,
                      .prev_token = pos > 0 ? row->tokens[pos - 1] : -1, .block_table = row->blocks,
                      .logits = drafts ? NC_LOGITS_ALL : last ? NC_LOGITS_LAST : NC_LOGITS_NONE};
    chunk_meta m = {row, prefill, last, drafts};
    if (host) {
        s->host_chunks[s->n_host] = c;
        s->host_meta[s->n_host++] = m;
    } else {
        s->dev_chunks[s->n_dev] = c;
        s->dev_meta[s->n_dev++] = m;
    }
}

/* Every row of a request ends with an error (prefilling requests: all n). */
static void fail_request(nc_scheduler *s, sched_req *r, const char *msg) {
    for (int32_t j = 0; j < r->params.n; j++) {
        sched_row *row = &r->rows[j];
        if (row->state == ROW_IDLE) row->state = ROW_LIVE;
        sched_row_finish(s, row, NC_FINISH_ERROR, msg);
    }
}

static int build_batch(nc_scheduler *s, int32_t *n_tokens) {
    s->n_decoding = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        for (int32_t j = 0; r->state == REQ_DECODE && j < r->params.n; j++)
            if (r->rows[j].state == ROW_LIVE) s->decoding[s->n_decoding++] = &r->rows[j];
    }
    /* Drafts are verified on the device when the backend samples every
     * position of a chunk there (sample_all) and every draft is certain;
     * else the step is one forward on the host side, whose logits of every
     * drafted position come back. */
    int32_t drafts = sched_spec_plan(s);
    const nc_backend_ops *ops = s->backend->ops;
    bool dev_ok = ops->forward_sample != NULL;
    for (int32_t i = 0; dev_ok && drafts && i < s->n_decoding; i++)
        dev_ok = ops->sample_all && sched_spec_device_verifiable(s->decoding[i]);
    int32_t total = 0;
    s->n_host = s->n_dev = 0;
    int32_t dev_sampled = 0; /* positions sampled on the device: at most max_seqs per forward_sample */
    for (int32_t i = 0; i < s->n_decoding; i++) {
        sched_row *row = s->decoding[i];
        NC_ASSERT(row->n_computed == row->n_tokens - 1);
        int32_t len = 1 + row->spec.n_draft;
        if (cover(s, row, row->n_computed + len)) {
            sched_row_finish(s, row, NC_FINISH_ERROR, nc_error());
            continue;
        }
        bool dev = dev_ok && device_samples(s, row->req) && dev_sampled + len <= s->max_seqs;
        if (dev) dev_sampled += len;
        add_chunk(s, !dev, row, len, false, true);
        total += len;
    }
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        if (r->state != REQ_PREFILL) continue;
        if (s->n_host + s->n_dev >= s->max_seqs || total >= s->max_batch_tokens) break;
        sched_row *row = &r->rows[0];
        int32_t len = NC_MIN(r->n_prompt - row->n_computed, NC_MIN(s->prefill_chunk, s->max_batch_tokens - total));
        if (cover(s, row, row->n_computed + len)) {
            fail_request(s, r, nc_error());
            continue;
        }
        bool last = row->n_computed + len == r->n_prompt;
        bool host = !dev_ok || (last && (r->params.n > 1 || !device_samples(s, r) || dev_sampled == s->max_seqs));
        if (!host && last) dev_sampled++;
        add_chunk(s, host, row, len, true, last);
        total += len;
    }
    *n_tokens = total;
    return s->n_host + s->n_dev;
}

/* ==== running it ==== */

/* A prompt's last chunk is done: fork into n rows (state DECODE). */
static bool start_decoding(nc_scheduler *s, sched_req *r) {
    r->state = REQ_DECODE;
    if (r->params.n > 1 && sched_fork(s, r)) {
        fail_request(s, r, nc_error());
        return false;
    }
    return true;
}

static void deliver_host(nc_scheduler *s) {
    const float *lg = s->logits;
    for (int32_t c = 0; c < s->n_host; c++) {
        chunk_meta *m = &s->host_meta[c];
        if (!m->last) continue;
        const float *row_logits = lg;
        lg += (size_t)s->V * (size_t)(1 + m->drafts);
        sched_req *r = m->row->req;
        if (m->prefill) {
            if (!start_decoding(s, r)) continue;
            for (int32_t j = 0; j < r->params.n; j++)
                if (r->rows[j].state == ROW_LIVE) sample_and_emit(s, &r->rows[j], row_logits);
        } else if (m->row->state == ROW_LIVE) {
            if (m->drafts) sched_spec_verify(s, m->row, row_logits, NULL, NULL);
            else sample_and_emit(s, m->row, row_logits);
        }
    }
}

static void deliver_dev(nc_scheduler *s) {
    for (int32_t c = 0; c < s->n_dev; c++) {
        chunk_meta *m = &s->dev_meta[c];
        if (!m->last) continue; /* a mid-prompt chunk: nothing sampled */
        sched_row *row = m->row;
        if (m->drafts) { /* the generator moves as far as the positions kept (sched_spec_verify) */
            if (row->state == ROW_LIVE)
                sched_spec_verify(s, row, NULL, s->dev_rows[c].tokens, s->dev_rows[c].logprobs);
            continue;
        }
        memcpy(row->rng, s->dev_rows[c].rng_state, sizeof row->rng);
        if (m->prefill && !start_decoding(s, row->req)) continue;
        if (row->state == ROW_LIVE) sched_emit(s, row, s->dev_tokens[c], NULL, s->dev_rows[c].logprob);
    }
}

int sched_run_batch(nc_scheduler *s) {
    double t_step = nc_now();
    int32_t n_tokens = 0;
    int n_seqs = build_batch(s, &n_tokens);
    s->acc.last_batch_rows = n_seqs;
    s->acc.last_batch_tokens = n_tokens;
    if (n_seqs == 0) return 0;

    nc_backend *b = s->backend;
    int rc = 0;
    double t0 = nc_now();
    if (s->n_host) {
        nc_batch batch = {s->host_chunks, s->n_host};
        rc = b->ops->forward(b, &batch, s->logits);
    }
    if (!rc && s->n_dev) {
        int32_t verified = 0; /* positions of verified chunks so far */
        for (int32_t c = 0; c < s->n_dev; c++) {
            const nc_gen_params *p = &s->dev_meta[c].row->req->params;
            nc_device_sampling *d = &s->dev_rows[c];
            bool all = s->dev_meta[c].drafts > 0;
            d->tokens = all ? s->dev_verified + verified : NULL;
            d->logprobs = all ? s->dev_verified_lp + verified : NULL;
            if (all) verified += s->dev_chunks[c].n_tokens;
            d->temperature = p->temperature;
            d->top_k = p->top_k;
            d->top_p = p->top_p;
            d->min_p = p->min_p;
            memcpy(d->rng_state, s->dev_meta[c].row->rng, sizeof d->rng_state);
            d->want_logprob = p->top_logprobs == 0;
            d->logprob = 0.0f;
        }
        nc_batch batch = {s->dev_chunks, s->n_dev};
        rc = b->ops->forward_sample(b, &batch, s->dev_rows, s->dev_tokens);
    }
    s->acc.forward_seconds += nc_now() - t0;
    if (rc) {
        /* The cache contents of every sequence in the batch are now
         * uncertain: end them all. */
        char msg[NC_ERROR_MAX];
        snprintf(msg, sizeof msg, "backend failure: %s", nc_error());
        for (int32_t c = 0; c < s->n_host; c++) fail_request(s, s->host_meta[c].row->req, msg);
        for (int32_t c = 0; c < s->n_dev; c++) fail_request(s, s->dev_meta[c].row->req, msg);
        return nc_fail("%s", msg);
    }

    bool decode_only = true;
    for (int32_t c = 0; c < s->n_host; c++) {
        /* a verified chunk's drafts count once accepted (sched_spec_verify) */
        if (!s->host_meta[c].drafts) s->host_meta[c].row->n_computed += s->host_chunks[c].n_tokens;
        if (s->host_meta[c].prefill) s->acc.tokens_prefilled += s->host_chunks[c].n_tokens;
        decode_only &= !s->host_meta[c].prefill;
    }
    for (int32_t c = 0; c < s->n_dev; c++) {
        if (!s->dev_meta[c].drafts) s->dev_meta[c].row->n_computed += s->dev_chunks[c].n_tokens;
        if (s->dev_meta[c].prefill) s->acc.tokens_prefilled += s->dev_chunks[c].n_tokens;
        decode_only &= !s->dev_meta[c].prefill;
    }
    deliver_host(s);
    deliver_dev(s);
    sched_spec_after_step(s, n_tokens, decode_only, nc_now() - t_step);
    return 0;
}
