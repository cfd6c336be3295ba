/*
 * server.h: `nanochat serve`, the HTTP front of the continuous-batching
 * scheduler (issue 5). Mirrors nanochat's scripts/chat_web.py (its
 * /chat/completions SSE protocol, /health, /stats and a chat page at /) and
 * adds an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
 * /v1/models), /tokenize, /detokenize and Prometheus /metrics.
 *
 * Threads: libmicrohttpd runs one thread per connection; one engine thread
 * opens the engine bundle (engine/bundle.h: model, tokenizer, backend,
 * scheduler) after the socket is listening, so /health answers "ready":
 * false meanwhile, and then drives the scheduler. HTTP threads
 * submit and cancel requests; tokens come back through a bounded per-request
 * queue (server/gen_queue.h). Nothing here touches a tensor.
 */
#ifndef NC_SERVER_SERVER_H
#define NC_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "../engine/bundle.h"

typedef struct {
    nc_bundle_options model;   /* what to load, where, sized how (rows 0: max_batch, max_batch_tokens,
                                  kv_blocks and max_queue, default 256, as given; max_context may pass
                                  sequence_len); opened on the engine thread */
    const char *host;          /* bind address (default "127.0.0.1") */
    int port;                  /* 0: any free port (the chosen one is printed) */
    const char *api_key;       /* NULL: no auth; else "Authorization: Bearer KEY" on API routes */
    const char *model_name;    /* id reported by /v1/models (default: from the model's source) */
    int max_connections;       /* concurrent HTTP connections (default 512) */
    size_t max_body_bytes;     /* request body limit, 413 beyond (default 1 MiB) */
    double request_timeout_s;  /* per-request wall-clock limit (default 600) */
    int idle_timeout_s;        /* close connections silent this long (default 30) */
    int max_lag_tokens;        /* undelivered tokens before a slow reader is cancelled (default 4096) */
} nc_server_options;

/* Defaults as documented above (the bundled default model on "auto"). */
void nc_server_options_init(nc_server_options *o);

/* Starts listening, opens the model's bundle on the engine thread and
 * serves until SIGINT or SIGTERM (graceful: stop accepting, finish or
 * cancel in-flight requests, free everything). Returns 0 on a clean shutdown, -1 (message
 * printed) if the socket cannot be bound or the model fails to load. */
int nc_server_run(const nc_server_options *o);

#endif /* NC_SERVER_SERVER_H */
