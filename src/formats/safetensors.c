/*
 * safetensors.c: safetensors reader and sharded index (safetensors.h).
 *
 * Mirrors the safetensors crate's validation: the header length fits the
 * file, every tensor's [begin, end) lies inside the data area and equals
 * numel x dtype size. JSON numbers arrive as doubles; offsets and sizes must
 * be exact non-negative integers below 2^53.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "../util/common.h"
#include "../util/mmap_file.h"

/* Headers are a few kB per hundred tensors; 100 MB is the format's own cap. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_MAX_INDEX ((size_t)64 << 20)

static const struct {
    const char *name;
    nc_dtype dtype;
} st_dtypes[] = {
    {"F32", NC_DTYPE_F32}, {"BF16", NC_DTYPE_BF16}, {"F16", NC_DTYPE_F16}, {"F64", NC_DTYPE_F64},
    {"I64", NC_DTYPE_I64}, {"I32", NC_DTYPE_I32},   {"I16", NC_DTYPE_I16}, {"I8", NC_DTYPE_I8},
    {"U8", NC_DTYPE_U8},   {"BOOL", NC_DTYPE_BOOL}, {"F8_E4M3", NC_DTYPE_F8_E4M3},
};

/* An exact non-negative integer below 2^53 from a JSON number. */
static int json_uint(const cJSON *j, int64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0 && v < 9007199254740992.0) || v != (double)(int64_t)v) return -1;
    *out = (int64_t)v;
    return 0;
}

static int add_tensor(const cJSON *t, const uint8_t *base, uint64_t data_len, nc_tensor_set *into,
                      nc_tensor_rename_fn rename) {
    const char *name = t->string;
    if (!cJSON_IsObject(t)) return nc_fail("safetensors: entry '%s' is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return nc_fail("safetensors: tensor '%s' lacks dtype/shape/data_offsets", name);
    int di = -1;
    for (int i = 0; i < (int)NC_ARRAY_LEN(st_dtypes); i++)
        if (!strcmp(dt->valuestring, st_dtypes[i].name)) di = i;
    if (di < 0) return nc_fail("safetensors: tensor '%s' has unsupported dtype %s", name, dt->valuestring);
    nc_dtype dtype = st_dtypes[di].dtype;
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NC_MAX_DIMS) return nc_fail("safetensors: tensor '%s' has %d dimensions", name, ndim);
    int64_t dims[NC_MAX_DIMS], numel = 1, begin, end;
    for (int i = 0; i < ndim; i++) {
        if (json_uint(cJSON_GetArrayItem(shape, i), &dims[i]) ||
            __builtin_mul_overflow(numel, dims[i], &numel) || numel > ((int64_t)1 << 48))
            return nc_fail("safetensors: tensor '%s' has a bad shape", name);
    }
    if (json_uint(cJSON_GetArrayItem(offs, 0), &begin) || json_uint(cJSON_GetArrayItem(offs, 1), &end) ||
        begin > end || (uint64_t)end > data_len)
        return nc_fail("safetensors: tensor '%s' has data_offsets outside the %llu-byte data area", name,
                       (unsigned long long)data_len);
    size_t esize = nc_dtype_size(dtype);
    if ((uint64_t)(end - begin) != (uint64_t)numel * esize)
        return nc_fail("safetensors: tensor '%s' spans %lld bytes but %s x %lld elements need %llu", name,
                       (long long)(end - begin), dt->valuestring, (long long)numel,
                       (unsigned long long)numel * esize);
    const void *data = base + begin;
    if ((uintptr_t)data % esize) { /* the format does not promise alignment */
        void *copy = malloc((size_t)(end - begin) + 1);
        if (!copy) return nc_fail("out of memory copying tensor '%s'", name);
        memcpy(copy, data, (size_t)(end - begin));
        nc_tensor_set_keep_buffer(into, copy);
        data = copy;
    }
    char renamed[256];
    if (rename) rename(name, renamed, sizeof renamed);
    else snprintf(renamed, sizeof renamed, "%s", name);
    return nc_tensor_set_add(into, renamed, dtype, ndim, dims, data);
}

/* "__metadata__": a flat object of strings (the format's rule); entries
 * that are not strings are ignored, as other readers do. */
static int add_metadata(const cJSON *m, nc_tensor_set *into) {
    if (!cJSON_IsObject(m)) return nc_fail("safetensors: __metadata__ is not an object");
    for (const cJSON *e = m->child; e; e = e->next)
        if (e->string && cJSON_IsString(e)) nc_tensor_set_set_meta(into, e->string, e->valuestring);
    return 0;
}

int nc_safetensors_read(const uint8_t *data, size_t len, nc_tensor_set *into, nc_tensor_rename_fn rename) {
    if (len < 8) return nc_fail("safetensors: file too small (%zu bytes)", len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | data[i];
    if (n > len - 8 || n > ST_MAX_HEADER)
        return nc_fail("safetensors: header length %llu does not fit the %zu-byte file (truncated or not "
                       "safetensors)", (unsigned long long)n, len);
    cJSON *h = cJSON_ParseWithLength((const char *)data + 8, (size_t)n);
    if (!h || !cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return nc_fail("safetensors: header is not a JSON object");
    }
    const uint8_t *base = data + 8 + n;
    uint64_t data_len = len - 8 - n;
    int rc = 0;
    for (const cJSON *t = h->child; t && !rc; t = t->next) {
        if (!t->string) rc = nc_fail("safetensors: unnamed header entry");
        else if (strcmp(t->string, "__metadata__") != 0) rc = add_tensor(t, base, data_len, into, rename);
        else rc = add_metadata(t, into);
    }
    cJSON_Delete(h);
    return rc;
}

/* ==== writing ==== */

/* The safetensors name of a dtype, or NULL for one the format lacks. */
static const char *st_dtype_name(nc_dtype d) {
    for (size_t i = 0; i < NC_ARRAY_LEN(st_dtypes); i++)
        if (st_dtypes[i].dtype == d) return st_dtypes[i].name;
    return NULL;
}

int nc_safetensors_save(const char *path, const nc_tensor_set *s) {
    int n = nc_tensor_set_count(s);
    /* Wider elements first: every tensor then starts aligned to its element
     * size (the header is padded to 8 bytes), so the reader maps them all. */
    const nc_tensor **order = nc_xmalloc((size_t)(n ? n : 1) * sizeof *order);
    int k = 0;
    for (size_t width = 8; width >= 1; width /= 2)
        for (int i = 0; i < n; i++)
            if (nc_dtype_size(nc_tensor_set_at(s, i)->dtype) == width) order[k++] = nc_tensor_set_at(s, i);
    NC_ASSERT(k == n);
    cJSON *h = cJSON_CreateObject();
    if (nc_tensor_set_meta_count(s) > 0) {
        cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
        for (int i = 0; i < nc_tensor_set_meta_count(s); i++) {
            const char *key, *value;
            nc_tensor_set_meta_at(s, i, &key, &value);
            cJSON_AddStringToObject(meta, key, value);
        }
    }
    uint64_t offset = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const nc_tensor *t = order[i];
        const char *dt = st_dtype_name(t->dtype);
        if (!dt) {
            rc = nc_fail("safetensors: cannot store tensor '%s' of dtype %s", t->name, nc_dtype_name(t->dtype));
            break;
        }
        cJSON *e = cJSON_AddObjectToObject(h, t->name);
        cJSON_AddStringToObject(e, "dtype", dt);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + t->nbytes)));
        offset += t->nbytes;
    }
    char *json = rc ? NULL : cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    FILE *f = NULL;
    if (!rc && !(f = fopen(path, "wb"))) rc = nc_fail("cannot write %s: %s", path, strerror(errno));
    if (!rc) {
        size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7;
        uint8_t len8[8];
        for (int b = 0; b < 8; b++) len8[b] = (uint8_t)((uint64_t)padded >> (8 * b));
        bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, jlen, f) == jlen;
        for (size_t p = jlen; ok && p < padded; p++) ok = fputc(' ', f) != EOF; /* JSON allows trailing spaces */
        for (int i = 0; ok && i < n; i++) ok = fwrite(order[i]->data, 1, order[i]->nbytes, f) == order[i]->nbytes;
        if (fclose(f) != 0) ok = false;
        if (!ok) rc = nc_fail("writing %s failed: %s", path, strerror(errno));
    }
    free(json);
    free(order);
    return rc;
}

int nc_safetensors_load(const char *path, nc_tensor_set *into, nc_tensor_rename_fn rename) {
    nc_mapped_file f;
    if (nc_map_file(path, &f)) return -1;
    if (f.data) nc_tensor_set_keep_mapping(into, (void *)f.data, f.size);
    if (nc_safetensors_read(f.data, f.size, into, rename)) return nc_fail_context("%s", path);
    return 0;
}

int nc_safetensors_load_index(const char *index_path, nc_tensor_set *into, nc_tensor_rename_fn rename) {
    char *text = nc_read_file(index_path, ST_MAX_INDEX, NULL);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(j);
        return nc_fail("%s: not a safetensors index (no \"weight_map\" object)", index_path);
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *d = dirname(dir);
    int rc = 0;
    /* Load each distinct shard once, in order of first mention. */
    for (const cJSON *e = map->child; e && !rc; e = e->next) {
        if (!cJSON_IsString(e) || !e->string) {
            rc = nc_fail("%s: weight_map values must be file names", index_path);
            break;
        }
        const char *shard = e->valuestring;
        if (!*shard || strchr(shard, '/') || shard[0] == '.') {
            rc = nc_fail("%s: shard '%s' must be a plain file name beside the index", index_path, shard);
            break;
        }
        bool seen = false;
        for (const cJSON *p = map->child; p != e && !seen; p = p->next)
            seen = cJSON_IsString(p) && !strcmp(p->valuestring, shard);
        if (seen) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", d, shard);
        rc = nc_safetensors_load(path, into, rename);
    }
    for (const cJSON *e = map->child; e && !rc; e = e->next) {
        char renamed[256];
        if (rename) rename(e->string, renamed, sizeof renamed);
        else snprintf(renamed, sizeof renamed, "%s", e->string);
        if (!nc_tensor_set_find(into, renamed))
            rc = nc_fail("%s lists tensor '%s' in %s, but that shard does not hold it", index_path, e->string,
                         e->valuestring);
    }
    cJSON_Delete(j);
    return rc;
}
