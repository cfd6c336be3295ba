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
 * only its new tokens), runs the calculator tool per row (docs/model.md, Calculator), and
 * reports every token through the request's callback.
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
} nc_gen_params;

/* nanochat's CLI defaults: temperature 0.6, top_k 50, seed 42. */
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

typedef struct {
    int32_t max_context;     /* per-sequence positions (default: the model's sequence_len) */
    int32_t max_running;     /* rows decoding at once (default: backend max_seqs) */
    int32_t prefill_chunk;   /* tokens of prefill per step per request (default 512) */
    int32_t max_queue;       /* waiting requests before submit refuses (default 256) */
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
    double forward_seconds;    /* ... of it inside the backend's forward passes */
} nc_scheduler_stats;

void nc_scheduler_get_stats(nc_scheduler *s, nc_scheduler_stats *out);

#endif /* NC_ENGINE_SCHEDULER_H */
