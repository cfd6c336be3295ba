/*
 * engines.c: the server's engines (docs/multi-device.md): one per device
 * of --devices, each a backend (and a draft model's, with --draft-model),
 * a scheduler and the thread that steps it, all sharing one model, one
 * tokenizer and one draft model in host memory. Each speculates as a
 * single engine does (docs/speculative.md), with its own scheduler's
 * drafts.
 *
 * Loading: the loader thread reads the model and tokenizer once, then
 * starts every engine's thread, which makes its backend (in parallel: a
 * GPU's upload does not wait for another's) and its scheduler, and
 * prepares its decode steps. The server is ready when every engine is; a
 * model or an engine that fails to load fails the start, naming the device.
 *
 * Serving: an engine thread waits for work and steps its scheduler. A step
 * that fails ends the rows of its batch with an error. While another
 * engine serves, that is enough to take the device for broken (a GPU that
 * failed once rarely works again, and the router has somewhere else to
 * send requests); the last engine serving gives up only after
 * NC_ENGINE_MAX_FAILURES failed steps in a row, so a lone engine rides out
 * a stray failure as a single-device server always has. An engine that
 * gives up stops (never calls its backend again), fails every request it
 * holds or is still given, and the router passes it by. When none is left
 * the server exits, for its supervisor to restart it.
 *
 * NC_DEBUG_FAIL_ENGINE=K:N, a debug switch for tests, makes engine K's
 * forward passes fail from its Nth on, as a device that died would.
 */
#include "srv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../model/prefetch.h"
#include "../util/common.h"
#include "../util/threadpool.h"

/* Failed steps in a row after which the last engine serving takes its
 * device for broken (with others serving: one). */
#define NC_ENGINE_MAX_FAILURES 3

/* ==== --devices ==== */

static int refuse(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* One entry of the list: a CPU engine (*threads: its count, 0 when not
 * given) or GPUs (gpus[0..*n_gpus)). */
static int parse_entry(const char *entry, bool *cpu, int *threads, nc_device_name *d, char *why, size_t cap) {
    *cpu = !strncmp(entry, "cpu", 3) && (!entry[3] || entry[3] == ':');
    *threads = 0;
    if (*cpu) {
        if (!entry[3]) return 0;
        char *end;
        long t = strtol(entry + 4, &end, 10);
        if (entry[4] < '1' || entry[4] > '9' || *end || t > 1024)
            return refuse(why, cap, "'%s': a CPU engine is cpu or cpu:THREADS (1 to 1024)", entry);
        *threads = (int)t;
        return 0;
    }
    if (nc_device_name_parse(entry, d) || strcmp(d->kind, "cuda"))
        return refuse(why, cap, "'%s' is not a device: expected cuda:N or cpu[:THREADS]", entry);
    return 0;
}

int nc_server_parse_devices(const char *list, int tensor_parallel, int threads, int gpu_count,
                            nc_server_device *out, int *n, char *why, size_t cap) {
    *n = 0;
    int tp = tensor_parallel > 1 ? tensor_parallel : 1;
    char buf[4096];
    if (!strcmp(list, "all")) {
        if (gpu_count < 1) return refuse(why, cap, "'all' means every GPU, and this process sees none");
        size_t len = 0;
        for (int g = 0; g < gpu_count && len < sizeof buf; g++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%scuda:%d", g ? "," : "", g);
    } else if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) {
        return refuse(why, cap, "the list is too long");
    }
    int32_t gpus[NC_SERVER_MAX_ENGINES * NC_BACKEND_MAX_GPUS];
    int n_gpus = 0, n_cpu = 0, n_cpu_plain = 0, groups = 0;
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        bool cpu;
        int t;
        nc_device_name d;
        if (parse_entry(e, &cpu, &t, &d, why, cap)) return -1;
        if (*n == NC_SERVER_MAX_ENGINES || (!cpu && n_gpus + d.n_gpus > (int)NC_ARRAY_LEN(gpus)))
            return refuse(why, cap, "more than %d engines", NC_SERVER_MAX_ENGINES);
        if (!cpu && d.n_gpus > 1 && tp > 1)
            return refuse(why, cap, "'%s' names its GPUs already; --tensor-parallel groups single ones", e);
        nc_server_device *o = &out[(*n)++];
        memset(o, 0, sizeof *o);
        if (cpu) {
            snprintf(o->name, sizeof o->name, "cpu");
            o->threads = t;
            n_cpu++;
            n_cpu_plain += t == 0;
            continue;
        }
        snprintf(o->name, sizeof o->name, "%s", e);
        for (int k = 0; k < d.n_gpus; k++) {
            for (int j = 0; j < n_gpus; j++)
                if (gpus[j] == d.gpus[k]) return refuse(why, cap, "GPU %d is listed twice", d.gpus[k]);
            gpus[n_gpus++] = d.gpus[k];
        }
        groups++;
    }
    if (*n == 0) return refuse(why, cap, "no devices given");
    if (n_cpu && groups)
        return refuse(why, cap, "CPU and GPU engines mixed: the router balances outstanding work, which a CPU "
                      "engine would do at a fraction of a GPU's speed");
    if (n_cpu) {
        if (tp > 1) return refuse(why, cap, "--tensor-parallel needs GPUs");
        int share = NC_MAX(1, (threads > 0 ? threads : nc_cpu_count()) / NC_MAX(1, n_cpu_plain));
        for (int i = 0; i < *n; i++)
            if (!out[i].threads) out[i].threads = share;
        return 0;
    }
    if (tp == 1) return 0;
    if (n_gpus % tp) return refuse(why, cap, "%d GPUs do not split into groups of --tensor-parallel %d", n_gpus, tp);
    *n = n_gpus / tp;
    for (int i = 0; i < *n; i++) {
        int len = snprintf(out[i].name, sizeof out[i].name, "cuda:%d", gpus[i * tp]);
        for (int k = 1; k < tp; k++) len += snprintf(out[i].name + len, sizeof out[i].name - (size_t)len, "+%d",
                                                      gpus[i * tp + k]);
        out[i].threads = 0;
    }
    return 0;
}

/* ==== NC_DEBUG_FAIL_ENGINE ==== */

/* A backend's ops with forward and forward_sample failing from the Nth
 * call on. */
typedef struct {
    nc_backend_ops ops;            /* first: b->ops points here */
    const nc_backend_ops *inner;
    int left;                      /* calls before they fail */
} failing_ops;

static int simulated_failure(nc_backend *b) {
    failing_ops *f = (failing_ops *)b->ops;
    return f->left-- <= 0 ? nc_fail("NC_DEBUG_FAIL_ENGINE: the device stopped answering (a simulated failure)") : 0;
}

static int failing_forward(nc_backend *b, const nc_batch *batch, float *logits) {
    return simulated_failure(b) ? -1 : ((failing_ops *)b->ops)->inner->forward(b, batch, logits);
}

static int failing_forward_sample(nc_backend *b, const nc_batch *batch, nc_device_sampling *rows, int32_t *out) {
    return simulated_failure(b) ? -1 : ((failing_ops *)b->ops)->inner->forward_sample(b, batch, rows, out);
}

/* Engine k's countdown from NC_DEBUG_FAIL_ENGINE=K:N, or -1. */
static int debug_failure_for(int k) {
    const char *v = getenv("NC_DEBUG_FAIL_ENGINE");
    int engine, after;
    char extra;
    if (!v || sscanf(v, "%d:%d%c", &engine, &after, &extra) != 2 || engine != k || after < 1) return -1;
    return after - 1;
}

static void wrap_failing(nc_srv_engine *e, int left) {
    nc_backend *b = e->backend;
    failing_ops *f = nc_xcalloc(1, sizeof *f);
    e->debug_ops = f;
    f->ops = *b->ops;
    f->inner = b->ops;
    f->left = left;
    f->ops.forward = failing_forward;
    if (f->ops.forward_sample) f->ops.forward_sample = failing_forward_sample;
    b->ops = &f->ops;
}

/* ==== one engine ==== */

static void engine_failed(nc_srv_engine *e, const char *fmt, const char *detail) {
    snprintf(e->error, sizeof e->error, fmt, e->index, e->dev.name, detail);
    atomic_store_explicit(&e->state, NC_ENGINE_FAILED, memory_order_release);
    nc_log(NC_LOG_ERROR, "%s", e->error);
}

/* Makes the engine's backend and scheduler and prepares its decode steps. */
static int engine_open(nc_srv_engine *e) {
    nc_srv *srv = e->srv;
    nc_bundle_options o = srv->opt.model;
    o.device = e->dev.name;
    if (e->dev.threads) o.threads = e->dev.threads;
    o.progress = NULL; /* the loader read the weights in already */
    nc_backend_params bp;
    nc_scheduler_params sp;
    nc_bundle_sizes(&o, srv->max_context, &bp, &sp);
    sp.spec = o.spec;
    if (srv->draft_model) {
        /* Before the model's backend, as nc_bundle_open does. */
        if (!(e->draft_backend = nc_bundle_draft_backend(&o, srv->draft_model, srv->max_context))) return -1;
        sp.spec.draft = e->draft_backend;
    }
    if (!(e->backend = nc_bundle_backend(&o, srv->model, &bp))) return -1;
    int left = debug_failure_for(e->index);
    if (left >= 0) wrap_failing(e, left);
    if (!(e->sched = nc_scheduler_create(e->backend, srv->tok, &sp))) return -1;
    /* What the scheduler runs at once (it takes the same minimum). */
    nc_backend *b = e->backend;
    e->capacity = NC_MIN(sp.max_running ? sp.max_running : b->max_seqs, NC_MIN(b->max_seqs, b->max_batch_tokens));
    /* No sequence holds KV blocks yet: the one moment prepare_decode may run. */
    if (b->ops->prepare_decode) {
        double t = nc_now();
        if (b->ops->prepare_decode(b, b->max_seqs)) return nc_fail_context("preparing decode steps");
        nc_log(NC_LOG_INFO, "engine %d (%s): decode steps of 1..%d rows prepared in %.1f s", e->index, e->dev.name,
               b->max_seqs, nc_now() - t);
    }
    snprintf(e->description, sizeof e->description, "%s", nc_backend_describe(b));
    return 0;
}

static void *engine_main(void *arg) {
    nc_srv_engine *e = arg;
    nc_srv *srv = e->srv;
    if (engine_open(e)) {
        engine_failed(e, "engine %d (%s): %s", nc_error());
        return NULL;
    }
    atomic_store_explicit(&e->state, NC_ENGINE_READY, memory_order_release);
    int failures = 0;
    double last_report = 0.0;
    while (!atomic_load(&srv->engine_stop)) {
        if (!nc_scheduler_wait_for_work(e->sched, 0.1)) continue;
        if (atomic_load(&e->state) == NC_ENGINE_FAILED) {
            nc_scheduler_fail_all(e->sched, e->error);
        } else if (nc_scheduler_step(e->sched) < 0) {
            /* The failing rows got NC_FINISH_ERROR events; say it at most once a second. */
            int limit = nc_engines_serving(srv) > 1 ? 1 : NC_ENGINE_MAX_FAILURES;
            if (++failures >= limit) {
                engine_failed(e, "engine %d (%s) stopped, its device taken for broken: %s", nc_error());
                nc_scheduler_fail_all(e->sched, e->error);
            } else if (nc_now() - last_report >= 1.0) {
                nc_log(NC_LOG_WARN, "engine %d (%s): step failed: %s", e->index, e->dev.name, nc_error());
                last_report = nc_now();
            }
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        } else {
            failures = 0;
        }
        nc_gen_waker_kick(srv->waker); /* the consumers of this step's tokens */
        nc_scheduler_stats st;
        nc_scheduler_get_stats(e->sched, &st);
        nc_metrics_step(&e->metrics, st.last_batch_rows);
    }
    return NULL;
}

/* ==== the set ==== */

void nc_engines_init(nc_srv *srv) {
    const nc_server_options *o = &srv->opt;
    srv->n_engines = o->n_devices ? o->n_devices : 1;
    srv->engines = nc_xcalloc((size_t)srv->n_engines, sizeof *srv->engines);
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        e->srv = srv;
        e->index = i;
        if (o->n_devices) {
            e->dev = o->devices[i];
        } else {
            snprintf(e->dev.name, sizeof e->dev.name, "%s", o->model.device ? o->model.device : "auto");
            e->dev.threads = o->model.threads;
        }
        nc_metrics_init(&e->metrics);
    }
}

static void set_model_name(nc_srv *srv) {
    if (srv->opt.model_name && srv->opt.model_name[0]) {
        snprintf(srv->model_name, sizeof srv->model_name, "%s", srv->opt.model_name);
        return;
    }
    /* The model's directory name ("models/picochat/model_000100.pt" ->
     * "picochat"), or a random model's description. */
    const char *src = srv->model->source ? srv->model->source : "nanochat";
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", src);
    for (int pass = 0; pass < 2; pass++) {
        size_t n = strlen(tmp);
        while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
        char *slash = strrchr(tmp, '/');
        const char *base = slash ? slash + 1 : tmp;
        bool is_file = strstr(base, ".pt") || strstr(base, ".safetensors") || strstr(base, ".json");
        if (pass == 0 && is_file && slash) { *slash = 0; continue; }
        snprintf(srv->model_name, sizeof srv->model_name, "%.127s", base);
        break;
    }
}

/* The model, its tokenizer, the context limit and the draft model of
 * --draft-model, shared by the engines. */
static int load_model(nc_srv *srv) {
    const nc_bundle_options *o = &srv->opt.model;
    if (o->max_context < 0) return nc_fail("max_context must be >= 0 (0: the model's sequence_len), got %d",
                                           o->max_context);
    if (nc_bundle_load(o, &srv->model, &srv->tok, true, NULL)) return -1;
    int32_t seq = srv->model->cfg.sequence_len;
    if (o->max_context > seq && !o->long_context)
        return nc_fail("max_context %d exceeds the model's context of %d tokens (sequence_len)", o->max_context, seq);
    srv->max_context = o->max_context ? o->max_context : seq;
    if (o->progress) nc_model_prefetch(srv->model, o->progress, "reading weights");
    if (o->draft_path && !o->spec.off) {
        if (nc_bundle_load_draft(o, srv->model, srv->tok, &srv->draft_model)) return -1;
        if (o->progress) nc_model_prefetch(srv->draft_model, o->progress, "reading draft weights");
    }
    return 0;
}

void *nc_engines_load(void *arg) {
    nc_srv *srv = arg;
    double t0 = nc_now();
    if (load_model(srv)) {
        nc_log(NC_LOG_ERROR, "%s", nc_error());
        atomic_store(&srv->state, NC_SRV_FAILED);
        return NULL;
    }
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        if (pthread_create(&e->thread, NULL, engine_main, e)) {
            engine_failed(e, "engine %d (%s): %s", "cannot start its thread");
            continue;
        }
        e->started = true;
    }
    int failed = 0;
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        while (atomic_load_explicit(&e->state, memory_order_acquire) == NC_ENGINE_LOADING &&
               !atomic_load(&srv->engine_stop)) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        failed += atomic_load(&e->state) != NC_ENGINE_READY;
    }
    if (failed) {
        atomic_store(&srv->state, NC_SRV_FAILED);
        return NULL;
    }
    const nc_model_config *cfg = &srv->model->cfg;
    set_model_name(srv);
    if (srv->n_engines == 1) {
        snprintf(srv->device, sizeof srv->device, "%s", srv->engines[0].description);
    } else {
        int len = snprintf(srv->device, sizeof srv->device, "%d engines:", srv->n_engines);
        for (int i = 0; i < srv->n_engines && len > 0 && (size_t)len < sizeof srv->device; i++)
            len += snprintf(srv->device + len, sizeof srv->device - (size_t)len, " %s", srv->engines[i].dev.name);
    }
    atomic_store_explicit(&srv->state, NC_SRV_READY, memory_order_release);
    nc_log(NC_LOG_INFO, "ready in %.1f s: %s (%s, %d layers), context %d, %s", nc_now() - t0, srv->model_name,
           nc_generation_name(cfg->generation), cfg->n_layer, srv->max_context, srv->device);
    if (srv->n_engines > 1)
        for (int i = 0; i < srv->n_engines; i++)
            nc_log(NC_LOG_INFO, "engine %d (%s): %s", i, srv->engines[i].dev.name, srv->engines[i].description);
    return NULL;
}

int nc_engines_serving(nc_srv *srv) {
    int n = 0;
    for (int i = 0; i < srv->n_engines; i++)
        n += atomic_load_explicit(&srv->engines[i].state, memory_order_acquire) == NC_ENGINE_READY;
    return n;
}

bool nc_engines_idle(nc_srv *srv) {
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        if (atomic_load_explicit(&e->state, memory_order_acquire) == NC_ENGINE_LOADING || !e->sched) continue;
        nc_scheduler_stats st;
        nc_scheduler_get_stats(e->sched, &st);
        if (st.queued || st.running_requests) return false;
    }
    return true;
}

/* Joins a thread, giving up after `seconds` (one stuck loading a model
 * or a device); false then. */
static bool join_within(pthread_t t, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)seconds;
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

void nc_engines_free(nc_srv *srv) {
    for (int i = 0; i < srv->n_engines; i++) {
        nc_srv_engine *e = &srv->engines[i];
        nc_scheduler_free(e->sched);
        nc_backend_free(e->backend);
        nc_backend_free(e->draft_backend);
        free(e->debug_ops);
        nc_metrics_free(&e->metrics);
    }
    free(srv->engines);
    srv->engines = NULL;
    srv->n_engines = 0;
    nc_tokenizer_free(srv->tok);
    nc_model_free(srv->model);
    nc_model_free(srv->draft_model);
    srv->tok = NULL;
    srv->model = NULL;
    srv->draft_model = NULL;
}

bool nc_engines_join(nc_srv *srv) {
    if (srv->loader_started && !join_within(srv->loader, 10)) return false;
    bool all = true;
    for (int i = 0; i < srv->n_engines; i++)
        if (srv->engines[i].started && !join_within(srv->engines[i].thread, 10)) all = false;
    return all;
}
