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
 * Threads: an engine may be shared by several threads. Queries, tokenize,
 * detokenize and chat rendering run concurrently; generation calls on one
 * engine run one at a time (a second caller waits for the first to
 * finish). For several conversations in parallel, open one engine per
 * thread (checkpoint weights are mmapped, so the OS shares them) or run
 * `nanochat serve`, which batches many streams. Callbacks run on the
 * calling thread; a callback must not start another generation on the
 * same engine (that call fails instead of deadlocking).
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
#define NANOCHAT_VERSION_MINOR 1 /* changes when declarations are added */
#define NANOCHAT_VERSION_PATCH 0
#define NANOCHAT_VERSION "0.1.0"
/* One number for #if tests: 10000 * major + 100 * minor + patch. */
#define NANOCHAT_VERSION_NUMBER (NANOCHAT_VERSION_MAJOR * 10000 + NANOCHAT_VERSION_MINOR * 100 + NANOCHAT_VERSION_PATCH)

/* The version of the library actually linked ("0.1.0"). */
const char *nc_version(void);

/* ==== the engine ==== */

typedef struct nc_engine nc_engine;

typedef struct {
    const char *model_path;     /* checkpoint dir, nanochat base dir, flat or Hugging Face download;
                                   NULL: $NANOCHAT_MODEL, else the bundled models/picochat */
    const char *tokenizer_path; /* tokenizer.pkl / tokenizer.json; NULL: found beside the model */
    const char *device;         /* "cpu", "cuda" or "auto" (NULL: auto, cuda when a GPU is usable) */
    int threads;                /* CPU threads; 0: all cores */
    int max_context;            /* tokens per conversation, prompt + reply; 0: the model's
                                   sequence_len, which is also the maximum */
} nc_engine_options;

/* Loads the model and tokenizer and prepares the backend. `opts` may be
 * NULL (all defaults). Returns NULL on failure (no such model, a tokenizer
 * that does not fit it, no GPU for "cuda", ...): see
 * nc_engine_last_error(). */
nc_engine *nc_engine_open(const nc_engine_options *opts);

/* Frees everything the engine holds. NULL is ignored. No call on the
 * engine may be running. */
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
    NC_REPLY_STOP = 1,      /* the model ended its reply (<|assistant_end|> or <|bos|>) */
    NC_REPLY_LENGTH = 2,    /* max_tokens, or the context limit, was reached */
    NC_REPLY_CANCELLED = 3, /* the stream callback asked to stop */
    NC_REPLY_ERROR = 4,     /* the backend failed (message in nc_engine_last_error) */
} nc_reply_finish;

/* "stop", "length", "cancelled", "error". */
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

#ifdef __cplusplus
}
#endif

#endif /* NANOCHAT_H */
