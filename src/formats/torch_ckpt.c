/*
 * torch_ckpt.c: PyTorch zip checkpoints -> tensor set (torch_ckpt.h).
 *
 * Mirrors torch.serialization's `_load` for the part torch.save(state_dict)
 * uses: find `<archive>/data.pkl`, unpickle it, and for each value rebuild
 * the tensor from its storage entry `<archive>/data/<key>`, offset, sizes
 * and strides. Every index a lying pickle could produce is checked against
 * the storage's real byte length before anything is read.
 */
#include "torch_ckpt.h"

#include <stdio.h>
#include <string.h>

#include "../util/common.h"
#include "../util/mmap_file.h"
#include "pickle.h"
#include "zip.h"

typedef struct {
    const nc_zip *zip;
    char prefix[256]; /* "<archive>/" */
    nc_tensor_set *set;
} reader;

static const struct {
    const char *storage;
    nc_dtype dtype;
} storage_types[] = {
    {"FloatStorage", NC_DTYPE_F32}, {"BFloat16Storage", NC_DTYPE_BF16}, {"HalfStorage", NC_DTYPE_F16},
    {"DoubleStorage", NC_DTYPE_F64}, {"LongStorage", NC_DTYPE_I64},     {"IntStorage", NC_DTYPE_I32},
    {"ShortStorage", NC_DTYPE_I16},  {"CharStorage", NC_DTYPE_I8},      {"ByteStorage", NC_DTYPE_U8},
    {"BoolStorage", NC_DTYPE_BOOL},
};

/* Finds the single `<archive>/data.pkl` entry. */
static const nc_zip_entry *find_data_pkl(reader *r) {
    const nc_zip_entry *found = NULL;
    for (int i = 0; i < nc_zip_count(r->zip); i++) {
        const nc_zip_entry *e = nc_zip_at(r->zip, i);
        const char *slash = strchr(e->name, '/');
        if (!slash || strcmp(slash, "/data.pkl") != 0) continue;
        if (found) {
            nc_fail("two data.pkl entries ('%s', '%s'): not a single torch.save archive", found->name, e->name);
            return NULL;
        }
        found = e;
    }
    if (!found) {
        nc_fail("no <archive>/data.pkl entry: not a PyTorch zip checkpoint");
        return NULL;
    }
    size_t plen = (size_t)(strchr(found->name, '/') - found->name) + 1;
    if (plen >= sizeof r->prefix) {
        nc_fail("archive name too long");
        return NULL;
    }
    memcpy(r->prefix, found->name, plen);
    r->prefix[plen] = 0;
    return found;
}

static int check_byteorder(reader *r) {
    char name[300];
    snprintf(name, sizeof name, "%sbyteorder", r->prefix);
    const nc_zip_entry *e = nc_zip_find(r->zip, name);
    if (!e) return 0; /* older writers omit it: little-endian */
    const uint8_t *d = nc_zip_data(r->zip, e);
    if (!d) return -1;
    if (!(e->size == 6 && !memcmp(d, "little", 6)))
        return nc_fail("checkpoint was written on a big-endian machine (byteorder entry); not supported");
    return 0;
}

/* Reads a tuple of non-negative ints (sizes or strides) into out[]. */
static int int_tuple(const nc_pickle_obj *o, int64_t *out, int *n, const char *what, const char *key) {
    if (!o || o->kind != NC_PK_TUPLE) return nc_fail("tensor '%s': %s is not a tuple", key, what);
    if (o->n > NC_MAX_DIMS) return nc_fail("tensor '%s' has %zu dimensions (at most %d)", key, o->n, NC_MAX_DIMS);
    for (size_t i = 0; i < o->n; i++) {
        const nc_pickle_obj *v = o->u.items[i];
        if (v->kind != NC_PK_INT || v->u.i < 0 || v->u.i > ((int64_t)1 << 48))
            return nc_fail("tensor '%s': bad %s entry %zu", key, what, i);
        out[i] = v->u.i;
    }
    *n = (int)o->n;
    return 0;
}

/* Copies a strided view into a new contiguous buffer (owned by the set). */
static void *gather(const uint8_t *base, size_t esize, int ndim, const int64_t *size, const int64_t *stride,
                    int64_t numel) {
    uint8_t *out = malloc((size_t)numel * esize);
    if (!out) return NULL;
    int64_t idx[NC_MAX_DIMS] = {0};
    for (int64_t k = 0; k < numel; k++) {
        int64_t src = 0;
        for (int d = 0; d < ndim; d++) src += idx[d] * stride[d];
        memcpy(out + (size_t)k * esize, base + (size_t)src * esize, esize);
        for (int d = ndim - 1; d >= 0; d--) {
            if (++idx[d] < size[d]) break;
            idx[d] = 0;
        }
    }
    return out;
}

static int read_tensor(reader *r, const char *key, const nc_pickle_obj *v) {
    char desc[160];
    /* nn.Parameter values are wrapped: _rebuild_parameter(tensor, requires_grad, hooks) */
    if (v->kind == NC_PK_OBJECT &&
        (nc_pickle_is_global(v->u.object.callable, "torch._utils", "_rebuild_parameter") ||
         nc_pickle_is_global(v->u.object.callable, "torch._utils", "_rebuild_parameter_with_state")) &&
        v->u.object.args->n >= 1)
        v = v->u.object.args->u.items[0];
    if (v->kind != NC_PK_OBJECT || !nc_pickle_is_global(v->u.object.callable, "torch._utils", "_rebuild_tensor_v2"))
        return nc_fail("state-dict entry '%s' is not a plain tensor (%s)", key, nc_pickle_describe(v, desc, sizeof desc));
    const nc_pickle_obj *args = v->u.object.args;
    if (args->n < 4) return nc_fail("tensor '%s': _rebuild_tensor_v2 with %zu arguments", key, args->n);
    const nc_pickle_obj *pers = args->u.items[0], *off = args->u.items[1];
    const nc_pickle_obj *pid = pers->kind == NC_PK_PERSID ? pers->u.persid.pid : NULL;
    if (!pid || pid->kind != NC_PK_TUPLE || pid->n < 5 || !nc_pickle_is_str(pid->u.items[0], "storage") ||
        pid->u.items[1]->kind != NC_PK_GLOBAL || pid->u.items[2]->kind != NC_PK_STR ||
        pid->u.items[4]->kind != NC_PK_INT)
        return nc_fail("tensor '%s': storage is not a ('storage', type, key, location, numel) id", key);
    const nc_pickle_obj *type = pid->u.items[1];
    int ti = -1;
    for (int i = 0; i < (int)NC_ARRAY_LEN(storage_types); i++)
        if (!strcmp(type->u.global.module, "torch") && !strcmp(type->u.global.name, storage_types[i].storage)) ti = i;
    if (ti < 0)
        return nc_fail("tensor '%s' has unsupported storage type %s.%s", key, type->u.global.module,
                       type->u.global.name);
    nc_dtype dtype = storage_types[ti].dtype;
    size_t esize = nc_dtype_size(dtype);

    char entry_name[512];
    snprintf(entry_name, sizeof entry_name, "%sdata/%s", r->prefix, pid->u.items[2]->u.s);
    const nc_zip_entry *e = nc_zip_find(r->zip, entry_name);
    if (!e) return nc_fail("tensor '%s': storage entry '%s' is missing from the archive", key, entry_name);
    const uint8_t *base = nc_zip_data(r->zip, e);
    if (!base) return -1;
    int64_t storage_numel = pid->u.items[4]->u.i;
    if (storage_numel < 0 || (uint64_t)storage_numel > e->size / esize)
        return nc_fail("tensor '%s': storage '%s' claims %lld elements of %zu bytes but holds %llu bytes", key,
                       entry_name, (long long)storage_numel, esize, (unsigned long long)e->size);

    int64_t size[NC_MAX_DIMS], stride[NC_MAX_DIMS];
    int ndim, nstride;
    if (int_tuple(args->u.items[2], size, &ndim, "size", key) ||
        int_tuple(args->u.items[3], stride, &nstride, "stride", key))
        return -1;
    if (ndim != nstride) return nc_fail("tensor '%s': %d sizes but %d strides", key, ndim, nstride);
    if (off->kind != NC_PK_INT || off->u.i < 0) return nc_fail("tensor '%s': bad storage offset", key);
    int64_t numel = 1, last = off->u.i; /* last: highest element index touched */
    bool contiguous = true;
    int64_t expect = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (__builtin_mul_overflow(numel, size[d], &numel) || numel > ((int64_t)1 << 48))
            return nc_fail("tensor '%s' is impossibly large", key);
        if (size[d] > 1 && stride[d] != expect) contiguous = false;
        expect *= size[d];
        int64_t span;
        if (size[d] > 0 && (__builtin_mul_overflow(size[d] - 1, stride[d], &span) ||
                            __builtin_add_overflow(last, span, &last)))
            return nc_fail("tensor '%s': strides overflow", key);
    }
    if (numel > 0 && last >= storage_numel)
        return nc_fail("tensor '%s' reads element %lld of a %lld-element storage ('%s')", key, (long long)last,
                       (long long)storage_numel, entry_name);
    const uint8_t *start = numel > 0 ? base + (size_t)off->u.i * esize : base;
    const void *data = start;
    if (numel > 0 && (!contiguous || (uintptr_t)start % esize)) {
        void *copy = gather(start, esize, ndim, size, stride, numel);
        if (!copy) return nc_fail("out of memory copying strided tensor '%s'", key);
        nc_tensor_set_keep_buffer(r->set, copy);
        data = copy;
    }
    const char *name = strncmp(key, "_orig_mod.", 10) == 0 ? key + 10 : key;
    return nc_tensor_set_add(r->set, name, dtype, ndim, size, data);
}

int nc_torch_read(const uint8_t *data, size_t len, nc_tensor_set *into) {
    reader r = {.set = into};
    nc_zip *zip = nc_zip_open(data, len);
    if (!zip) {
        if (len >= 2 && data[0] == 0x80 && data[1] <= 5)
            return nc_fail("legacy (pre-1.6, non-zip) torch.save format; re-save it with a current PyTorch");
        return -1;
    }
    r.zip = zip;
    nc_pickle *pk = NULL;
    int rc = -1;
    const nc_zip_entry *pe = find_data_pkl(&r);
    const uint8_t *pd = pe ? nc_zip_data(zip, pe) : NULL;
    if (!pd || check_byteorder(&r)) goto done;
    if (!(pk = nc_pickle_load(pd, (size_t)pe->size))) {
        nc_fail_context("%s", pe->name);
        goto done;
    }
    const nc_pickle_obj *root = nc_pickle_root(pk);
    size_t n;
    const nc_pickle_obj *const *kv = nc_pickle_pairs(root, &n);
    if (!kv && !(root->kind == NC_PK_DICT || root->kind == NC_PK_OBJECT)) {
        char desc[160];
        nc_fail("data.pkl holds %s, not a state dict", nc_pickle_describe(root, desc, sizeof desc));
        goto done;
    }
    if (root->kind == NC_PK_OBJECT && !nc_pickle_is_global(root->u.object.callable, "collections", "OrderedDict")) {
        char desc[160];
        nc_fail("data.pkl holds %s, not a state dict", nc_pickle_describe(root, desc, sizeof desc));
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (kv[2 * i]->kind != NC_PK_STR) {
            nc_fail("state-dict key %zu is not a string", i);
            goto done;
        }
        if (read_tensor(&r, kv[2 * i]->u.s, kv[2 * i + 1])) goto done;
    }
    rc = 0;
done:
    nc_pickle_free(pk);
    nc_zip_close(zip);
    return rc;
}

nc_tensor_set *nc_torch_load(const char *path) {
    nc_mapped_file f;
    if (nc_map_file(path, &f)) return NULL;
    nc_tensor_set *s = nc_tensor_set_new();
    if (f.data) nc_tensor_set_keep_mapping(s, (void *)f.data, f.size);
    if (nc_torch_read(f.data, f.size, s)) {
        nc_fail_context("%s", path);
        nc_tensor_set_free(s);
        return NULL;
    }
    return s;
}
