/*
 * backend.c: the registry of backends behind backend.h: picks an ops table
 * by device name, creates and frees backends.
 *
 * This is the only file outside backend/cuda that may know whether CUDA
 * was compiled in (NC_WITH_CUDA, set by the Makefile when nvcc is found).
 * Without it, "cuda" reports that it is unavailable and "auto" means the
 * CPU; with it, "auto" picks CUDA when nc_cuda_probe finds a usable GPU.
 */
#include "backend.h"

#include <stdio.h>
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

/* The ops table for `device`, or NULL + nc_error(). */
static const nc_backend_ops *backend_ops_for(const char *device) {
    if (!strcmp(device, "cpu")) return &nc_cpu_backend_ops;
    if (!strcmp(device, "cuda")) {
#ifdef NC_WITH_CUDA
        char why[256];
        if (nc_cuda_probe(why, sizeof why)) return &nc_cuda_backend_ops;
        nc_fail("CUDA device not usable: %s; use --device cpu", why);
#else
        nc_fail("CUDA backend not available in this build; use --device cpu");
#endif
        return NULL;
    }
    if (!strcmp(device, "auto")) return nc_backend_cuda_available() ? backend_ops_for("cuda") : &nc_cpu_backend_ops;
    nc_fail("unknown device '%s' (expected cpu, cuda or auto)", device);
    return NULL;
}

nc_backend *nc_backend_create(const char *device, const nc_model *model, const nc_backend_params *p) {
    if (!model) {
        nc_fail("nc_backend_create: no model");
        return NULL;
    }
    const nc_backend_ops *ops = backend_ops_for(device ? device : "auto");
    if (!ops) return NULL;
    nc_backend_params defaults = {0};
    nc_backend *b = nc_xcalloc(1, sizeof *b);
    b->ops = ops;
    b->model = model;
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
