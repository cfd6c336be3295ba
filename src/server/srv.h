/*
 * srv.h: what the server's files share (internal to src/server/).
 *
 *   http.c          libmicrohttpd plumbing: routing, bodies, auth, CORS,
 *                   JSON/SSE responses, disconnect detection
 *   job.c           one generation request: prompt building, submit,
 *                   waiting, cancel; the engine thread
 *   api_nanochat.c  nanochat's POST /chat/completions
 *   api_openai.c    /v1/chat/completions, /v1/completions, /v1/models
 *   api_misc.c      /tokenize, /detokenize, /health, /stats, /metrics, /
 *   server.c        options, startup, signals, shutdown
 */
#ifndef NC_SERVER_SRV_H
#define NC_SERVER_SRV_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api_request.h"
#include "gen_queue.h"
#include "gen_text.h"
#include "metrics.h"
#include "sbuf.h"
#include "server.h"

typedef enum { NC_SRV_LOADING = 0, NC_SRV_READY, NC_SRV_FAILED } nc_srv_state;

typedef struct nc_srv {
    nc_server_options opt;
    struct MHD_Daemon *daemon;
    nc_srv_metrics metrics;
    _Atomic int state;            /* nc_srv_state */
    _Atomic bool stopping;        /* shutdown began: refuse new work, end waits */
    _Atomic bool engine_stop;     /* the engine thread should return */
    _Atomic bool abort_jobs;      /* shutdown grace is over: end every request */
    _Atomic int active_jobs;      /* generation requests in flight */
    _Atomic uint64_t seed_state;  /* for requests without a seed */
    _Atomic uint64_t next_id;     /* response ids */
    pthread_t engine;
    bool engine_started;
    double t_created;             /* unix time, for "created" fields */

    nc_gen_waker *waker;          /* wakes streaming consumers off the engine thread (NULL: inline) */

    /* Valid once state == NC_SRV_READY (published with release order). */
    nc_bundle b;                  /* opened by the engine thread; b.max_context is the limit per request */
    char model_name[128];
    char device[256];
} nc_srv;

/* Per-connection state, from the first callback to request completion. */
typedef struct {
    nc_srv *srv;
    nc_endpoint ep;
    nc_sbuf body;
    bool too_large;     /* the body passed max_body_bytes: answer 413 */
    bool responded;     /* a response was queued */
    double t_start;
} nc_conn;

/* ==== http.c ==== */

/* Binds and starts the daemon (prints the URL), or -1 after printing why. */
int nc_http_start(nc_srv *srv);
/* Stops accepting new connections (in-flight ones continue). */
void nc_http_quiesce(nc_srv *srv);
/* Stops the daemon, joining every connection thread. */
void nc_http_stop(nc_srv *srv);

/* Queues `body` (copied) as a JSON response with CORS headers. */
enum MHD_Result nc_http_json(struct MHD_Connection *conn, nc_conn *c, int status, const nc_sbuf *body);
/* Same, for any content type. */
enum MHD_Result nc_http_send(struct MHD_Connection *conn, nc_conn *c, int status, const char *type,
                             const char *data, size_t len);
/* OpenAI's error shape {"error": {"message", "type", "param", "code"}};
 * for nanochat's endpoint also {"detail": message}, as FastAPI answers.
 * A 503 carries `Retry-After: 1`. */
enum MHD_Result nc_http_error(struct MHD_Connection *conn, nc_conn *c, const nc_api_error *e);
/* An error with `Retry-After: seconds` (503 while loading / queue full). */
enum MHD_Result nc_http_error_retry(struct MHD_Connection *conn, nc_conn *c, const nc_api_error *e,
                                    int retry_after_s);

/* A streamed text/event-stream response. `produce` appends the next bytes to
 * s->out, waiting up to ~0.1 s for the engine; it sets s->finished after the
 * last event, or s->abort if the client is gone. `destroy` runs when the
 * response is done (sent, failed or the client left). */
typedef struct nc_sse nc_sse;
struct nc_sse {
    nc_srv *srv;
    nc_sbuf out;
    size_t out_pos;
    bool finished;
    bool abort;
    void (*produce)(nc_sse *s);
    void (*destroy)(nc_sse *s);
};
/* Takes ownership of `s` (destroy is called exactly once, also on failure). */
enum MHD_Result nc_http_sse(struct MHD_Connection *conn, nc_conn *c, nc_sse *s);

/* The client socket, for disconnect checks while a request waits. */
int nc_http_client_fd(struct MHD_Connection *conn);
/* Whether the peer has closed its end (non-blocking peek). */
bool nc_http_client_gone(int fd);

/* ==== job.c: one generation request ==== */

typedef enum {
    NC_JOB_RUNNING = 0,
    NC_JOB_GONE,       /* client disconnected */
    NC_JOB_TIMEOUT,    /* request_timeout_s passed */
    NC_JOB_SHUTDOWN,   /* server stopping */
    NC_JOB_OVERFLOW,   /* client fell too far behind the engine */
    NC_JOB_ENGINE,     /* engine reported an error (message in job->error) */
} nc_job_fail;

typedef struct {
    nc_srv *srv;
    nc_gen_queue *q;
    uint64_t request_id;
    nc_gen_text text;
    int fd;
    double t_start, deadline;
    int32_t n_prompt;
    nc_gq_event *events;         /* take() buffer */
    nc_token_logprob *tops;
    int32_t events_cap;
    bool engine_done;            /* every row finished on the engine side */
    bool cancel_sent;
    nc_job_fail fail;
    char error[256];
} nc_job;

/* Builds the prompt of a parsed chat/completion request: chat render or
 * <|bos|> + text (or the given ids), truncation when asked, the context
 * check (400 naming the limit). Fills `gen` (max_tokens default and clamp,
 * seed). */
int nc_job_prompt(nc_srv *srv, const nc_api_request *req, nc_tokens *prompt, nc_gen_params *gen,
                  nc_api_error *err);

/* Submits the prompt. On failure fills `err` (503 queue full / loading /
 * stopping, 400 otherwise) and leaves nothing to end. */
int nc_job_start(nc_job *job, nc_srv *srv, struct MHD_Connection *conn, const nc_tokens *prompt,
                 const nc_gen_params *gen, bool tool_events, char *const *stop, const size_t *stop_len,
                 int n_stop, nc_api_error *err);

/* Waits up to `slice_s` for events and feeds them to job->text; tool
 * events go to `on_tool` in order. Returns 1 if something arrived, 0 if
 * not, -1 when the job failed (job->fail says why; it was cancelled). */
typedef void (*nc_job_tool_fn)(void *user, int32_t row, const nc_tool_event *t);
int nc_job_poll(nc_job *job, double slice_s, nc_job_tool_fn on_tool, void *user);

/* Every row has finished (by the engine or a stop string). */
bool nc_job_done(const nc_job *job);

/* Cancels what still runs, releases the queue, records metrics. */
void nc_job_end(nc_job *job);

/* Fills an error for a failed job (504 timeout, 503 shutdown, 500 engine). */
void nc_job_error(const nc_job *job, nc_api_error *err);

/* The engine thread: opens the bundle, then steps the scheduler. */
void *nc_engine_main(void *arg);

/* ==== endpoints ==== */

enum MHD_Result nc_api_nanochat(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_openai(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_models(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_tokenize(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_health(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_stats(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_metrics(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_index(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);

/* Whether the model is loaded (acquire order: srv->b is valid). */
bool nc_srv_ready(nc_srv *srv);
/* 503 + Retry-After while loading or stopping; returns true if it answered. */
bool nc_srv_refuse_unready(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c, enum MHD_Result *ret);

/* The embedded web page (web_page.c). */
const char *nc_web_index_html(size_t *len);

#endif /* NC_SERVER_SRV_H */
