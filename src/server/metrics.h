/*
 * metrics.h: the server's counters and histograms, rendered as Prometheus
 * text by GET /metrics (and summarised by /stats).
 *
 * Two kinds of owners use the same record: the server (HTTP threads:
 * requests by endpoint and status, prompt tokens, cancellations, request
 * durations) and each engine (its thread: time to first token,
 * inter-token latency, generated tokens, prefix hits, batch sizes). One
 * mutex per record, held for a few additions at a time. With several
 * engines, every engine's series carry `engine` and `device` labels
 * (docs/multi-device.md); with one, the names are unlabelled as they
 * always were.
 */
#ifndef NC_SERVER_METRICS_H
#define NC_SERVER_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../engine/scheduler.h"

#define NC_METRICS_MAX_BUCKETS 24

typedef struct {
    int n_bounds;
    double bounds[NC_METRICS_MAX_BUCKETS]; /* upper bounds, ascending; +Inf implied */
    uint64_t counts[NC_METRICS_MAX_BUCKETS + 1];
    double sum;
    uint64_t total;
} nc_histogram;

/* Routes we count by name; anything else is "other". */
typedef enum {
    NC_EP_ROOT, NC_EP_NANOCHAT, NC_EP_CHAT, NC_EP_COMPLETIONS, NC_EP_MODELS, NC_EP_MODEL, NC_EP_TOKENIZE,
    NC_EP_DETOKENIZE, NC_EP_HEALTH, NC_EP_STATS, NC_EP_METRICS, NC_EP_OTHER, NC_EP_COUNT
} nc_endpoint;

/* Status classes we count: one slot per distinct code seen, bounded. */
#define NC_METRICS_MAX_STATUS 16

typedef struct nc_srv_metrics {
    pthread_mutex_t mu;
    double t_start;
    uint64_t requests[NC_EP_COUNT][NC_METRICS_MAX_STATUS];
    int statuses[NC_METRICS_MAX_STATUS]; /* code of each slot, 0 = free */
    uint64_t prompt_tokens;
    uint64_t generated_tokens;
    uint64_t cancelled;          /* requests ended by the client or a timeout */
    uint64_t prefix_hits;        /* requests that reused >= one KV block of the prefix cache */
    uint64_t prefix_misses;      /* ... that did not (both counted at the first token) */
    uint64_t finished[8];        /* rows by nc_finish_reason */
    nc_histogram ttft;           /* seconds from submit to first token */
    nc_histogram itl;            /* seconds between a row's tokens */
    nc_histogram e2e;            /* seconds from submit to the response's end */
    nc_histogram batch_rows;     /* rows per engine step */
} nc_srv_metrics;

void nc_metrics_init(nc_srv_metrics *m);
void nc_metrics_free(nc_srv_metrics *m);

void nc_metrics_request(nc_srv_metrics *m, nc_endpoint e, int status);
void nc_metrics_prompt_tokens(nc_srv_metrics *m, int64_t n);
void nc_metrics_cancelled(nc_srv_metrics *m);
void nc_metrics_e2e(nc_srv_metrics *m, double seconds);
/* Engine thread: one token of a row (ttft < 0 when not the request's first). */
void nc_metrics_token(nc_srv_metrics *m, double ttft, double itl);
void nc_metrics_finish(nc_srv_metrics *m, nc_finish_reason r);
/* Engine thread, at a request's first token: whether its prompt reused at
 * least one whole KV block of the prefix cache (a chat's earlier turns
 * served here). Every chat prompt shares its first few tokens with every
 * other, so a shorter match is not counted as a hit. */
void nc_metrics_prefix(nc_srv_metrics *m, bool hit);
void nc_metrics_step(nc_srv_metrics *m, int32_t rows);

/* One engine's part of the exposition. */
typedef struct {
    nc_srv_metrics *m;             /* its record */
    const nc_scheduler_stats *st;  /* its scheduler's, or NULL while it loads */
    int index;                     /* the `engine` label */
    const char *device;            /* the `device` label */
    bool serving;                  /* nanochat_engine_up */
} nc_metrics_engine;

/* The Prometheus exposition (text format 0.0.4) of the server's record
 * `m` and of engines[0..n) in a malloc'ed string. */
char *nc_metrics_render(nc_srv_metrics *m, const nc_metrics_engine *engines, int n, int ready);

#endif /* NC_SERVER_METRICS_H */
