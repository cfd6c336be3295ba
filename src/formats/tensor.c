/* tensor.c: named tensor sets with owned buffers and mappings (tensor.h). */
#include "tensor.h"

#include <string.h>
#include <sys/mman.h>

#include "../util/common.h"
#include "../util/numeric.h"

typedef struct {
    void *addr;
    size_t length;
} mapping;

struct nc_tensor_set {
    nc_tensor **tensors; /* one allocation each, so their addresses are stable */
    int n, cap;
    void **buffers;   /* owned malloc'ed buffers */
    int n_buffers;
    mapping *mappings; /* owned mmapped regions */
    int n_mappings;
    char **meta;       /* [2 * n_meta]: key, value, key, value, ... */
    int n_meta;
};

static const struct {
    size_t size;
    const char *name;
} dtype_info[NC_DTYPE_COUNT] = {
    [NC_DTYPE_F32] = {4, "f32"},  [NC_DTYPE_BF16] = {2, "bf16"}, [NC_DTYPE_F16] = {2, "f16"},
    [NC_DTYPE_F64] = {8, "f64"},  [NC_DTYPE_I64] = {8, "i64"},   [NC_DTYPE_I32] = {4, "i32"},
    [NC_DTYPE_I16] = {2, "i16"},  [NC_DTYPE_I8] = {1, "i8"},     [NC_DTYPE_U8] = {1, "u8"},
    [NC_DTYPE_BOOL] = {1, "bool"}, [NC_DTYPE_F8_E4M3] = {1, "f8_e4m3"},
};

size_t nc_dtype_size(nc_dtype t) {
    NC_ASSERT(t >= 0 && t < NC_DTYPE_COUNT);
    return dtype_info[t].size;
}

const char *nc_dtype_name(nc_dtype t) {
    return (t >= 0 && t < NC_DTYPE_COUNT) ? dtype_info[t].name : "?";
}

int64_t nc_tensor_numel(const nc_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

float nc_tensor_get_f32(const nc_tensor *t, int64_t i) {
    switch (t->dtype) {
    case NC_DTYPE_F32: return ((const float *)t->data)[i];
    case NC_DTYPE_BF16: return nc_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case NC_DTYPE_F16: return nc_f16_to_f32(((const uint16_t *)t->data)[i]);
    case NC_DTYPE_F64: return (float)((const double *)t->data)[i];
    default: nc_die("nc_tensor_get_f32 on a %s tensor (%s)", nc_dtype_name(t->dtype), t->name);
    }
}

nc_tensor_set *nc_tensor_set_new(void) { return nc_xcalloc(1, sizeof(nc_tensor_set)); }

void nc_tensor_set_free(nc_tensor_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->tensors[i]->name);
        free(s->tensors[i]);
    }
    free(s->tensors);
    for (int i = 0; i < 2 * s->n_meta; i++) free(s->meta[i]);
    free(s->meta);
    for (int i = 0; i < s->n_buffers; i++) free(s->buffers[i]);
    free(s->buffers);
    for (int i = 0; i < s->n_mappings; i++) munmap(s->mappings[i].addr, s->mappings[i].length);
    free(s->mappings);
    free(s);
}

int nc_tensor_set_count(const nc_tensor_set *s) { return s->n; }

const nc_tensor *nc_tensor_set_at(const nc_tensor_set *s, int i) {
    NC_ASSERT(i >= 0 && i < s->n);
    return s->tensors[i];
}

const nc_tensor *nc_tensor_set_find(const nc_tensor_set *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->tensors[i]->name, name) == 0) return s->tensors[i];
    return NULL;
}

int nc_tensor_set_add(nc_tensor_set *s, const char *name, nc_dtype dtype, int ndim,
                      const int64_t *shape, const void *data) {
    if (ndim < 0 || ndim > NC_MAX_DIMS)
        return nc_fail("tensor '%s' has %d dimensions (at most %d supported)", name, ndim, NC_MAX_DIMS);
    if (nc_tensor_set_find(s, name)) return nc_fail("tensor '%s' appears twice", name);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->tensors = nc_xrealloc(s->tensors, (size_t)s->cap * sizeof(nc_tensor *));
    }
    nc_tensor *t = nc_xcalloc(1, sizeof *t);
    s->tensors[s->n++] = t;
    t->name = nc_xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = (size_t)nc_tensor_numel(t) * nc_dtype_size(dtype);
    return 0;
}

void nc_tensor_set_retype(nc_tensor_set *s, const nc_tensor *t, nc_dtype dtype, const void *data) {
    nc_tensor *mine = NULL;
    for (int i = 0; i < s->n && !mine; i++)
        if (s->tensors[i] == t) mine = s->tensors[i];
    NC_ASSERT(mine);
    mine->dtype = dtype;
    mine->data = data;
    mine->nbytes = (size_t)nc_tensor_numel(mine) * nc_dtype_size(dtype);
}

int nc_tensor_set_drop_buffer(nc_tensor_set *s, void *buffer) {
    for (int i = 0; i < s->n_buffers; i++)
        if (s->buffers[i] == buffer) {
            free(buffer);
            s->buffers[i] = s->buffers[--s->n_buffers];
            return 0;
        }
    return -1;
}

void nc_tensor_set_keep_buffer(nc_tensor_set *s, void *buffer) {
    s->buffers = nc_xrealloc(s->buffers, (size_t)(s->n_buffers + 1) * sizeof(void *));
    s->buffers[s->n_buffers++] = buffer;
}

void nc_tensor_set_keep_mapping(nc_tensor_set *s, void *addr, size_t length) {
    s->mappings = nc_xrealloc(s->mappings, (size_t)(s->n_mappings + 1) * sizeof(mapping));
    s->mappings[s->n_mappings++] = (mapping){addr, length};
}

int nc_tensor_set_in_mapping(const nc_tensor_set *s, const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < s->n_mappings; i++) {
        uintptr_t lo = (uintptr_t)s->mappings[i].addr;
        if (a >= lo && a - lo <= s->mappings[i].length && bytes <= s->mappings[i].length - (a - lo)) return 1;
    }
    return 0;
}

size_t nc_tensor_set_bytes(const nc_tensor_set *s) {
    size_t total = 0;
    for (int i = 0; i < s->n; i++) total += s->tensors[i]->nbytes;
    return total;
}

void nc_tensor_set_set_meta(nc_tensor_set *s, const char *key, const char *value) {
    for (int i = 0; i < s->n_meta; i++)
        if (!strcmp(s->meta[2 * i], key)) {
            free(s->meta[2 * i + 1]);
            s->meta[2 * i + 1] = nc_xstrdup(value);
            return;
        }
    s->meta = nc_xrealloc(s->meta, (size_t)(2 * s->n_meta + 2) * sizeof(char *));
    s->meta[2 * s->n_meta] = nc_xstrdup(key);
    s->meta[2 * s->n_meta + 1] = nc_xstrdup(value);
    s->n_meta++;
}

const char *nc_tensor_set_meta(const nc_tensor_set *s, const char *key) {
    for (int i = 0; i < s->n_meta; i++)
        if (!strcmp(s->meta[2 * i], key)) return s->meta[2 * i + 1];
    return NULL;
}

int nc_tensor_set_meta_count(const nc_tensor_set *s) { return s->n_meta; }

void nc_tensor_set_meta_at(const nc_tensor_set *s, int i, const char **key, const char **value) {
    NC_ASSERT(i >= 0 && i < s->n_meta);
    *key = s->meta[2 * i];
    *value = s->meta[2 * i + 1];
}
