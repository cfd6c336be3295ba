/*
 * scheduler.h: continuous batching over one backend, shared by the CLI and
 * the server.
 *
 * Requests (a prompt plus generation settings, n samples) join and leave the
 * running batch at every step. Each step builds one nc_batch: decode tokens
 * of running rows plus prefill chunks of new requests, bounded by the
 * backend's max_batch_tokens so a long prompt never stalls other streams. It
 * owns the KV block pool and the block tables, forks a prefilled prompt into
 * n rows (shared full blocks, copied partial block), keeps finished
 * conversations' blocks as a prefix cache (the next turn of a chat prefills
 * only its new tokens), runs the calculator tool per row (docs/model.md, Calculator),
 * speculates where that pays (docs/speculative.md: several tokens per row and
 * step, the output exactly what decoding one at a time gives), and reports
 * every token through the request's callback.
 *
 * Threading: submit/cancel may be called from any thread; step() is called
 * by one thread (the CLI's main loop or the server's engine thread), and all
 * callbacks run on that thread, inside step().
 */
#ifndef NC_ENGINE_SCHEDULER_H
#define NC_ENGINE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../tokenizer/tokenizer.h"

#define NC_MAX_TOP_LOGPROBS 20

typedef struct {
    float temperature;   /* 0 = argmax */
    int32_t top_k;       /* 0 = off */
    float top_p;         /* 1 = off */
    float min_p;         /* 0 = off */
    uint64_t seed;       /* rows use seed, seed+1, ... */
    int32_t max_tokens;  /* generated tokens per row, forced tool tokens included */
    int32_t n;           /* samples (rows) sharing one prefill */
    bool use_calculator; /* run the calculator tool on <|python_start|>..<|python_end|> */
    int32_t top_logprobs;/* -1: no logprobs; 0..NC_MAX_TOP_LOGPROBS: chosen + that many alternatives */
    bool speculative;    /* may speculate (docs/speculative.md); false: plain decode for this request */
} nc_gen_params;

/* nanochat's CLI defaults: temperature 0.6, top_k 50, seed 42; speculative. */
nc_gen_params nc_gen_params_default(void);
/* Range checks with a message naming the field and its range. */
int nc_gen_params_validate(const nc_gen_params *p);

typedef enum {
    NC_FINISH_NONE = 0,   /* still running */
    NC_FINISH_STOP,       /* sampled <|assistant_end|> or <|bos|> */
    NC_FINISH_LENGTH,     /* max_tokens or the context limit */
    NC_FINISH_CANCELLED,  /* callback asked to stop, or nc_scheduler_cancel */
    NC_FINISH_ERROR,      /* backend failure: message in the event */
} nc_finish_reason;

const char *nc_finish_reason_name(nc_finish_reason r); /* "stop", "length", ... */

typedef struct {
    int32_t token;       /* the id appended to the row (for a stop token: the terminal id) */
    float logprob;       /* log-probability under the sampling distribution's logits (temperature 1 softmax of softcapped logits) */
} nc_token_logprob;

typedef struct {
    uint64_t request_id;
    int32_t row;                 /* 0 .. n-1 */
    int32_t token;               /* new token id, or -1 for a pure finish event */
    bool forced;                 /* inserted by the calculator tool, not sampled */
    bool is_terminal;            /* the stop token itself: not part of the text */
    nc_finish_reason finish;     /* != NONE: this row is done after this event */
    const char *error;           /* with NC_FINISH_ERROR */
    int32_t n_prompt_tokens;     /* tokens in the prompt */
    int32_t n_cached_tokens;     /* of those, reused from the prefix cache */
    nc_token_logprob chosen;     /* valid when top_logprobs >= 0 and the token was sampled */
    nc_token_logprob top[NC_MAX_TOP_LOGPROBS];
    int32_t n_top;
} nc_gen_event;

/* Called on the stepping thread for every token and finish. Return true to
 * stop this row (it then gets a final NC_FINISH_CANCELLED event unless it
 * already finished). */
typedef bool (*nc_gen_callback)(void *user, const nc_gen_event *ev);

/* Where draft tokens come from (docs/speculative.md). */
typedef enum {
    NC_SPEC_LOOKUP = 0,      /* prompt lookup: what followed the last n tokens earlier in the row */
    NC_SPEC_DRAFT_MODEL,     /* a smaller model with the same tokenizer */
    NC_SPEC_CALCULATOR,      /* the calculator's result, known before it is forced */
    NC_SPEC_KINDS
} nc_spec_kind;

const char *nc_spec_kind_name(nc_spec_kind k); /* "lookup", "draft_model", "calculator" */

#define NC_SPEC_MAX_NGRAM 8

/* Speculative decoding; zero values are the defaults: on where the backend
 * is batch-invariant (nc_backend_ops.batch_invariant: verification then
 * reproduces one-at-a-time decoding bit for bit), else off unless `force`,
 * `always` or a `draft` model asks for it. */
typedef struct {
    bool off;                /* no speculation at all */
    bool force;              /* speculate on any backend (on one that is not batch-invariant, greedy
                                output may differ from plain decoding where the top two logits are
                                within its rounding) */
    bool no_lookup;          /* no prompt lookup (a draft model, if any, still drafts) */
    bool always;             /* verify every proposal (up to max_draft) instead of only those expected
                                to pay for their verification: for measurements and tests */
    int32_t max_draft;       /* most draft tokens one row verifies per step (default 8) */
    int32_t ngram_max;       /* prompt lookup matches the last ngram_max .. ngram_min tokens */
    int32_t ngram_min;       /* (defaults 3 and 1; at most NC_SPEC_MAX_NGRAM) */
    bool draft_sample;       /* sampled requests: the draft model samples its drafts and they are kept
                                with probability min(1, p/q) (more accepted, same distribution, but
                                a seed no longer reproduces the output without speculation); else it
                                drafts its argmax */
    nc_backend *draft;       /* a draft model's backend, borrowed (NULL: none). Its model's
                                tokenizer must be the target's (nc_spec_tokenizers_match) and its
                                KV pool is the drafter's: n_kv_blocks / ceil(max_context / 64)
                                rows draft at once */
} nc_spec_params;

typedef struct {
    int32_t max_context;     /* per-sequence positions (default: the model's sequence_len) */
    int32_t max_running;     /* rows decoding at once (default: backend max_seqs) */
    int32_t prefill_chunk;   /* tokens of prefill per step per request (default 512) */
    int32_t max_queue;       /* waiting requests before submit refuses (default 256) */
    nc_spec_params spec;     /* speculative decoding */
} nc_scheduler_params;

typedef struct nc_scheduler nc_scheduler;

/* Borrows backend and tokenizer (they must outlive it). */
nc_scheduler *nc_scheduler_create(nc_backend *backend, const nc_tokenizer *tok,
                                  const nc_scheduler_params *p);
void nc_scheduler_free(nc_scheduler *s);

/* Queues a request. Fails (nothing queued, callback never called) on
 * invalid params, an empty prompt, a prompt that leaves no room to generate
 * within max_context (message names the limit), or a full queue. */
int nc_scheduler_submit(nc_scheduler *s, const int32_t *prompt, int32_t n_prompt,
                        const nc_gen_params *params, nc_gen_callback cb, void *user,
                        uint64_t *request_id);

/* Cancels a queued or running request; its rows get CANCELLED events in the
 * next step and its KV blocks are freed. Unknown ids are ignored. */
void nc_scheduler_cancel(nc_scheduler *s, uint64_t request_id);

/* Runs one scheduling step (at most one forward pass). Returns the number
 * of requests still queued or running, or -1 on an internal failure. */
int nc_scheduler_step(nc_scheduler *s);

/* Submits one request and steps on this thread until the scheduler has
 * no work left; `cb` runs here, inside the steps. The caller must be the
 * scheduler's only stepping thread. Returns -1 with nc_error() when the
 * request is refused (nothing ran, `cb` never called), else 0 once every
 * row finished: a backend failure reaches the rows as NC_FINISH_ERROR
 * events (the scheduler fails and retires the requests of a failed step). */
int nc_scheduler_run(nc_scheduler *s, const int32_t *prompt, int32_t n_prompt, const nc_gen_params *params,
                     nc_gen_callback cb, void *user);

/* How many leading tokens of prompt[0..n) this scheduler's prefix cache
 * holds (finished sequences' KV, which a request with this prompt would
 * reuse). Any thread may ask; for a router choosing between engines. */
int32_t nc_scheduler_cached_prefix(nc_scheduler *s, const int32_t *prompt, int32_t n);

/* Ends every request - queued, running, and any submitted later until the
 * next call - with an NC_FINISH_ERROR event carrying `error`, without
 * calling the backend; for an engine whose device failed. Only the
 * stepping thread may call it (it runs the callbacks), in place of
 * nc_scheduler_step. */
void nc_scheduler_fail_all(nc_scheduler *s, const char *error);

/* Blocks the caller until there is work (or `timeout_s` passes); for the
 * server's engine thread. Returns true if there is work. */
bool nc_scheduler_wait_for_work(nc_scheduler *s, double timeout_s);

typedef struct {
    int32_t queued;            /* requests waiting to start */
    int32_t running_requests;
    int32_t running_rows;
    int32_t kv_blocks_total;
    int32_t kv_blocks_used;    /* held by running rows */
    int32_t kv_blocks_cached;  /* held only by the prefix cache (reclaimable) */
    int64_t tokens_prefilled;  /* cumulative */
    int64_t tokens_cached;     /* prompt tokens served from the prefix cache */
    int64_t tokens_generated;
    int32_t last_batch_rows;
    int32_t last_batch_tokens;
    double step_seconds;       /* cumulative wall time in nc_scheduler_step */
    double forward_seconds;    /* ... of it inside the backend's forward passes (a draft model's too) */
    int64_t spec_drafted[NC_SPEC_KINDS];  /* draft tokens verified, cumulative */
    int64_t spec_accepted[NC_SPEC_KINDS]; /* ... and accepted */
    int64_t spec_verifies;     /* row-steps that verified drafts */
    int64_t spec_emitted;      /* tokens those row-steps emitted (accepted drafts + one each) */
} nc_scheduler_stats;

void nc_scheduler_get_stats(nc_scheduler *s, nc_scheduler_stats *out);

#endif /* NC_ENGINE_SCHEDULER_H */
