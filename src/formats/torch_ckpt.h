/*
 * torch_ckpt.h: PyTorch checkpoints (torch.save(state_dict), nanochat's
 * model_<step>.pt) -> nc_tensor_set.
 *
 * The file is a zip (zip.h) holding `<archive>/data.pkl` (pickle.h) and one
 * raw little-endian storage per tensor at `<archive>/data/<key>`, stored
 * uncompressed and 64-byte aligned. Each state-dict value is
 * `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
 * with the storage a persistent id ('storage', torch.<Type>Storage, key,
 * location, numel). Contiguous tensors point straight into the mapping;
 * strided ones (a saved transposed view) are gathered into a buffer the set
 * owns. Keys lose a leading `_orig_mod.` (torch.compile's wrapper prefix).
 */
#ifndef NC_FORMATS_TORCH_CKPT_H
#define NC_FORMATS_TORCH_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* Maps `path` and reads its tensors into a new set that owns the mapping.
 * NULL + nc_error() (naming the file) on any problem. */
nc_tensor_set *nc_torch_load(const char *path);

/* Reads a checkpoint held in data[0..len) into `into`. Tensors may point
 * into the buffer, which must outlive the set (nc_torch_load hands the
 * mapping to the set; the fuzzer passes its input). */
int nc_torch_read(const uint8_t *data, size_t len, nc_tensor_set *into);

#endif /* NC_FORMATS_TORCH_CKPT_H */
