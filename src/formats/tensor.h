/*
 * tensor.h: a named, typed, contiguous view of tensor data, and a set of
 * them as read from one checkpoint (one .pt file, or all safetensors shards).
 *
 * Every reader (torch zip, safetensors, random init) produces an
 * nc_tensor_set. Data is mmapped where the file layout allows (contiguous,
 * aligned); otherwise the reader copies into a buffer the set owns. Either
 * way `data` is row-major contiguous and valid until nc_tensor_set_free().
 */
#ifndef NC_FORMATS_TENSOR_H
#define NC_FORMATS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define NC_MAX_DIMS 8

typedef enum {
    NC_DTYPE_F32 = 0,
    NC_DTYPE_BF16,
    NC_DTYPE_F16,
    NC_DTYPE_F64,
    NC_DTYPE_I64,
    NC_DTYPE_I32,
    NC_DTYPE_I16,
    NC_DTYPE_I8,
    NC_DTYPE_U8,
    NC_DTYPE_BOOL,
    NC_DTYPE_F8_E4M3, /* OCP float8 e4m3fn (util/numeric.h), the fp8 weight format */
    NC_DTYPE_COUNT
} nc_dtype;

size_t nc_dtype_size(nc_dtype t);    /* bytes per element */
const char *nc_dtype_name(nc_dtype t); /* "f32", "bf16", ... */

typedef struct {
    char *name;                  /* state-dict key, `_orig_mod.` prefix already stripped */
    nc_dtype dtype;
    int ndim;
    int64_t shape[NC_MAX_DIMS];
    const void *data;            /* contiguous row-major; mmapped or owned by the set */
    size_t nbytes;               /* numel * dtype size */
} nc_tensor;

int64_t nc_tensor_numel(const nc_tensor *t);

/* Reads element i (flat index) of a float tensor (f32/bf16/f16/f64) as fp32. */
float nc_tensor_get_f32(const nc_tensor *t, int64_t i);

typedef struct nc_tensor_set nc_tensor_set;

nc_tensor_set *nc_tensor_set_new(void);
/* Frees the tensors, owned buffers and mappings; every nc_tensor pointer
 * obtained from the set is invalid afterwards. NULL is fine. */
void nc_tensor_set_free(nc_tensor_set *s);

/* Tensors keep their address for the life of the set: adding more never
 * moves the ones already there. */
int nc_tensor_set_count(const nc_tensor_set *s);
const nc_tensor *nc_tensor_set_at(const nc_tensor_set *s, int i);
const nc_tensor *nc_tensor_set_find(const nc_tensor_set *s, const char *name);

/* Adds a tensor; the name is copied. `data` must stay valid as long as the
 * set: either it lies in a region given to nc_tensor_set_keep_mapping or in
 * a buffer given to nc_tensor_set_keep_buffer. Fails on a duplicate name. */
int nc_tensor_set_add(nc_tensor_set *s, const char *name, nc_dtype dtype, int ndim,
                      const int64_t *shape, const void *data);

/* Gives tensor `t` of the set new contents of another dtype, shape
 * unchanged (e.g. a bf16 matrix quantised to int8 in place): pointers to
 * `t` stay valid and see the new dtype, data and nbytes. `data` follows the
 * rule of nc_tensor_set_add. The old data is left where it was. */
void nc_tensor_set_retype(nc_tensor_set *s, const nc_tensor *t, nc_dtype dtype, const void *data);

/* Hands ownership of a malloc'ed buffer to the set (freed with it). */
void nc_tensor_set_keep_buffer(nc_tensor_set *s, void *buffer);
/* Frees a buffer handed over with nc_tensor_set_keep_buffer before the set
 * is freed (once no tensor points into it any more); returns 0, or -1 if
 * `buffer` is not one of the set's. */
int nc_tensor_set_drop_buffer(nc_tensor_set *s, void *buffer);
/* Hands ownership of an mmapped region to the set (munmapped with it). */
void nc_tensor_set_keep_mapping(nc_tensor_set *s, void *addr, size_t length);

/* Whether [p, p + bytes) lies inside a region given to
 * nc_tensor_set_keep_mapping (file-backed, 4 KB pages: the CPU backend
 * copies such weights into 2 MB pages). */
int nc_tensor_set_in_mapping(const nc_tensor_set *s, const void *p, size_t bytes);

/* Total bytes of tensor data in the set. */
size_t nc_tensor_set_bytes(const nc_tensor_set *s);

/* String metadata of the set (safetensors' "__metadata__"; the quantiser
 * records the weight format here). set_meta copies both strings and
 * replaces an existing key; meta returns NULL for an absent key. */
void nc_tensor_set_set_meta(nc_tensor_set *s, const char *key, const char *value);
const char *nc_tensor_set_meta(const nc_tensor_set *s, const char *key);
int nc_tensor_set_meta_count(const nc_tensor_set *s);
/* Key and value of entry i, in insertion order. */
void nc_tensor_set_meta_at(const nc_tensor_set *s, int i, const char **key, const char **value);

#endif /* NC_FORMATS_TENSOR_H */
