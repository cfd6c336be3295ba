/*
 * spec_draft.c: prompt lookup and the draft model (spec_draft.h).
 *
 * The drafter's KV pool is cut into fixed slots of consecutive blocks, one
 * row of max_context positions each, so it needs no allocator, reference
 * counts or prefix cache: a slot's block table is simply its block range.
 * Positions beyond what the target accepted are left in place and
 * overwritten by the next catch-up, as the target's rejected drafts are.
 */
#include "spec_draft.h"

#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

/* ==== prompt lookup ==== */

int32_t nc_spec_lookup(const int32_t *tokens, int32_t n_tokens, int32_t n_min, int32_t n_max, int32_t k,
                       int32_t *out, int32_t *n_match) {
    *n_match = 0;
    if (k < 1) return 0;
    for (int32_t g = NC_MIN(n_max, n_tokens - 1); g >= NC_MAX(n_min, 1); g--) {
        const int32_t *suffix = tokens + n_tokens - g;
        /* an earlier occurrence ending at e (exclusive), e <= n_tokens - 1, newest first */
        for (int32_t e = n_tokens - 1; e >= g; e--) {
            if (tokens[e - 1] != suffix[g - 1] || memcmp(tokens + e - g, suffix, (size_t)g * sizeof *tokens))
                continue;
            int32_t m = NC_MIN(k, n_tokens - e);
            memcpy(out, tokens + e, (size_t)m * sizeof *out);
            *n_match = g;
            return m;
        }
    }
    return 0;
}

/* ==== tokenizer check ==== */

int nc_spec_tokenizers_match(const nc_tokenizer *target, const nc_tokenizer *draft) {
    int v = nc_tokenizer_vocab_size(target), dv = nc_tokenizer_vocab_size(draft);
    if (v != dv) return nc_fail("its tokenizer has %d tokens, the model's %d", dv, v);
    for (int i = 0; i < NC_TOK_SPECIAL_COUNT; i++) {
        int32_t a = nc_tokenizer_special_id(target, (nc_special_token)i);
        int32_t b = nc_tokenizer_special_id(draft, (nc_special_token)i);
        if (a != b)
            return nc_fail("its tokenizer has %s at id %d, the model's at %d",
                           nc_special_token_text((nc_special_token)i), b, a);
    }
    for (int32_t id = 0; id < v; id++) {
        size_t la, lb;
        const uint8_t *a = nc_tokenizer_token_bytes(target, id, &la), *b = nc_tokenizer_token_bytes(draft, id, &lb);
        if (!a != !b || la != lb || (a && memcmp(a, b, la)))
            return nc_fail("its tokenizer differs from the model's at token id %d", id);
    }
    if (strcmp(nc_tokenizer_pattern(target), nc_tokenizer_pattern(draft)))
        return nc_fail("its tokenizer splits text with another pattern than the model's");
    return 0;
}

/* ==== the drafter ==== */

struct nc_drafter {
    nc_backend *b;
    int32_t V;
    int32_t max_pos;          /* positions a row may reach: the slot's, and the draft model's range */
    int32_t max_draft;
    int32_t bps;              /* blocks per slot */
    int32_t n_slots;
    bool *slot_used;          /* [n_slots] */
    int32_t *tables;          /* [n_slots * bps]: slot s holds blocks s*bps .. s*bps + bps - 1 */
    float *q;                 /* [n_slots, max_draft, V] distributions of sampled rows' drafts */
    float *logits;            /* [max_seqs, V] */
    nc_seq_chunk *chunks;     /* [max_seqs] */
    int32_t *chunk_req;       /* [max_seqs] the request each chunk serves */
    int32_t *fed;             /* [n] per request: positions fed to the slot so far (catch-up) */
    int32_t cap_fed;
    nc_sampler_scratch scr;
    double step_s;            /* EMA of a one-token-per-row forward */
    bool ok;
};

nc_drafter *nc_drafter_create(nc_backend *draft, int32_t vocab, int32_t max_context, int32_t max_draft) {
    const nc_model_config *c = &draft->model->cfg;
    if (c->vocab_size != vocab) {
        nc_fail("the draft model's vocabulary has %d ids, the model's %d", c->vocab_size, vocab);
        return NULL;
    }
    int32_t bps = (max_context + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    if (draft->n_kv_blocks < bps) {
        nc_fail("the draft model's KV pool (%d blocks) does not hold one row of %d positions", draft->n_kv_blocks,
                max_context);
        return NULL;
    }
    nc_drafter *d = nc_xcalloc(1, sizeof *d);
    d->b = draft;
    d->V = vocab;
    d->max_pos = (int32_t)NC_MIN((int64_t)max_context, 10 * (int64_t)c->sequence_len);
    d->max_draft = max_draft;
    d->bps = bps;
    d->n_slots = draft->n_kv_blocks / bps;
    d->slot_used = nc_xcalloc((size_t)d->n_slots, sizeof *d->slot_used);
    d->tables = nc_xmalloc((size_t)d->n_slots * (size_t)bps * sizeof *d->tables);
    for (int32_t i = 0; i < d->n_slots * bps; i++) d->tables[i] = i;
    size_t ms = (size_t)draft->max_seqs;
    d->q = malloc((size_t)d->n_slots * (size_t)max_draft * (size_t)vocab * sizeof *d->q);
    d->logits = malloc(ms * (size_t)vocab * sizeof *d->logits);
    d->chunks = nc_xcalloc(ms, sizeof *d->chunks);
    d->chunk_req = nc_xcalloc(ms, sizeof *d->chunk_req);
    if (!d->q || !d->logits || nc_sampler_scratch_init(&d->scr, vocab)) {
        nc_drafter_free(d);
        nc_fail("out of memory for the draft model's distributions");
        return NULL;
    }
    d->ok = true;
    return d;
}

void nc_drafter_free(nc_drafter *d) {
    if (!d) return;
    free(d->slot_used);
    free(d->tables);
    free(d->q);
    free(d->logits);
    free(d->chunks);
    free(d->chunk_req);
    free(d->fed);
    nc_sampler_scratch_free(&d->scr);
    free(d);
}

bool nc_drafter_ok(const nc_drafter *d) { return d && d->ok; }
double nc_drafter_step_seconds(const nc_drafter *d) { return d->step_s; }

static int32_t free_slot(const nc_drafter *d) {
    for (int32_t i = 0; i < d->n_slots; i++)
        if (!d->slot_used[i]) return i;
    return -1;
}

bool nc_drafter_can_draft(const nc_drafter *d, const nc_draft_row *row, int32_t n_tokens, int32_t k) {
    return d->ok && n_tokens + k - 1 <= d->max_pos && (row->slot >= 0 || free_slot(d) >= 0);
}

void nc_drafter_keep(nc_draft_row *row, int32_t n) { row->n_valid = NC_MIN(row->n_valid, n); }

void nc_drafter_release(nc_drafter *d, nc_draft_row *row) {
    if (row->slot >= 0) d->slot_used[row->slot] = false;
    row->slot = -1;
    row->n_valid = 0;
}

/* The request's draft number `i` from the logits of its last chunk. */
static void pick(nc_drafter *d, nc_draft_req *r, int32_t i, const float *logits) {
    if (!(r->sampling.temperature > 0.0f)) {
        r->out[i] = nc_sample_argmax(logits, d->V);
        return;
    }
    float *q = d->q + ((size_t)r->row->slot * (size_t)d->max_draft + (size_t)i) * (size_t)d->V;
    r->out[i] = nc_sample_draft(logits, d->V, &r->sampling, r->rng, &d->scr, q);
}

static double run(nc_drafter *d, int32_t n_chunks) {
    nc_batch batch = {d->chunks, n_chunks};
    double t0 = nc_now();
    if (d->b->ops->forward(d->b, &batch, d->logits)) {
        d->ok = false;
        return -1;
    }
    return nc_now() - t0;
}

/* Feeds every row's tokens its slot lacks, the last one with logits: the
 * first draft. Rows longer than a forward's token budget take several. */
static double catch_up(nc_drafter *d, nc_draft_req *reqs, int32_t n) {
    double spent = 0;
    for (int32_t i = 0; i < n; i++) {
        nc_draft_row *row = reqs[i].row;
        if (reqs[i].k > 0) d->fed[i] = NC_MIN(row->n_valid, reqs[i].n_tokens - 1);
    }
    for (;;) {
        int32_t nc = 0, budget = d->b->max_batch_tokens;
        for (int32_t i = 0; i < n && nc < d->b->max_seqs && budget > 0; i++) {
            nc_draft_req *r = &reqs[i];
            if (r->k < 1 || d->fed[i] >= r->n_tokens) continue;
            int32_t pos = d->fed[i], len = NC_MIN(r->n_tokens - pos, budget);
            bool last = pos + len == r->n_tokens;
            d->chunks[nc] = (nc_seq_chunk){r->tokens + pos, len, pos, pos > 0 ? r->tokens[pos - 1] : -1,
                                           d->tables + (size_t)r->row->slot * (size_t)d->bps,
                                           last ? NC_LOGITS_LAST : NC_LOGITS_NONE};
            d->chunk_req[nc++] = i;
            budget -= len;
        }
        if (nc == 0) return spent;
        double t = run(d, nc);
        if (t < 0) return -1;
        spent += t;
        const float *lg = d->logits;
        for (int32_t c = 0; c < nc; c++) {
            nc_draft_req *r = &reqs[d->chunk_req[c]];
            d->fed[d->chunk_req[c]] += d->chunks[c].n_tokens;
            if (d->chunks[c].logits != NC_LOGITS_LAST) continue;
            pick(d, r, 0, lg);
            lg += d->V;
        }
    }
}

double nc_drafter_propose(nc_drafter *d, nc_draft_req *reqs, int32_t n) {
    int32_t kmax = 0, rows = 0;
    for (int32_t i = 0; i < n; i++) {
        nc_draft_req *r = &reqs[i];
        r->q = NULL;
        if (r->k > 0 && rows == d->b->max_seqs) r->k = 0; /* one forward's rows at most */
        if (r->k > 0 && r->row->slot < 0) {
            int32_t s = free_slot(d);
            if (s < 0) {
                r->k = 0;
                continue;
            }
            d->slot_used[s] = true;
            r->row->slot = s;
            r->row->n_valid = 0;
        }
        r->k = NC_MIN(r->k, d->max_draft);
        rows += r->k > 0;
        kmax = NC_MAX(kmax, r->k);
    }
    if (kmax == 0) return 0;
    if (n > d->cap_fed) {
        d->cap_fed = n;
        d->fed = nc_xrealloc(d->fed, (size_t)n * sizeof *d->fed);
    }
    double spent = catch_up(d, reqs, n);
    /* then one token per row and forward: draft i-1 in, draft i out */
    for (int32_t i = 1; i < kmax && spent >= 0; i++) {
        int32_t nc = 0;
        for (int32_t j = 0; j < n; j++) {
            nc_draft_req *r = &reqs[j];
            if (r->k <= i) continue;
            int32_t pos = r->n_tokens + i - 1;
            d->chunks[nc] = (nc_seq_chunk){&r->out[i - 1], 1, pos, i > 1 ? r->out[i - 2] : r->tokens[pos - 1],
                                           d->tables + (size_t)r->row->slot * (size_t)d->bps, NC_LOGITS_LAST};
            d->chunk_req[nc++] = j;
        }
        double t = run(d, nc);
        if (t < 0) {
            spent = -1;
            break;
        }
        spent += t;
        d->step_s = d->step_s > 0 ? 0.8 * d->step_s + 0.2 * t : t;
        for (int32_t c = 0; c < nc; c++) pick(d, &reqs[d->chunk_req[c]], i, d->logits + (size_t)c * (size_t)d->V);
    }
    for (int32_t i = 0; i < n; i++) {
        nc_draft_req *r = &reqs[i];
        if (spent < 0) {
            r->k = 0;
            r->row->n_valid = 0;
        } else if (r->k > 0) {
            r->row->n_valid = r->n_tokens + r->k - 1;
            if (r->sampling.temperature > 0.0f)
                r->q = d->q + (size_t)r->row->slot * (size_t)d->max_draft * (size_t)d->V;
        }
    }
    return spent;
}
