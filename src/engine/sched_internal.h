/*
 * sched_internal.h: the scheduler's private state, shared by scheduler.c
 * (API, admission, KV bookkeeping, retirement) and sched_step.c (one
 * forward pass: batch building, sampling, the calculator tool, events).
 *
 * Life of a request: submit() puts it on `incoming` (any thread, under the
 * lock); step() moves it to `waiting`, admits it when rows and KV blocks
 * allow (state PREFILL: one sequence, row 0, prefilled in chunks), forks it
 * into n rows when the last prompt chunk's logits arrive (state DECODE),
 * and retires it when every row has finished, leaving finished rows'
 * blocks to the prefix cache.
 *
 * KV admission is by reservation: a request is admitted only if the pool
 * (free blocks plus blocks only the prefix cache holds) covers the worst
 * case of every admitted row, ceil(min(prompt + max_tokens, context) / 64)
 * blocks each. So a running row never waits for memory and nothing is ever
 * preempted; a request that would not fit waits in the queue. Speculation
 * never needs more: a row's drafts stop short of its token limit.
 *
 * Speculation (sched_spec.c, docs/speculative.md): before the batch is
 * built, each decoding row may get draft tokens, written after its last
 * token (tokens[n_tokens ..], scratch until accepted); its chunk is then
 * its last token plus the drafts, with the logits of every position, and
 * the verification emits the tokens the row would have produced one step
 * at a time. Positions past what was accepted keep stale KV that the next
 * chunk overwrites: n_computed says where valid KV ends.
 */
#ifndef NC_ENGINE_SCHED_INTERNAL_H
#define NC_ENGINE_SCHED_INTERNAL_H

#include <pthread.h>

#include "../tokenizer/tokenizer.h"
#include "kv_pool.h"
#include "sampler.h"
#include "scheduler.h"
#include "spec_draft.h"

typedef enum { REQ_QUEUED, REQ_PREFILL, REQ_DECODE } req_state;

typedef enum { ROW_IDLE, ROW_LIVE, ROW_DONE, ROW_DROPPED } row_state;

typedef struct sched_req sched_req;

/* A row's speculation (sched_spec.c). Acceptance rates are moving averages
 * over the drafts verified: of a proposal's first token, and of a later
 * token given that the ones before it were accepted. */
typedef struct {
    int32_t n_draft;      /* drafts after the row's tokens in this step's chunk (0: plain decode) */
    int32_t n_calc;       /* of them, the calculator's pending tokens (they come first) */
    nc_spec_kind kind;    /* where the others come from */
    int32_t ngram;        /* prompt lookup: the length of the n-gram that matched */
    const float *q;       /* draft model, sampled rows: [n_draft - n_calc, V] what drafts were drawn from */
    int32_t shadow;       /* prompt lookup's first token when not verified this step, -1: none; */
    int32_t shadow_at;    /*   compared with the token emitted at shadow_at after the step */
    float first[NC_SPEC_MAX_NGRAM + 1], next[NC_SPEC_MAX_NGRAM + 1]; /* prompt lookup, by n-gram length */
    float draft_first, draft_next;                                    /* the draft model */
    int32_t draft_idle;   /* steps since the draft model last drafted for this row */
    nc_draft_row draft;   /* the row's KV slot in the drafter */
} spec_row;

typedef struct {
    sched_req *req;
    int32_t index;        /* 0 .. n-1 */
    row_state state;      /* DONE: finished normally (blocks go to the cache); DROPPED: freed */
    int32_t *tokens;      /* [tok_cap] prompt + generated */
    int32_t n_tokens;
    int32_t n_computed;   /* positions whose KV is in the cache (tokens fed so far) */
    int32_t *blocks;      /* [blk_cap] block table */
    int32_t n_blocks;
    int32_t n_generated;  /* tokens appended after the prompt, forced ones included */
    uint64_t rng[2];
    /* calculator tool state (nanochat's RowState) */
    bool in_python;       /* between <|python_start|> and <|python_end|> */
    int32_t expr_start;   /* index in tokens of the first expression token */
    int32_t *forced;      /* [forced_cap] tokens to force, one per step */
    int32_t n_forced, forced_pos;
    spec_row spec;
} sched_row;

struct sched_req {
    uint64_t id;
    nc_gen_params params;
    int32_t *prompt;      /* [n_prompt] */
    int32_t n_prompt;
    nc_gen_callback cb;
    void *user;
    req_state state;
    bool cancel;          /* cancel requested: retire in this step */
    int32_t n_cached;     /* prompt tokens reused from the prefix cache */
    int32_t row_tokens;   /* per-row token limit: min(prompt + max_tokens, context) */
    int32_t row_blocks;   /* worst-case blocks per row: ceil(row_tokens / 64) */
    int32_t tok_cap, blk_cap, forced_cap;
    sched_row *rows;      /* [params.n]; only rows[0] exists before the fork */
    sched_req *next;      /* incoming list */
};

/* A chunk of the batch and what its result means. */
typedef struct {
    sched_row *row;       /* row whose sequence this chunk extends */
    bool prefill;         /* part of a prompt (else one decode token, plus any drafts) */
    bool last;            /* produces the logits the row samples from */
    int32_t drafts;       /* draft tokens after the decode token (logits of every position) */
} chunk_meta;

/* The seconds of decode steps by their token count, to price a draft
 * (sched_spec.c): the latest few, whose least is the estimate (a machine's
 * noise only ever adds time). */
#define SPEC_COST_T 256
#define SPEC_COST_RECENT 8
typedef struct {
    double recent[SPEC_COST_RECENT];
    int32_t n;            /* observations, up to SPEC_COST_RECENT */
    int32_t head;         /* where the next goes */
    int64_t at;           /* step of the last observation */
} spec_cost_bucket;

/* The scheduler's speculation. */
typedef struct {
    nc_spec_params p;                   /* resolved defaults */
    int32_t max_tokens;                 /* drafts per step at most (rows of logits reserved) */
    nc_drafter *drafter;                /* NULL: no draft model */
    spec_cost_bucket cost[SPEC_COST_T + 1];
    double alpha, beta;                 /* this step's price: t(T) = alpha + beta T */
    int32_t explore;                    /* positions a step may hold: twice the largest recently measured */
    int32_t trusted;                    /* token counts measured often enough to price by */
    double draft_seconds;               /* this step's draft model forwards */
    int64_t step;
    float first[NC_SPEC_MAX_NGRAM + 1], next[NC_SPEC_MAX_NGRAM + 1]; /* all rows: where new rows start */
    float draft_first, draft_next;
    struct spec_cand *cands;            /* [max_running * max_draft] */
    nc_draft_req *reqs;                 /* [max_running] */
    sched_row **req_rows;               /* [max_running] */
} sched_spec;

struct nc_scheduler {
    nc_backend *backend;
    const nc_tokenizer *tok;
    int32_t V;
    int32_t max_context, max_running, prefill_chunk, max_queue;
    int32_t max_seqs, max_batch_tokens;
    int32_t special[NC_TOK_SPECIAL_COUNT]; /* ids, -1 when absent */
    bool tool_ok;                          /* tokenizer has the four tool tokens */

    /* shared with other threads: under `mu` */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sched_req *in_head, *in_tail;
    int32_t n_incoming;
    uint64_t *cancel_ids;
    int32_t n_cancel, cap_cancel;
    uint64_t next_id;
    int32_t n_active_published;            /* waiting + running, as of the last step */
    nc_scheduler_stats stats;              /* snapshot published after each step */

    /* stepping thread only */
    sched_req **waiting;
    int32_t n_waiting, cap_waiting;
    sched_req **running;                   /* admission order */
    int32_t n_running;
    int32_t running_rows;                  /* rows of running requests (n each) */
    nc_kv_pool pool;
    nc_prefix_cache cache;
    nc_scheduler_stats acc;                /* cumulative counters being built */

    /* per-step buffers, sized at create (no allocation in the token loop) */
    sched_row **decoding;                     /* [max_running] this step's live decoding rows, in order */
    int32_t n_decoding;
    nc_seq_chunk *host_chunks, *dev_chunks;   /* [max_seqs] */
    chunk_meta *host_meta, *dev_meta;         /* [max_seqs] */
    int32_t n_host, n_dev;
    nc_device_sampling *dev_rows;             /* [max_seqs] */
    int32_t *dev_tokens;                      /* [max_seqs] */
    int32_t *dev_verified;                    /* [max_seqs + spec.max_tokens] tokens the device drew at */
    float *dev_verified_lp;                   /*   the positions of verified chunks, their logprobs */
    float *logits;                            /* [max_seqs + spec.max_tokens, V] */
    nc_sampler_scratch scratch;
    char *expr;                               /* [NC_CALC_MAX_EXPR + 1] */
    char *calc_out;                           /* [NC_CALC_RESULT_MAX] */
    nc_tokens enc;                            /* encoded tool result (capacity reused) */
    sched_spec spec;
};

/* ==== scheduler.c ==== */

/* A fresh block for `row` (evicting prefix-cache entries if needed) placed
 * at the end of its block table; -1 (with a message) if the pool is dry. */
int sched_row_add_block(nc_scheduler *s, sched_row *row);
/* Makes rows[1..n) of a request whose prompt is in row 0: shared full
 * blocks, a copied partial block. */
int sched_fork(nc_scheduler *s, sched_req *r);
/* Ends a row with a final event (token -1) unless it already finished. */
void sched_row_finish(nc_scheduler *s, sched_row *row, nc_finish_reason why, const char *error);
/* Base event for a row: ids, prompt counts, no token. */
nc_gen_event sched_event(const sched_row *row);

/* ==== sched_step.c ==== */

/* Builds and runs one forward pass over the running requests, then
 * delivers its tokens. Returns -1 if the backend failed (the rows in the
 * batch got ERROR events). */
int sched_run_batch(nc_scheduler *s);

/* The token the row emits next from `logits` (host side): the pending
 * forced one (drawing the uniform a sampler would have drawn, so the row's
 * random stream is the same either way), else a sample. */
int32_t sched_sample(nc_scheduler *s, sched_row *row, const float *logits);
/* Appends the row's next token: the pending forced one, else `sampled`,
 * with its event (logprobs from `logits`, or when that is NULL the
 * device's `dev_logprob` of the chosen token), the calculator and the stop
 * rules; the row may finish. */
void sched_emit(nc_scheduler *s, sched_row *row, int32_t sampled, const float *logits, float dev_logprob);

/* ==== sched_spec.c ==== */

/* Resolves the defaults of `p` and sets up the drafter. -1 + nc_error(). */
int sched_spec_init(nc_scheduler *s, const nc_spec_params *p);
void sched_spec_free(nc_scheduler *s);
/* A new row's speculation state (acceptance rates from the scheduler's). */
void sched_spec_row_init(nc_scheduler *s, sched_row *row);
/* The row is gone: its draft model slot is free again. */
void sched_spec_row_end(nc_scheduler *s, sched_row *row);

/* Chooses this step's drafts for the rows of s->decoding (row->spec.n_draft,
 * tokens after each row's last) where they are expected to pay for their
 * verification. Returns how many in all. */
int32_t sched_spec_plan(nc_scheduler *s);
/* Emits what a row's verified chunk gives: accepted drafts, then the
 * target's own token. The target's tokens come from `logits` (1 + n_draft
 * rows, sampled here) or, when that is NULL, were drawn on the device:
 * `tokens` and `logprobs` hold 1 + n_draft positions (backend.h,
 * nc_device_sampling.tokens). Sets n_computed. */
void sched_spec_verify(nc_scheduler *s, sched_row *row, const float *logits, const int32_t *tokens,
                       const float *logprobs);
/* Whether the row's drafts can be verified from tokens drawn on the
 * device: all of them certain (none drawn from a sampling draft model's
 * q, whose test needs the target's whole distribution). */
bool sched_spec_device_verifiable(const sched_row *row);
/* After a step's tokens were delivered: the price of `tokens` positions
 * (when `decode_only`: `seconds` of the step, the draft model's part
 * excluded), and the unverified prompt-lookup proposals. */
void sched_spec_after_step(nc_scheduler *s, int32_t tokens, bool decode_only, double seconds);

#endif /* NC_ENGINE_SCHED_INTERNAL_H */
