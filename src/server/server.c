/*
 * server.c: nc_server_run: startup, signal handling and an orderly
 * shutdown (see server.h).
 *
 * Order of events: bind and listen (so /health answers at once), start the
 * loader thread (which loads the model and starts one engine thread per
 * device, each stepping its scheduler: engines.c), wait for SIGINT/SIGTERM.
 * On a signal: refuse new generation requests, stop accepting
 * connections, give in-flight requests NC_SHUTDOWN_GRACE_S to finish (a
 * second signal skips the wait), end the rest, join every HTTP thread, let
 * the engines deliver the cancellations, stop them, free. The server also
 * stops, with an error, when the model or an engine cannot be loaded, or
 * when every engine has stopped after its device failed.
 * Signals are blocked in every thread and taken synchronously with
 * sigtimedwait(), so no work happens in a signal handler.
 */
#include "srv.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../util/common.h"

/* Seconds in-flight requests get to finish after SIGINT/SIGTERM. */
#define NC_SHUTDOWN_GRACE_S 5.0

void nc_server_options_init(nc_server_options *o) {
    memset(o, 0, sizeof *o);
    nc_bundle_options_init(&o->model);
    o->model.long_context = true; /* --max-context may pass sequence_len, as nanochat's engine allows */
    o->model.max_queue = 256;
    o->host = "127.0.0.1";
    o->port = 8000;
    o->max_connections = 512;
    o->max_body_bytes = 1u << 20;
    o->read_timeout_s = 30.0;
    o->cors_origins = "*";
    o->log_level = NC_LOG_INFO;
    o->request_timeout_s = 600.0;
    o->idle_timeout_s = 30;
    o->max_lag_tokens = NC_GQ_DEFAULT_MAX_LAG;
}

/* Waits up to `seconds` for SIGINT/SIGTERM; returns the signal or 0. */
static int wait_signal(const sigset_t *set, double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    int sig = sigtimedwait(set, NULL, &ts);
    return sig > 0 ? sig : 0;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void shutdown_server(nc_srv *srv, const sigset_t *set, bool grace) {
    atomic_store(&srv->stopping, true);
    nc_http_quiesce(srv);
    double until = nc_now() + (grace ? NC_SHUTDOWN_GRACE_S : 0.0);
    if (grace && atomic_load(&srv->active_jobs) > 0)
        nc_log(NC_LOG_INFO, "waiting up to %.0f s for %d request(s) (signal again to stop now)", NC_SHUTDOWN_GRACE_S,
               atomic_load(&srv->active_jobs));
    while (atomic_load(&srv->active_jobs) > 0 && nc_now() < until)
        if (wait_signal(set, 0.05)) break;
    /* End the rest: each stream sends its closing events (error, then the
     * protocol's end) within a poll slice; give them a moment to be sent
     * before the daemon closes every socket. */
    atomic_store(&srv->abort_jobs, true);
    until = nc_now() + 2.0;
    while (atomic_load(&srv->active_jobs) > 0 && nc_now() < until) sleep_s(0.01);
    nc_http_stop(srv); /* joins every connection thread: all jobs have ended */
    /* Let the engines deliver the cancellations before they stop. */
    double t = nc_now() + 2.0;
    while (nc_now() < t && !nc_engines_idle(srv)) sleep_s(0.01);
    atomic_store(&srv->engine_stop, true);
}

static void free_server(nc_srv *srv) {
    nc_engines_free(srv);
    nc_session_table_free(srv->sessions);
    nc_origin_list_free(&srv->cors);
    nc_gen_waker_free(srv->waker); /* after the schedulers: freeing them may still finish requests */
    nc_metrics_free(&srv->metrics);
    free(srv);
}

/* Why the server should stop by itself, or NULL. */
static const char *failure(nc_srv *srv) {
    int state = atomic_load(&srv->state);
    if (state == NC_SRV_FAILED) return "the model or an engine could not be loaded; exiting";
    if (state == NC_SRV_READY && nc_engines_serving(srv) == 0) return "every engine has stopped; exiting";
    return NULL;
}

int nc_server_run(const nc_server_options *o) {
    nc_srv *srv = nc_xcalloc(1, sizeof *srv);
    srv->opt = *o;
    if (!srv->opt.host || !srv->opt.host[0]) srv->opt.host = "127.0.0.1";
    if (srv->opt.max_connections <= 0) srv->opt.max_connections = 512;
    if (srv->opt.max_connections_per_ip <= 0) srv->opt.max_connections_per_ip = NC_MAX(1, srv->opt.max_connections / 2);
    if (srv->opt.read_timeout_s <= 0) srv->opt.read_timeout_s = 30.0;
    if (srv->opt.max_body_bytes == 0) srv->opt.max_body_bytes = 1u << 20;
    if (srv->opt.request_timeout_s <= 0) srv->opt.request_timeout_s = 600.0;
    if (srv->opt.idle_timeout_s <= 0) srv->opt.idle_timeout_s = 30;
    if (srv->opt.max_lag_tokens <= 0) srv->opt.max_lag_tokens = NC_GQ_DEFAULT_MAX_LAG;
    nc_log_setup(srv->opt.log_format, srv->opt.log_level);
    char why[256];
    if (nc_origin_list_parse(srv->opt.cors_origins ? srv->opt.cors_origins : "*", &srv->cors, why, sizeof why)) {
        nc_log(NC_LOG_ERROR, "--cors-origins: %s", why);
        free(srv);
        return -1;
    }
    nc_metrics_init(&srv->metrics);
    nc_engines_init(srv);
    srv->sessions = nc_session_table_new(0, 0);
    srv->waker = nc_gen_waker_create();
    srv->t_created = (double)time(NULL);
    atomic_store(&srv->seed_state, (uint64_t)time(NULL) * 0x2545F4914F6CDD1Dull ^ (uint64_t)getpid());

    /* Block the shutdown signals here, before any thread exists, so every
     * thread inherits the mask and only sigtimedwait() below sees them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN);

    if (nc_http_start(srv)) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        free_server(srv);
        return -1;
    }
    if (pthread_create(&srv->loader, NULL, nc_engines_load, srv)) {
        nc_log(NC_LOG_ERROR, "cannot start the loader thread");
        atomic_store(&srv->state, NC_SRV_FAILED);
    } else {
        srv->loader_started = true;
    }
    int rc = 0;
    for (;;) {
        int sig = wait_signal(&set, 0.2);
        if (sig) {
            nc_log(NC_LOG_INFO, "%s received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
        const char *why = failure(srv);
        if (why) {
            nc_log(NC_LOG_ERROR, "%s", why);
            rc = -1;
            break;
        }
    }
    shutdown_server(srv, &set, rc == 0);
    bool joined = nc_engines_join(srv);
    if (!joined) nc_log(NC_LOG_WARN, "an engine did not stop (still loading?); exiting anyway");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (joined) free_server(srv);
    if (rc == 0) nc_log(NC_LOG_INFO, "stopped");
    return joined ? rc : -1;
}
