/*
 * server.h: `nanochat serve`, the HTTP front of the continuous-batching
 * scheduler (issue 5). Mirrors nanochat's scripts/chat_web.py (its
 * /chat/completions SSE protocol, /health, /stats and a chat page at /) and
 * adds an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
 * /v1/models), /tokenize, /detokenize and Prometheus /metrics.
 *
 * Threads: libmicrohttpd runs one thread per connection; one engine thread
 * loads the model (after the socket is listening, so /health answers
 * "ready": false meanwhile) and then drives the scheduler. HTTP threads
 * submit and cancel requests; tokens come back through a bounded per-request
 * queue (server/gen_queue.h). Nothing here touches a tensor.
 */
#ifndef NC_SERVER_SERVER_H
#define NC_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../model/model.h"
#include "../tokenizer/tokenizer.h"

/* What the loader callback hands to the server; the server frees all three
 * (nc_backend_free, nc_tokenizer_free, nc_model_free) at shutdown. */
typedef struct {
    nc_model *model;
    nc_tokenizer *tok;
    nc_backend *backend;
} nc_server_model;

/* Loads model, tokenizer and backend (sized by `bp`) on the engine thread.
 * Returns 0, or -1 after printing a one-line error. */
typedef int (*nc_server_load_fn)(void *user, const nc_backend_params *bp, nc_server_model *out);

typedef struct {
    const char *host;          /* bind address (default "127.0.0.1") */
    int port;                  /* 0: any free port (the chosen one is printed) */
    const char *api_key;       /* NULL: no auth; else "Authorization: Bearer KEY" on API routes */
    const char *model_name;    /* id reported by /v1/models (default: from the model's source) */
    int max_batch;             /* rows decoding at once (0: backend default) */
    int max_batch_tokens;      /* tokens per forward (0: backend default) */
    int max_context;           /* positions per sequence (0: model's sequence_len) */
    int kv_blocks;             /* KV pool blocks (0: backend picks) */
    int max_queue;             /* waiting requests before 503 (default 256) */
    int max_connections;       /* concurrent HTTP connections (default 512) */
    size_t max_body_bytes;     /* request body limit, 413 beyond (default 1 MiB) */
    double request_timeout_s;  /* per-request wall-clock limit (default 600) */
    int idle_timeout_s;        /* close connections silent this long (default 30) */
    int max_lag_tokens;        /* undelivered tokens before a slow reader is cancelled (default 4096) */
    int threads;               /* CPU backend threads (0: all cores) */
    nc_server_load_fn load;    /* required */
    void *load_user;
} nc_server_options;

/* Defaults as documented above (load is left NULL). */
void nc_server_options_init(nc_server_options *o);

/* Starts listening, loads the model on the engine thread and serves until
 * SIGINT or SIGTERM (graceful: stop accepting, finish or cancel in-flight
 * requests, free everything). Returns 0 on a clean shutdown, -1 (message
 * printed) if the socket cannot be bound or the model fails to load. */
int nc_server_run(const nc_server_options *o);

#endif /* NC_SERVER_SERVER_H */
