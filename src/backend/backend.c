/*
 * backend.c: the registry of backends behind backend.h: picks an ops table
 * by device name, creates and frees backends.
 *
 * It also reads the environment switches of every backend (backend.h,
 * nc_backend_env), in one place and with one convention.
 *
 * This is the only file outside backend/cuda that may know whether CUDA
 * was compiled in (NC_WITH_CUDA, set by the Makefile when nvcc is found),
 * and tensor parallelism with it (NC_WITH_NCCL, when NCCL's nccl.h is
 * found too). Without CUDA, "cuda" reports that it is unavailable and
 * "auto" means the CPU; with it, "auto" picks CUDA when nc_cuda_probe
 * finds a usable GPU.
 */
#include "backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"
#include "cpu/cpu_backend.h"
#ifdef NC_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

bool nc_backend_cuda_available(void) {
#ifdef NC_WITH_CUDA
    char why[256];
    return nc_cuda_probe(why, sizeof why);
#else
    return false;
#endif
}

int nc_backend_cuda_count(void) {
#ifdef NC_WITH_CUDA
    return nc_cuda_device_count();
#else
    return 0;
#endif
}

/* ==== device names ==== */

int nc_device_name_parse(const char *name, nc_device_name *out) {
    memset(out, 0, sizeof *out);
    if (!name || !*name) return nc_fail("empty device name (expected cpu, cuda, cuda:N or auto)");
    if (!strcmp(name, "cpu") || !strcmp(name, "auto")) {
        snprintf(out->kind, sizeof out->kind, "%s", name);
        out->n_gpus = !strcmp(name, "auto");
        return 0;
    }
    if (strncmp(name, "cuda", 4) || (name[4] && name[4] != ':'))
        return nc_fail("unknown device '%s' (expected cpu, cuda, cuda:N, cuda:N+M... or auto)", name);
    snprintf(out->kind, sizeof out->kind, "cuda");
    out->n_gpus = 1;
    if (!name[4]) return 0;
    const char *p = name + 5;
    out->n_gpus = 0;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (*p < '0' || *p > '9' || v > 1023)
            return nc_fail("device '%s': expected a GPU number after '%s'", name, p == name + 5 ? "cuda:" : "+");
        if (out->n_gpus == NC_BACKEND_MAX_GPUS)
            return nc_fail("device '%s': at most %d GPUs per engine", name, NC_BACKEND_MAX_GPUS);
        for (int i = 0; i < out->n_gpus; i++)
            if (out->gpus[i] == v) return nc_fail("device '%s' names GPU %ld twice", name, v);
        out->gpus[out->n_gpus++] = (int32_t)v;
        if (!*end) return 0;
        if (*end != '+') return nc_fail("device '%s': unexpected '%s' (GPUs are joined by '+')", name, end);
        p = end + 1;
    }
}

/* ==== environment switches ==== */

/* An on/off switch: 0 or 1; unset or empty leaves *on as it is. */
static int env_flag(const char *name, bool *on) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    if (strcmp(v, "0") && strcmp(v, "1")) return nc_fail("%s=%s: expected 0 or 1", name, v);
    *on = v[0] == '1';
    return 0;
}

/* A whole number in [lo, hi] that is a multiple of `step`; unset or empty
 * leaves *out as it is. */
static int env_int(const char *name, int lo, int hi, int step, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < lo || n > hi || n % step)
        return step > 1 ? nc_fail("%s=%s: expected a multiple of %d from %d to %d", name, v, step, lo, hi)
                        : nc_fail("%s=%s: expected a whole number from %d to %d", name, v, lo, hi);
    *out = (int)n;
    return 0;
}

/* One of the words in the NULL-terminated `words` (stored as that static
 * string); unset or empty leaves *out as it is. */
static int env_word(const char *name, const char *const *words, const char *expected, const char **out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    for (int i = 0; words[i]; i++)
        if (!strcmp(v, words[i])) {
            *out = words[i];
            return 0;
        }
    return nc_fail("%s=%s: expected %s", name, v, expected);
}

int nc_backend_env_read(nc_backend_env *env) {
    static const char *const fa_steps[] = {"1", "2", NULL};
    static const char *const placements[] = {"auto", "copy", "map", NULL};
    static const char *const gemv_q8[] = {"old", "new", "tc", NULL};
    static const char *const q8_rows[] = {"1", "2", "4", NULL};
    static const char *const isas[] = {"auto", "avx512vnni", "avx512", "avxvnni", "avx2", "scalar", "avx512bf16", NULL};
    static const char *const allreduces[] = {"auto", "nccl", NULL};
    nc_backend_env e = {.cuda_graphs = true, .cuda_pdl = true, .cuda_skinny = true, .cuda_verify_rows = true,
                        .cuda_qkv_rope = true,
                        .cuda_verify_pairs = "auto", .cuda_gemv_q8 = "old",
                        .tp_allreduce = "auto",
                        .cpu_weights = "auto", .cpu_kernels = "auto"};
    static const char *const auto_on_off[] = {"auto", "on", "off", NULL};
    const char *fa = NULL, *rows = NULL;
    if (env_flag("NC_CUDA_GRAPHS", &e.cuda_graphs) || env_flag("NC_CUDA_PDL", &e.cuda_pdl) ||
        env_flag("NC_CUDA_PROFILE", &e.cuda_profile) || env_flag("NC_CUDA_SKINNY", &e.cuda_skinny) ||
        env_flag("NC_CUDA_PERSIST", &e.cuda_persist) || env_flag("NC_CUDA_VERIFY_ROWS", &e.cuda_verify_rows) ||
        env_flag("NC_CUDA_ATTN_PREFETCH", &e.cuda_attn_prefetch) || env_flag("NC_CUDA_QKV_ROPE", &e.cuda_qkv_rope) || env_flag("NC_CUDA_FP8_ACT", &e.cuda_fp8_act) ||
        env_int("NC_CUDA_PERSIST_BUFS", 2, 16, 1, &e.cuda_persist_bufs) ||
        env_word("NC_CUDA_FA", fa_steps, "1 (64-key steps) or 2 (128-key steps)", &fa) ||
        env_word("NC_TP_ALLREDUCE", allreduces, "auto or nccl", &e.tp_allreduce) ||
        env_word("NC_CUDA_GEMV_Q8", gemv_q8, "old, new or tc", &e.cuda_gemv_q8) ||
        env_int("NC_CUDA_GEMV_ROWS", 1, 8, 1, &e.cuda_gemv_rows) ||
        env_word("NC_CUDA_GEMV_Q8_ROWS", q8_rows, "1, 2 or 4", &rows) ||
        env_word("NC_CUDA_VERIFY_PAIRS", auto_on_off, "auto, on or off", &e.cuda_verify_pairs) ||
        env_word("NC_CPU_WEIGHTS", placements, "auto, copy or map", &e.cpu_weights) ||
        env_word("NC_CPU_KERNELS", isas, "auto, avx512vnni, avx512, avxvnni, avx2, scalar or avx512bf16",
                 &e.cpu_kernels))
        return -1;
    e.cuda_fa = fa ? fa[0] - '0' : 0;
    e.cuda_gemv_q8_rows = rows ? rows[0] - '0' : 0;
    *env = e;
    return 0;
}

/* ==== creation ==== */

/* The ops table for device `d` ("auto" resolved in place), or NULL +
 * nc_error() naming the device. */
static const nc_backend_ops *backend_ops_for(nc_device_name *d, const char *name) {
    if (!strcmp(d->kind, "cpu")) return &nc_cpu_backend_ops;
    if (!strcmp(d->kind, "auto")) {
        if (!nc_backend_cuda_available()) {
            d->n_gpus = 0;
            return &nc_cpu_backend_ops;
        }
        snprintf(d->kind, sizeof d->kind, "cuda");
    }
#ifdef NC_WITH_CUDA
    char why[256];
    for (int i = 0; i < d->n_gpus; i++)
        if (!nc_cuda_probe_device(d->gpus[i], why, sizeof why)) {
            nc_fail("%s: CUDA device %d not usable: %s; use --device cpu", name, d->gpus[i], why);
            return NULL;
        }
    if (d->n_gpus == 1) return &nc_cuda_backend_ops;
#ifdef NC_WITH_NCCL
    return &nc_cuda_tp_backend_ops;
#else
    nc_fail("%s: tensor parallel is not compiled into this build: it needs NCCL's nccl.h at build time "
            "(install NCCL beside the CUDA toolkit and rebuild)", name);
    return NULL;
#endif
#else
    nc_fail("%s: CUDA backend not available in this build; use --device cpu", name);
    return NULL;
#endif
}

nc_backend *nc_backend_create(const char *device, const nc_model *model, const nc_backend_params *p) {
    if (!model) {
        nc_fail("nc_backend_create: no model");
        return NULL;
    }
    nc_backend_env env;
    nc_device_name d;
    if (nc_backend_env_read(&env) || nc_device_name_parse(device ? device : "auto", &d)) return NULL;
    const nc_backend_ops *ops = backend_ops_for(&d, device ? device : "auto");
    if (!ops) return NULL;
    nc_backend_params defaults = {0};
    nc_backend *b = nc_xcalloc(1, sizeof *b);
    b->ops = ops;
    b->model = model;
    b->env = env;
    memcpy(b->gpus, d.gpus, sizeof b->gpus);
    b->n_gpus = d.n_gpus;
    b->deterministic = p && p->deterministic;
    if (ops->init(b, p ? p : &defaults)) {
        free(b);
        return NULL;
    }
    return b;
}

void nc_backend_free(nc_backend *b) {
    if (!b) return;
    b->ops->free(b);
    free(b);
}

const char *nc_backend_describe(nc_backend *b) {
    const char *d = b->ops->describe ? b->ops->describe(b) : NULL;
    return d ? d : b->ops->name;
}
