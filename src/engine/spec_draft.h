/*
 * spec_draft.h: where speculative decoding's draft tokens come from
 * (docs/speculative.md): prompt lookup, and a draft model run on its own
 * backend. The scheduler decides how many drafts each row verifies and
 * checks them (sched_spec.c); this file only proposes.
 *
 *   - Prompt lookup (llama.cpp's lookup decoding, vLLM's n-gram proposer):
 *     the last n tokens of a row (n = ngram_max .. ngram_min) are searched
 *     for earlier in the same row, prompt and generated text alike; what
 *     followed their most recent earlier occurrence is the draft. Free: no
 *     model runs. It shines when the reply quotes the prompt (code edits,
 *     summaries, the calculator's echoed numbers).
 *   - A draft model: any nanochat checkpoint whose tokenizer is the
 *     target's (nc_spec_tokenizers_match), e.g. d20 drafting for d34. The
 *     drafter owns the draft backend's KV pool as fixed slots of
 *     ceil(max_context / 64) blocks, one per row that drafts: a row takes a
 *     slot at its first draft and gives it back when it ends. Before each
 *     proposal a row's slot catches up with the row's tokens (the positions
 *     the target accepted since, or the whole prompt at first), then the
 *     draft model runs k steps ahead, all drafting rows batched per step.
 *
 * Only the stepping thread uses a drafter.
 */
#ifndef NC_ENGINE_SPEC_DRAFT_H
#define NC_ENGINE_SPEC_DRAFT_H

#include <stdbool.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../tokenizer/tokenizer.h"
#include "sampler.h"

/* ==== prompt lookup ==== */

/*
 * Finds the longest n in [n_min, n_max] whose last-n-token suffix of
 * tokens[0..n_tokens) also occurs earlier (ending before the last token),
 * takes its most recent such occurrence, and copies up to `k` of the tokens
 * that followed it to out[]. Returns how many (0: no match) and sets *n_match.
 */
int32_t nc_spec_lookup(const int32_t *tokens, int32_t n_tokens, int32_t n_min, int32_t n_max, int32_t k,
                       int32_t *out, int32_t *n_match);

/* ==== the draft model ==== */

/* Whether a draft model's tokenizer is the target's: same ids, same bytes
 * for every token, same special tokens, same split pattern. -1 with
 * nc_error() naming the first difference ("its tokenizer ...") otherwise. */
int nc_spec_tokenizers_match(const nc_tokenizer *target, const nc_tokenizer *draft);

typedef struct nc_drafter nc_drafter;

/* A drafter over `draft` (borrowed), for rows of at most `max_context`
 * positions and at most `max_draft` drafts each; its vocabulary must be
 * `vocab` ids (the target's). NULL + nc_error() when the backend's KV pool
 * holds no row of max_context positions or the vocabularies differ. */
nc_drafter *nc_drafter_create(nc_backend *draft, int32_t vocab, int32_t max_context, int32_t max_draft);
void nc_drafter_free(nc_drafter *d);

/* A row's state in the drafter; zero-initialise with slot = -1. */
typedef struct {
    int32_t slot;     /* the row's KV slot, -1: none yet */
    int32_t n_valid;  /* positions of the row whose KV the slot holds */
} nc_draft_row;

/* One row's request for a proposal. */
typedef struct {
    nc_draft_row *row;
    const int32_t *tokens;    /* the row's tokens; the draft goes to tokens[n_tokens ..] (out) */
    int32_t n_tokens;
    int32_t k;                /* drafts wanted (in), made (out: 0 when the row got no slot) */
    nc_sampling sampling;     /* the request's settings: greedy rows draft the argmax */
    uint64_t *rng;            /* the row's generator (sampled rows draw their drafts from it) */
    int32_t *out;             /* [k] where the drafts go */
    const float *q;           /* out: [k, V] the distributions drafts were drawn from (sampled
                                 rows), valid until the next propose; NULL for greedy rows */
} nc_draft_req;

/* Whether a row could draft now (a slot is free or already its own, and
 * its positions are within the draft model's range). */
bool nc_drafter_can_draft(const nc_drafter *d, const nc_draft_row *row, int32_t n_tokens, int32_t k);

/* Proposes for every request, batching the rows through the draft model
 * (catch-up, then one forward per draft position). Returns the seconds
 * spent in the draft backend, or -1 with nc_error() when it failed (the
 * drafter is then off for good; no drafts were made). */
double nc_drafter_propose(nc_drafter *d, nc_draft_req *reqs, int32_t n);

/* The target kept only the row's first `n` positions as they were drafted:
 * the slot's KV beyond them is stale. */
void nc_drafter_keep(nc_draft_row *row, int32_t n);
/* The row ended: its slot is free for others. */
void nc_drafter_release(nc_drafter *d, nc_draft_row *row);

/* Seconds of one draft forward of one token per row, as measured (0 before
 * any): the planner's price of a draft step. */
double nc_drafter_step_seconds(const nc_drafter *d);
bool nc_drafter_ok(const nc_drafter *d);

#endif /* NC_ENGINE_SPEC_DRAFT_H */
