/*
 * api_request.h: request bodies -> validated parameters, for every JSON
 * endpoint of the server. Pure functions over bytes (no tokenizer, no
 * scheduler), so tests/fuzz/fuzz_request.c can throw anything at them.
 *
 * Three dialects:
 *   - nanochat's POST /chat/completions (scripts/chat_web.py): messages,
 *     temperature 0-2, top_k 0-200, max_tokens 1-4096, 1-500 messages, each
 *     non-empty and <= 8000 characters, <= 32000 in total;
 *   - OpenAI's /v1/chat/completions and /v1/completions: unknown fields are
 *     ignored, null means "absent", wrong types and out-of-range values are
 *     errors naming the field (OpenAI's error shape is built by the caller);
 *   - /tokenize and /detokenize (vLLM's shapes).
 */
#ifndef NC_SERVER_API_REQUEST_H
#define NC_SERVER_API_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../engine/scheduler.h"
#include "../tokenizer/tokenizer.h"

typedef enum {
    NC_API_NANOCHAT = 0, /* POST /chat/completions */
    NC_API_CHAT,         /* POST /v1/chat/completions */
    NC_API_COMPLETION,   /* POST /v1/completions */
    NC_API_TOKENIZE,     /* POST /tokenize */
    NC_API_DETOKENIZE,   /* POST /detokenize */
} nc_api_kind;

/* nanochat's abuse limits (chat_web.py). */
#define NC_NANOCHAT_MAX_MESSAGES 500
#define NC_NANOCHAT_MAX_MESSAGE_CHARS 8000
#define NC_NANOCHAT_MAX_TOTAL_CHARS 32000
#define NC_NANOCHAT_MAX_TOP_K 200
#define NC_NANOCHAT_MAX_MAX_TOKENS 4096
/* nanochat's web defaults. */
#define NC_NANOCHAT_DEFAULT_TEMPERATURE 0.8f
#define NC_NANOCHAT_DEFAULT_TOP_K 50
#define NC_NANOCHAT_DEFAULT_MAX_TOKENS 512

/* Our own bounds for the OpenAI dialect. */
#define NC_API_MAX_N 16          /* choices per request */
#define NC_API_MAX_STOP 16       /* stop strings */
#define NC_API_MAX_STOP_BYTES 256
#define NC_API_MAX_MESSAGES 4096
#define NC_API_MAX_TOP_K 1000000

typedef struct {
    int status;           /* HTTP status: 400 (or 413, 503, ... set by callers) */
    char message[512];    /* one line, names the field and its allowed range */
    char param[64];       /* offending field ("messages[2].content"), "" if none */
    const char *code;     /* OpenAI error code string, or NULL */
} nc_api_error;

typedef struct {
    nc_api_kind kind;

    /* Chat dialects: messages with malloc'ed contents. */
    nc_chat_message *messages;
    int n_messages;

    /* Completions and /tokenize: a text prompt (malloc'ed, NUL-terminated)
     * or, when has_prompt_ids, token ids (also /detokenize's input). */
    char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids;
    int32_t n_prompt_ids;
    bool has_prompt_ids;

    /* Generation. gen.seed is only meaningful when seed_given; max_tokens
     * is 0 when not given (the caller fills the context's remainder). */
    nc_gen_params gen;
    bool seed_given;
    bool stream;
    bool include_usage;         /* stream_options.include_usage */
    char *stop[NC_API_MAX_STOP];
    size_t stop_len[NC_API_MAX_STOP];
    int n_stop;
    bool logprobs;              /* return logprobs (gen.top_logprobs >= 0) */
    bool echo;                  /* completions: prepend the prompt text */
    bool truncate;              /* drop the oldest context instead of a 400 */
    bool add_special_tokens;    /* /tokenize: prepend <|bos|> to a prompt */
    char *model;                /* as given, or NULL */
    char *user;                 /* OpenAI's end-user id, or NULL: a conversation key for the router */
} nc_api_request;

/* Parses and validates `len` bytes of JSON for endpoint `kind`.
 * `max_tokens_limit` bounds max_tokens in the OpenAI dialect (the context
 * size; <= 0: no bound here). Returns 0 and fills `out` (free it with
 * nc_api_request_free), or -1 with `err` filled (status 400) and `out`
 * left empty. */
int nc_api_parse(nc_api_kind kind, const char *body, size_t len, int32_t max_tokens_limit,
                 nc_api_request *out, nc_api_error *err);

void nc_api_request_free(nc_api_request *r);

/* Fills `err` (status, printf-style message, param) and returns -1. */
int nc_api_fail(nc_api_error *err, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* NC_SERVER_API_REQUEST_H */
