/*
 * safetensors.h: Hugging Face safetensors files -> nc_tensor_set.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {...}}, then the data; offsets are relative to byte 8+N.
 * Every range is checked against the file and against dtype x shape.
 * String entries of "__metadata__" become the set's metadata.
 * Tensors point into the mapping (copied only when misaligned for their
 * dtype). Sharded checkpoints list their files in
 * model.safetensors.index.json ("weight_map": name -> file).
 */
#ifndef NC_FORMATS_SAFETENSORS_H
#define NC_FORMATS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* Optional renaming of tensor names as they are added (e.g. Hugging Face
 * names -> nanochat names). Writes the new name to out (capacity cap) and
 * returns 0; a name it does not know is copied unchanged. */
typedef void (*nc_tensor_rename_fn)(const char *name, char *out, size_t cap);

/* Parses a safetensors file held in data[0..len) and adds its tensors to
 * `into` (renamed by `rename` if non-NULL). Tensors point into the buffer,
 * which must outlive the set. */
int nc_safetensors_read(const uint8_t *data, size_t len, nc_tensor_set *into, nc_tensor_rename_fn rename);

/* Writes every tensor of `s` and its metadata (as "__metadata__") to a new
 * safetensors file at `path`, tensors ordered by element size (widest
 * first, so each is aligned in a mapping of the file), header padded to 8
 * bytes. Errors name the file. */
int nc_safetensors_save(const char *path, const nc_tensor_set *s);

/* Maps one .safetensors file and adds its tensors to `into`, which takes
 * the mapping. Errors name the file. */
int nc_safetensors_load(const char *path, nc_tensor_set *into, nc_tensor_rename_fn rename);

/* Loads every shard named in a model.safetensors.index.json (files are
 * resolved relative to the index's directory; each is loaded once) and
 * checks that every tensor the index lists was found. */
int nc_safetensors_load_index(const char *index_path, nc_tensor_set *into, nc_tensor_rename_fn rename);

#endif /* NC_FORMATS_SAFETENSORS_H */
