/*
 * nanochat.h: the public C API of nanochat-c, for programs that embed the
 * engine (link build/libnanochat.a plus the libraries `make` names) or
 * script it through a foreign-function interface.
 *
 * One opaque handle, nc_engine, holds a loaded model, its tokenizer, a
 * backend (CPU or CUDA) and the batching scheduler. Everything else is
 * plain data owned by the caller:
 *
 *     nc_engine *e = nc_engine_open(NULL);          // the bundled picochat
 *     if (!e) { fprintf(stderr, "%s\n", nc_engine_last_error()); ... }
 *     nc_message m = {"user", "What is 123 * 45?"};
 *     nc_prompt p = {.messages = &m, .n_messages = 1};
 *     nc_reply r;
 *     if (nc_engine_generate(e, &p, NULL, &r) == 0) puts(r.text);
 *     nc_reply_free(&r);
 *     nc_engine_close(e);
 *
 * Conventions:
 *   - Functions that can fail return 0 (or a count) on success and -1 (or
 *     NULL) on failure, with a one-line message in nc_engine_last_error().
 *     Bad input never aborts the process.
 *   - Option structs are read only during the call; zero-initialise them
 *     (`= {0}`): every zero field means "the default". New fields are only
 *     ever appended.
 *   - Text is UTF-8 with an explicit length; returned text is also
 *     NUL-terminated.
 *
 * Two ways to generate:
 *   - nc_engine_generate / _stream: one reply, blocking, with a streaming
 *     callback (a chat front end);
 *   - nc_request_submit + nc_engine_step: many requests at once, each with
 *     its own prompt, n samples, sampling options and seed, sharing every
 *     forward pass (continuous batching); per-step tokens, masks (sampled
 *     or forced by the calculator) and log-probabilities are collected for
 *     the caller to read (an evaluation or RL loop; nanochat's
 *     Engine.generate / generate_batch).
 *
 * Threads: an engine may be shared by several threads. Queries, tokenize,
 * detokenize and chat rendering run concurrently. Submitting, reading,
 * cancelling and freeing requests may happen on any thread at any time.
 * Stepping (nc_engine_step, nc_request_wait, nc_engine_generate) runs on
 * the calling thread, one caller at a time: a second caller waits for the
 * step (or, for nc_engine_generate, the whole reply) in progress on another
 * thread, whose steps advance every request of the engine, its own too.
 * Callbacks run on the calling thread; a callback must not generate or
 * step on the same engine (that call fails instead of deadlocking).
 */
#ifndef NANOCHAT_H
#define NANOCHAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ==== version ==== */

#define NANOCHAT_VERSION_MAJOR 0 /* changes when a declaration here changes incompatibly */
#define NANOCHAT_VERSION_MINOR 2 /* changes when declarations are added */
#define NANOCHAT_VERSION_PATCH 0
#define NANOCHAT_VERSION "0.2.0"
/* One number for #if tests: 10000 * major + 100 * minor + patch. */
#define NANOCHAT_VERSION_NUMBER (NANOCHAT_VERSION_MAJOR * 10000 + NANOCHAT_VERSION_MINOR * 100 + NANOCHAT_VERSION_PATCH)

/* The version of the library actually linked ("0.1.0"). */
const char *nc_version(void);

/* ==== the engine ==== */

typedef struct nc_engine nc_engine;

typedef struct {
    const char *model_path;     /* checkpoint dir, nanochat base dir, flat or Hugging Face download,
                                   or a model on the Hub: "hf:OWNER/NAME[@REVISION][/SUBDIR]"
                                   (downloaded once into huggingface_hub's cache; HF_TOKEN,
                                   HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT apply);
                                   NULL: $NANOCHAT_MODEL, else the bundled models/picochat */
    const char *tokenizer_path; /* tokenizer.pkl / tokenizer.json; NULL: found beside the model */
    const char *device;         /* "cpu", "cuda" or "auto" (NULL: auto, cuda when a GPU is usable) */
    int threads;                /* CPU threads; 0: all cores */
    int max_context;            /* tokens per conversation, prompt + reply; 0: the model's
                                   sequence_len, which is also the maximum */
    /* since 0.2 */
    int max_batch;              /* rows decoding together, summed over every running request (a
                                   request of n samples takes n rows); 1..4096, 0: 8. Requests
                                   beyond it wait in a queue (no limit on its length) */
    int kv_blocks;              /* KV cache size in blocks of 64 positions. 0: max_batch + 2
                                   full contexts (every row can reach max_context, and a chat
                                   keeps its prefix for the next turn). Fewer is fine for short
                                   requests: a request starts once its rows' worst case
                                   (prompt + max_tokens each) fits, and waits before that */
    int progress;               /* nonzero: an hf: model's download progress on stderr */
    volatile int *interrupt;    /* non-NULL: an hf: download stops (with an error; partial files
                                   are resumed next time) once another thread sets *interrupt
                                   nonzero */
    const char *random;         /* non-NULL instead of model_path: random weights of this shape,
                                   for benchmarks ("d20", "d26", "d32", "d34" or "L,C,H[,Hkv[,V]]");
                                   the tokenizer is tokenizer_path, else the bundled model's */
    const char *weights;        /* "bf16", "int8" or "fp8": the layer and lm_head weights, an
                                   8-bit format quantised at load with one scale per row
                                   (docs/quantization.md); NULL: as the checkpoint stores them */
    const char *kv_cache;       /* "bf16" (full precision) or "fp8" (e4m3, a scale per vector);
                                   NULL: "bf16" */
    int deterministic;          /* nonzero: a request's tokens do not depend on the other requests
                                   running beside it, on how its prompt was chunked or on the
                                   run (CUDA: batch-invariant kernels, slower; the CPU backend
                                   always is). docs/performance.md, Batch invariance */
} nc_engine_options;

/* Loads the model and tokenizer and prepares the backend. `opts` may be
 * NULL (all defaults). Returns NULL on failure (no such model, a tokenizer
 * that does not fit it, no GPU for "cuda", ...): see
 * nc_engine_last_error(). */
nc_engine *nc_engine_open(const nc_engine_options *opts);

/* Frees everything the engine holds, requests not yet freed included.
 * NULL is ignored. No call on the engine may be running. */
void nc_engine_close(nc_engine *e);

/* The message of the last failed nc_* call on this thread, "" if the last
 * call succeeded. Valid until the next nc_* call on this thread. */
const char *nc_engine_last_error(void);

typedef struct {
    int n_layer;             /* L */
    int n_embd;              /* C */
    int n_head;              /* H */
    int n_kv_head;           /* Hkv */
    int vocab_size;          /* V: token ids are 0 .. V-1 */
    int sequence_len;        /* the context the model was trained with */
    int max_context;         /* the engine's limit per conversation (prompt + reply) */
    int64_t n_params;        /* weights, padded rows included */
    const char *generation;  /* nanochat architecture generation: "V1" ... "V6" */
    const char *source;      /* where the weights came from (a path) */
    const char *format;      /* "nanochat .pt", "safetensors", ... */
    const char *device;      /* e.g. "cpu: 16 threads, avx2" or the GPU's name */
    /* since 0.2 */
    int tokenizer_vocab_size; /* ids the tokenizer knows (<= vocab_size: models pad their rows) */
    int max_batch;            /* rows decoding together, as resolved */
    int kv_blocks;            /* KV cache blocks (of 64 positions), as allocated */
} nc_engine_info;

/* Fills `info`; its strings belong to the engine (valid until close). */
int nc_engine_get_info(const nc_engine *e, nc_engine_info *info);

/* ==== tokens and text ==== */

/* Encodes `len` bytes of UTF-8 text as nanochat's tokenizer does for
 * ordinary text (never special tokens: "<|bos|>" typed by a user stays
 * plain characters). Writes up to `cap` ids to `ids` (may be NULL when cap
 * is 0) and returns how many the text needs, so a call with cap 0 sizes
 * the buffer; -1 on failure. */
int64_t nc_engine_tokenize(const nc_engine *e, const char *text, size_t len, int32_t *ids, size_t cap);

/* Decodes ids to UTF-8 text as nanochat's tokenizer.decode() does (special
 * tokens as their text, invalid UTF-8 as U+FFFD). Like snprintf: writes at
 * most cap - 1 bytes plus a NUL and returns the full text's length in bytes
 * (excluding the NUL); -1 for an id outside the vocabulary. */
int64_t nc_engine_detokenize(const nc_engine *e, const int32_t *ids, size_t n, char *text, size_t cap);

/* The id of a special token by its text ("<|bos|>", "<|assistant_end|>",
 * ...), or -1 if this tokenizer has none of that name. */
int32_t nc_engine_special_token(const nc_engine *e, const char *name);

/* One message of a conversation. */
typedef struct {
    const char *role;    /* "system" (first message only), "user" or "assistant" */
    const char *content; /* UTF-8, NUL-terminated */
} nc_message;

/* Renders a conversation as nanochat's chat format: <|bos|>, each message
 * between its role's start and end tokens (a system message is merged into
 * the first user message as system + "\n\n" + user), then
 * <|assistant_start|> for the reply. Ids and return value as
 * nc_engine_tokenize; -1 for an empty conversation, an unknown role or a
 * misplaced system message. */
int64_t nc_engine_render_chat(const nc_engine *e, const nc_message *msgs, size_t n_msgs, int32_t *ids,
                              size_t cap);

/* ==== generation ==== */

/* What to continue: set exactly one of the three. */
typedef struct {
    const nc_message *messages; /* a conversation: rendered as nc_engine_render_chat */
    size_t n_messages;
    const char *text;           /* a base-model completion: <|bos|> + the text, ordinary encoding */
    const int32_t *ids;         /* exact token ids, used as given */
    size_t n_ids;
} nc_prompt;

/* Sampling settings. A zeroed struct means greedy decoding (temperature
 * 0, lowest id on ties), no top-k / top-p / min-p, seed 0, 256 tokens,
 * calculator on. Pass NULL instead for nanochat's chat CLI defaults
 * (nc_generate_options_default). */
typedef struct {
    float temperature;  /* 0: greedy; up to 10 */
    int top_k;          /* keep the k most likely tokens; 0: off */
    float top_p;        /* nucleus sampling in (0, 1]; 0 or 1: off */
    float min_p;        /* drop tokens below min_p * the best one's probability; 0: off */
    uint64_t seed;      /* same seed, same settings, same model and device: same reply */
    int max_tokens;     /* tokens to generate, tool output included; 0: 256 */
    int no_calculator;  /* nonzero: do not run the calculator tool */
} nc_generate_options;

/* nanochat's chat CLI defaults: temperature 0.6, top_k 50, seed 42, 256
 * tokens, calculator on. */
nc_generate_options nc_generate_options_default(void);

typedef enum {
    NC_REPLY_NONE = 0,      /* still running (rows of an nc_request only) */
    NC_REPLY_STOP = 1,      /* the model ended its reply (<|assistant_end|> or <|bos|>) */
    NC_REPLY_LENGTH = 2,    /* max_tokens, or the context limit, was reached */
    NC_REPLY_CANCELLED = 3, /* the stream callback asked to stop, or nc_request_cancel */
    NC_REPLY_ERROR = 4,     /* the backend failed (message in nc_engine_last_error) */
} nc_reply_finish;

/* "none", "stop", "length", "cancelled", "error". */
const char *nc_reply_finish_name(nc_reply_finish f);

/* A generated reply. Owned by the caller: release with nc_reply_free. */
typedef struct {
    char *text;              /* the tokens below decoded (nc_engine_detokenize), NUL-terminated */
    size_t text_len;         /* bytes in text (it may contain NUL bytes if the model made them) */
    int32_t *tokens;         /* generated ids, the terminal token excluded; a calculator call shows
                                as <|python_start|> expr <|python_end|> <|output_start|> result
                                <|output_end|> (the output forced by the engine, as in nanochat) */
    size_t n_tokens;
    nc_reply_finish finish;
    int32_t n_prompt_tokens; /* prompt length in tokens */
    int32_t n_cached_tokens; /* of those, reused from the previous call's cache (chat continuation) */
} nc_reply;

void nc_reply_free(nc_reply *r);

/* Streaming callback: called once per generated token, in order, with the
 * text it completes (`len` may be 0 while a multi-byte character is split
 * across tokens; the text is not NUL-terminated and valid only during the
 * call) and the token id, then possibly once more with token -1 for a
 * final fragment. The deltas concatenate to the reply's text. Return 0 to
 * go on, nonzero to stop (finish NC_REPLY_CANCELLED). */
typedef int (*nc_stream_fn)(void *user, const char *delta, size_t len, int32_t token);

/* Generates a reply to `prompt` and blocks until it is complete. `opts`
 * NULL: nanochat's defaults. Returns 0 with `reply` filled (finish stop,
 * length or cancelled), or -1 with nc_engine_last_error(): `reply` is then
 * zeroed for a refused request (invalid options, an empty prompt, a prompt
 * that leaves no room within max_context; nothing to free) and holds the
 * partial reply with finish NC_REPLY_ERROR for a backend failure.
 * nc_reply_free is right in every case. Repeated calls that extend the
 * same conversation reuse the cached prefix (only the new tokens are
 * processed). */
int nc_engine_generate(nc_engine *e, const nc_prompt *prompt, const nc_generate_options *opts, nc_reply *reply);

/* As nc_engine_generate, calling `cb` (may be NULL) with each text delta
 * as it is generated. `reply` may be NULL when only the stream is wanted. */
int nc_engine_generate_stream(nc_engine *e, const nc_prompt *prompt, const nc_generate_options *opts,
                              nc_stream_fn cb, void *user, nc_reply *reply);

/* ==== many requests at once (since 0.2) ==== */

/*
 * A request: one prompt, n samples (rows) that share its prefill, and the
 * tokens each row generates, kept for the caller to read while it runs and
 * after. Requests queue on the engine and run together, joining and
 * leaving the batch at every step (up to max_batch rows at once), exactly
 * as nanochat's Engine.generate runs one: the prompt is prefilled once and
 * its last logits shared by the n rows, each row samples its own tokens
 * (row i with seed + i), the calculator forces <|output_start|> result
 * <|output_end|> after a row's <|python_start|> expr <|python_end|>, and a
 * row ends with <|assistant_end|> or <|bos|> (that terminal token is its
 * last token), after max_tokens tokens or at max_context.
 *
 * Rows of one request advance together: token k of every row comes from
 * the same step, so reading token k of each row gives nanochat's per-step
 * token column (a finished row has no token k).
 *
 *     nc_request_options o = {.sampling = {.temperature = 1.0f, .seed = 42, .max_tokens = 64}, .n = 4};
 *     nc_request *r = nc_request_submit(e, &prompt, &o);
 *     if (!r || nc_request_wait(r)) { fprintf(stderr, "%s\n", nc_engine_last_error()); ... }
 *     for (int i = 0; i < 4; i++) {
 *         int64_t n = nc_request_read(r, i, 0, NULL, NULL, NULL, 0, NULL);   // how many
 *         ... nc_request_read(r, i, 0, tokens, masks, NULL, n, &finish);
 *     }
 *     nc_request_free(r);
 *
 * Threads: see the top of this file. Reads are consistent snapshots: a row
 * read while another thread steps shows a prefix of what it will show
 * later. Cancelling: nc_request_cancel (or nc_request_free of an unfinished
 * request) takes effect at the start of the next step, on any thread; the
 * rows still running end with finish NC_REPLY_CANCELLED, keeping what they
 * generated, and their KV cache is released. A cancelled request never
 * blocks a stepping thread.
 */
typedef struct nc_request nc_request;

typedef struct {
    nc_generate_options sampling; /* as for nc_engine_generate (zeroed: greedy, 256 tokens) */
    int n;                        /* rows (samples) sharing one prefill of the prompt: nanochat's
                                     num_samples; 0: 1; at most max_batch and 256 */
    int logprobs;                 /* nonzero: record each sampled token's log-probability (the
                                     model's log-softmax, temperature 1). Costs a copy of the
                                     logits to the host and host-side sampling for this
                                     request's rows, which matters on a GPU */
} nc_request_options;

/* Queues a request; it runs as other threads (or this one) step the
 * engine. `opts` NULL: nanochat's chat CLI defaults (nc_generate_options_
 * default), n 1, no log-probabilities. Returns NULL with
 * nc_engine_last_error() when refused: invalid options, an empty prompt,
 * ids outside the vocabulary, a prompt that leaves no room within
 * max_context, n above max_batch, or a request whose worst case cannot fit
 * the KV cache at all. Release with nc_request_free. */
nc_request *nc_request_submit(nc_engine *e, const nc_prompt *prompt, const nc_request_options *opts);

/* Runs one step of the engine's scheduler on the calling thread: at most
 * one forward pass, advancing every queued and running request (a step
 * takes milliseconds to a fraction of a second, so a caller that loops on
 * it stays responsive, e.g. to Ctrl-C). Returns the number of requests
 * still queued or running on the engine (0: idle; a step then does
 * nothing), or -1 with nc_engine_last_error() when the backend failed (the
 * requests in that step end with NC_REPLY_ERROR) or when called from a
 * stream callback of the same engine. */
int nc_engine_step(nc_engine *e);

/* Steps the engine until every row of `r` has finished (other requests
 * advance too). Returns 0, or -1 with nc_engine_last_error() when a step
 * failed or a row ended with NC_REPLY_ERROR. */
int nc_request_wait(nc_request *r);

/* The request's number of rows (its n). */
int nc_request_rows(const nc_request *r);

/* 1 once every row has finished, else 0. */
int nc_request_done(const nc_request *r);

/* Reads row `row` (0 .. n-1): copies its generated tokens [from, from +
 * cap) that exist so far into `tokens`, their masks into `masks` (1:
 * sampled, 0: forced by the calculator, as nanochat's token_masks) and
 * their log-probabilities into `logprobs` (0 for forced tokens and when the
 * request did not ask for them); each of the three may be NULL. `finish`
 * (may be NULL) receives the row's finish reason, NC_REPLY_NONE while it
 * runs. Returns the number of tokens the row has so far (so a call with
 * cap 0 sizes the buffers), the terminal token included when the row
 * stopped; -1 for a row outside 0 .. n-1. */
int64_t nc_request_read(const nc_request *r, int row, size_t from, int32_t *tokens, uint8_t *masks,
                        float *logprobs, size_t cap, nc_reply_finish *finish);

/* The message of a row that ended with NC_REPLY_ERROR, else "". Valid
 * until the request is freed. */
const char *nc_request_error(const nc_request *r);

/* Asks the request's unfinished rows to stop (see above). Idempotent. */
void nc_request_cancel(nc_request *r);

/* Releases the request; an unfinished one is cancelled first (its memory
 * is reclaimed by the next step, on whichever thread). NULL is ignored.
 * Requests still held when the engine closes are freed by
 * nc_engine_close; their handles are invalid afterwards. */
void nc_request_free(nc_request *r);

#ifdef __cplusplus
}
#endif

#endif /* NANOCHAT_H */
