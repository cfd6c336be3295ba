/*
 * server.h: `nanochat serve`, the HTTP front of the continuous-batching
 * scheduler (issue 5). Mirrors nanochat's scripts/chat_web.py (its
 * /chat/completions SSE protocol, /health, /stats and a chat page at /) and
 * adds an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
 * /v1/models), /tokenize, /detokenize and Prometheus /metrics.
 *
 * Threads: libmicrohttpd runs one thread per connection; after the socket
 * is listening (so /health answers "ready": false meanwhile) a loader
 * thread loads the model and tokenizer once and starts one engine per
 * device (--devices; docs/multi-device.md): a backend, a scheduler and the
 * thread that steps it. A router sends each new request to one engine.
 * HTTP threads submit and cancel requests; tokens come back through a
 * bounded per-request queue (server/gen_queue.h). Nothing here touches a
 * tensor.
 */
#ifndef NC_SERVER_SERVER_H
#define NC_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "../engine/bundle.h"
#include "log.h"

/* The most engines one server runs. */
#define NC_SERVER_MAX_ENGINES 64

/* One engine's device. */
typedef struct {
    char name[96];             /* a backend device name: "cpu", "cuda:1", "cuda:0+1" (tensor parallel) */
    int threads;               /* CPU threads (0: model.threads) */
} nc_server_device;

/* Parses --devices: "all" (every GPU this process sees), or a comma list
 * of cuda:N / cpu / cpu:T (a CPU engine of T threads). With
 * `tensor_parallel` > 1, consecutive groups of that many GPUs make one
 * engine each ("cuda:0+1"). CPU engines without a thread count share
 * `threads` (0: every core) evenly. `gpu_count`: what "all" means. Fills
 * out[0..*n); -1 with a one-line reason in `why` for anything else
 * (unknown names, a GPU twice, CPU and GPU engines mixed, a GPU count the
 * group size does not divide). */
int nc_server_parse_devices(const char *list, int tensor_parallel, int threads, int gpu_count,
                            nc_server_device *out, int *n, char *why, size_t cap);

typedef struct {
    nc_bundle_options model;   /* what to load, where, sized how (rows 0: max_batch, max_batch_tokens,
                                  kv_blocks and max_queue, default 256, as given; max_context may pass
                                  sequence_len); opened on the engine thread */
    const char *host;          /* bind address (default "127.0.0.1") */
    int port;                  /* 0: any free port (the chosen one is printed) */
    const char *api_key;       /* NULL: no auth; else "Authorization: Bearer KEY" on API routes */
    const char *model_name;    /* id reported by /v1/models (default: from the model's source) */
    int max_connections;       /* concurrent HTTP connections (default 512) */
    int max_connections_per_ip; /* of them from one client address (default: half of max_connections) */
    size_t max_body_bytes;     /* request body limit, 413 beyond (default 1 MiB) */
    double read_timeout_s;     /* a request (head and body) must arrive whole within this many seconds
                                  of its first byte, 408 otherwise (default 30) */
    double request_timeout_s;  /* per-request wall-clock limit (default 600) */
    int idle_timeout_s;        /* close connections silent this long (default 30) */
    int max_lag_tokens;        /* undelivered tokens before a slow reader is cancelled (default 4096) */
    const char *cors_origins;  /* origins allowed cross-origin: "*" (default) or a comma-separated list */
    nc_log_format log_format;  /* text (default) or JSON Lines */
    nc_log_level log_level;    /* lowest level logged (default info; debug adds libmicrohttpd's messages) */
    nc_server_device devices[NC_SERVER_MAX_ENGINES]; /* one engine each (see nc_server_parse_devices) */
    int n_devices;             /* 0: one engine on model.device */
} nc_server_options;

/* Defaults as documented above (the bundled default model on "auto"). */
void nc_server_options_init(nc_server_options *o);

/* Starts listening, loads the model and starts its engines on other
 * threads and serves until SIGINT or SIGTERM (graceful: stop accepting,
 * finish or cancel in-flight requests, free everything). Returns 0 on a
 * clean shutdown, -1 (message printed) if the socket cannot be bound, the
 * model or an engine fails to load, or every engine has stopped. */
int nc_server_run(const nc_server_options *o);

#endif /* NC_SERVER_SERVER_H */
