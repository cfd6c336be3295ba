/*
 * srv.h: what the server's files share (internal to src/server/).
 *
 *   gate.c          the listening socket; per-address and total connection
 *                   limits, request-head checks and the read deadline,
 *                   before a connection reaches libmicrohttpd
 *   http.c          libmicrohttpd plumbing: routing, bodies, auth, CORS,
 *                   Content-Type, JSON/SSE responses, disconnect detection,
 *                   the request log
 *   http_parse.c    request heads and header values (pure; fuzzed)
 *   log.c           the log: request lines, the server's messages
 *   job.c           one generation request: prompt building, submit,
 *                   waiting, cancel
 *   engines.c       loading the model once and one engine per device (its
 *                   backend, scheduler and thread), the engine thread
 *   router.c        which engine a new request goes to: conversation
 *                   affinity (session key, cached prefix), else the least
 *                   outstanding work
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
#include "http_parse.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "server.h"

typedef enum { NC_SRV_LOADING = 0, NC_SRV_READY, NC_SRV_FAILED } nc_srv_state;

typedef struct nc_gate nc_gate;
struct nc_job;
struct nc_srv;

/* An engine's life: loading, then serving until shutdown, or failed (at
 * load, or stopped after its device failed mid-run). */
typedef enum { NC_ENGINE_LOADING = 0, NC_ENGINE_READY, NC_ENGINE_FAILED } nc_engine_state;

/* One engine: a backend on its device(s), a scheduler, the thread that
 * steps it (docs/multi-device.md). The model and tokenizer are the
 * server's, shared. */
typedef struct nc_srv_engine {
    struct nc_srv *srv;
    int index;
    nc_server_device dev;         /* its device name and CPU threads, as configured */
    nc_backend *backend;          /* made and driven by its thread */
    nc_backend *draft_backend;    /* --draft-model's on this engine's device, or NULL */
    nc_scheduler *sched;
    int32_t capacity;             /* rows it runs at once */
    pthread_t thread;
    bool started;
    _Atomic int state;            /* nc_engine_state; description / error are written before it changes */
    _Atomic int outstanding;      /* rows of requests routed here and not yet ended: the router's load */
    nc_srv_metrics metrics;       /* what its thread observes: tokens, latencies, prefix hits, steps */
    char description[512];        /* the backend's own description, once ready */
    char error[512];              /* why it failed */
    void *debug_ops;              /* NC_DEBUG_FAIL_ENGINE's wrapping of its backend's ops (engines.c) */
} nc_srv_engine;

/* Conversation affinity: session key -> engine, bounded and expiring
 * (router.c). */
typedef struct nc_session_table nc_session_table;

typedef struct nc_srv {
    nc_server_options opt;
    struct MHD_Daemon *daemon;
    nc_gate *gate;                /* accepts connections and reads request heads (gate.c) */
    nc_origin_list cors;          /* --cors-origins */
    nc_srv_metrics metrics;
    _Atomic int state;            /* nc_srv_state */
    _Atomic bool stopping;        /* shutdown began: refuse new work, end waits */
    _Atomic bool engine_stop;     /* the engine threads should return */
    _Atomic bool abort_jobs;      /* shutdown grace is over: end every request */
    _Atomic int active_jobs;      /* generation requests in flight */
    _Atomic uint64_t seed_state;  /* for requests without a seed */
    _Atomic uint64_t next_id;     /* response ids */
    pthread_t loader;             /* loads the model, starts the engines (engines.c) */
    bool loader_started;
    double t_created;             /* unix time, for "created" fields */

    nc_gen_waker *waker;          /* wakes streaming consumers off the engine threads (NULL: inline) */
    nc_srv_engine *engines;       /* [n_engines], one per configured device */
    int n_engines;
    nc_session_table *sessions;   /* router.c */
    _Atomic unsigned route_turn;  /* rotates ties between equally loaded engines */

    /* Valid once state == NC_SRV_READY (published with release order). */
    nc_model *model;              /* shared by every engine */
    nc_model *draft_model;        /* --draft-model's, shared by every engine, or NULL */
    nc_tokenizer *tok;            /* read-only: shared by every thread */
    int32_t max_context;          /* positions per request */
    char model_name[128];
    char device[512];             /* the engine's description, or a list of the engines' devices */
} nc_srv;

/* One request (a connection carries one), from the library's first
 * callback to its completion. */
typedef struct {
    nc_srv *srv;
    struct MHD_Connection *conn;
    int fd;
    nc_endpoint ep;
    const char *url;       /* the path (owned by the library) */
    nc_sbuf body;
    const char *origin;    /* the Origin header (owned by the library), or NULL */
    char session[256];     /* the X-Session-Id header (a conversation key for the router), or "" */
    double deadline;       /* nc_now() by which the whole request must have arrived (--read-timeout) */
    bool short_timeout;    /* the library's idle timeout was cut to the deadline */
    bool body_done;        /* the request arrived whole */
    bool responded;        /* a response was queued or written */
    bool streaming;        /* the response is a stream (SSE) */
    nc_reqlog log;         /* its log line, written at completion */
    struct nc_job *job;    /* its generation while that runs, or NULL */
} nc_conn;

/* ==== gate.c ==== */

/* Binds and listens (prints the URL, or one line saying why not) and
 * starts the accept thread; connections go to srv->daemon. */
int nc_gate_start(nc_srv *srv);
/* Stops accepting: new connections are refused at once. */
void nc_gate_quiesce(nc_srv *srv);
/* Stops the accept thread, closing the connections it still holds. */
void nc_gate_stop(nc_srv *srv);
/* After the library stopped: frees everything. */
void nc_gate_free(nc_srv *srv);
/* When the request on connection `fd` (handed to the library) sent its
 * first byte (nc_now() if unknown). */
double nc_gate_first_byte(nc_gate *g, int fd);
/* A connection handed to the library is done (its request finished, or
 * it closed): frees its slot. Once per connection. */
void nc_gate_released(nc_gate *g, const struct sockaddr *addr);

/* ==== http.c ==== */

/* Starts the daemon and the gate, or -1 after printing why. */
int nc_http_start(nc_srv *srv);
/* Stops accepting new connections (in-flight ones continue). */
void nc_http_quiesce(nc_srv *srv);
/* A whole HTTP/1.1 error response with the API's JSON body, for answers
 * written to the socket directly (the gate's, and errors in the middle of
 * a body), with Connection: close, X-Request-Id and CORS headers for
 * `origin` (the request's Origin header, or NULL). */
void nc_http_format_raw_error(nc_srv *srv, nc_sbuf *out, const nc_api_error *e, bool nanochat,
                              const char *request_id, const char *origin, int retry_after_s);
/* "127.0.0.1", "::1" (IPv4-mapped IPv6 addresses as IPv4). */
void nc_http_format_address(const struct sockaddr *sa, char *out, size_t cap);
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

typedef struct nc_job {
    nc_srv *srv;
    nc_conn *c;                  /* the request it reports to (its log line), or NULL */
    nc_gen_queue *q;
    uint64_t request_id;
    nc_gen_text text;
    int fd;
    double t_start, deadline;
    double t_first_token;        /* when the first token was taken (0: none yet) */
    double next_gone_check;      /* when to look at the client's socket next */
    int32_t n_prompt;
    nc_gq_event *events;         /* take() buffer */
    nc_token_logprob *tops;
    int32_t events_cap;
    nc_srv_engine *engine;       /* the engine it runs on */
    int32_t rows;                /* its rows, counted in engine->outstanding */
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

/* Submits the prompt for request `c` to the engine the router picks
 * (`session`: the conversation's key, or NULL). On failure fills `err`
 * (503 queue full / loading / stopping / no engine, 400 otherwise) and
 * leaves nothing to end. */
int nc_job_start(nc_job *job, nc_srv *srv, nc_conn *c, const nc_tokens *prompt,
                 const nc_gen_params *gen, bool tool_events, char *const *stop, const size_t *stop_len,
                 int n_stop, const char *session, nc_api_error *err);

/* The conversation key of a request: its X-Session-Id header, else the
 * OpenAI `user` field (NULL when neither is given). */
const char *nc_job_session(const nc_conn *c, const nc_api_request *req);

/* Waits up to `slice_s` for events and feeds them to job->text; tool
 * events go to `on_tool` in order. Returns 1 if something arrived, 0 if
 * not, -1 when the job failed (job->fail says why; it was cancelled). */
typedef void (*nc_job_tool_fn)(void *user, int32_t row, const nc_tool_event *t);
int nc_job_poll(nc_job *job, double slice_s, nc_job_tool_fn on_tool, void *user);

/* Every row has finished (by the engine or a stop string). */
bool nc_job_done(const nc_job *job);

/* Cancels what still runs, releases the queue, records metrics (and
 * reports to the request's log line, if still attached). */
void nc_job_end(nc_job *job);

/* Writes the job's tokens, time to first token and outcome into its
 * request's log line, and detaches it from the request (which is about
 * to be freed; the job may outlive it: a stream's job ends after). */
void nc_job_report(nc_job *job);

/* Fills an error for a failed job (504 timeout, 503 shutdown, 500 engine). */
void nc_job_error(const nc_job *job, nc_api_error *err);

/* ==== engines.c ==== */

/* Creates the engines of srv->opt (one per device; nothing runs yet). */
void nc_engines_init(nc_srv *srv);
/* The loader thread: loads the model and tokenizer, starts every engine's
 * thread and waits for them to load; srv->state becomes READY, or FAILED
 * (logged, naming the device) if the model or any engine fails to load. */
void *nc_engines_load(void *arg);
/* Engines serving requests now (ready and not failed). */
int nc_engines_serving(nc_srv *srv);
/* Whether every engine is idle (nothing queued or running). */
bool nc_engines_idle(nc_srv *srv);
/* After srv->engine_stop: joins the loader and the engine threads, giving
 * up on one stuck (loading) after 10 s; false then, and nothing they may
 * still use must be freed. */
bool nc_engines_join(nc_srv *srv);
/* After nc_engines_join: frees the engines, the model and the tokenizer. */
void nc_engines_free(nc_srv *srv);

/* ==== router.c ==== */

/* What the router knows of one engine when it picks. */
typedef struct {
    bool serving;         /* ready and not failed */
    int32_t load;         /* rows routed to it and not yet ended */
    int32_t capacity;     /* rows it runs at once */
    int32_t cached;       /* leading tokens of the prompt its prefix cache holds (when asked) */
} nc_route_engine;

/* The choice for a request, given the engines and `sticky`, the engine its
 * session key was last sent to (-1: none); `turn` breaks ties between
 * equally loaded engines (it rotates). Pure: see router.c for the rules.
 * -1 when no engine is serving. */
int nc_route_choose(const nc_route_engine *e, int n, int sticky, unsigned turn);

/* Room for `capacity` keys (<= 0: 65536) kept `ttl_s` seconds after their
 * last use (<= 0: 30 minutes). */
nc_session_table *nc_session_table_new(int32_t capacity, double ttl_s);
void nc_session_table_free(nc_session_table *t);
/* The engine a key was last sent to within the table's ttl, or -1. */
int nc_session_lookup(nc_session_table *t, const char *key, double now);
void nc_session_store(nc_session_table *t, const char *key, int engine, double now);

/* Picks the engine for a request of `rows` rows and counts them in its
 * load (the job gives them back when it ends); NULL when none serves. */
nc_srv_engine *nc_router_pick(nc_srv *srv, const nc_tokens *prompt, const char *session, int32_t rows);

/* ==== endpoints ==== */

enum MHD_Result nc_api_nanochat(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_openai(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_models(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);
enum MHD_Result nc_api_model(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c); /* GET /v1/models/{id} */
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
