/*
 * server.c: nc_server_run: startup, signal handling and an orderly
 * shutdown (see server.h).
 *
 * Order of events: bind and listen (so /health answers at once), start the
 * engine thread (which opens the engine bundle, then steps the scheduler), wait for
 * SIGINT/SIGTERM. On a signal: refuse new generation requests, stop
 * accepting connections, give in-flight requests NC_SHUTDOWN_GRACE_S to
 * finish (a second signal skips the wait), end the rest, join every HTTP
 * thread, let the engine deliver the cancellations, stop it, free.
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
        fprintf(stderr, "nanochat serve: waiting up to %.0f s for %d request(s) (signal again to stop now)\n",
                NC_SHUTDOWN_GRACE_S, atomic_load(&srv->active_jobs));
    while (atomic_load(&srv->active_jobs) > 0 && nc_now() < until)
        if (wait_signal(set, 0.05)) break;
    /* End the rest: each stream sends its closing events (error, then the
     * protocol's end) within a poll slice; give them a moment to be sent
     * before the daemon closes every socket. */
    atomic_store(&srv->abort_jobs, true);
    until = nc_now() + 2.0;
    while (atomic_load(&srv->active_jobs) > 0 && nc_now() < until) sleep_s(0.01);
    nc_http_stop(srv); /* joins every connection thread: all jobs have ended */
    if (nc_srv_ready(srv)) {
        /* Let the engine deliver the cancellations before it stops. */
        double t = nc_now() + 2.0;
        while (nc_now() < t) {
            nc_scheduler_stats st;
            nc_scheduler_get_stats(srv->b.sched, &st);
            if (st.queued == 0 && st.running_requests == 0) break;
            sleep_s(0.01);
        }
    }
    atomic_store(&srv->engine_stop, true);
}

/* Joins the engine thread; false if it is stuck loading (then nothing it
 * may still use is freed). */
static bool join_engine(nc_srv *srv) {
    if (!srv->engine_started) return true;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    if (pthread_timedjoin_np(srv->engine, NULL, &ts)) {
        fprintf(stderr, "nanochat serve: the engine thread did not stop (still loading?); exiting anyway\n");
        return false;
    }
    return true;
}

static void free_server(nc_srv *srv) {
    nc_bundle_close(&srv->b);
    nc_gen_waker_free(srv->waker); /* after the scheduler: freeing it may still finish requests */
    nc_metrics_free(&srv->metrics);
    free(srv);
}

int nc_server_run(const nc_server_options *o) {
    nc_srv *srv = nc_xcalloc(1, sizeof *srv);
    srv->opt = *o;
    if (!srv->opt.host || !srv->opt.host[0]) srv->opt.host = "127.0.0.1";
    if (srv->opt.max_connections <= 0) srv->opt.max_connections = 512;
    if (srv->opt.max_body_bytes == 0) srv->opt.max_body_bytes = 1u << 20;
    if (srv->opt.request_timeout_s <= 0) srv->opt.request_timeout_s = 600.0;
    if (srv->opt.idle_timeout_s <= 0) srv->opt.idle_timeout_s = 30;
    if (srv->opt.max_lag_tokens <= 0) srv->opt.max_lag_tokens = NC_GQ_DEFAULT_MAX_LAG;
    nc_metrics_init(&srv->metrics);
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
    if (pthread_create(&srv->engine, NULL, nc_engine_main, srv)) {
        fprintf(stderr, "nanochat serve: cannot start the engine thread\n");
        atomic_store(&srv->state, NC_SRV_FAILED);
    } else {
        srv->engine_started = true;
    }
    int rc = 0;
    for (;;) {
        int sig = wait_signal(&set, 0.2);
        if (sig) {
            fprintf(stderr, "nanochat serve: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
        if (atomic_load(&srv->state) == NC_SRV_FAILED) {
            fprintf(stderr, "nanochat serve: the model could not be loaded; exiting\n");
            rc = -1;
            break;
        }
    }
    shutdown_server(srv, &set, rc == 0);
    bool joined = join_engine(srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (joined) free_server(srv);
    if (rc == 0) fprintf(stderr, "nanochat serve: stopped\n");
    return joined ? rc : -1;
}
