/*
 * cuda_backend.h: the CUDA backend's public face, in C (backend.c includes
 * it under #ifdef NC_WITH_CUDA; nothing else outside backend/cuda should).
 *
 * The implementation lives in the .cu files beside this header (CUDA C: C
 * with kernels, no STL, no classes). cuda_internal.cuh describes the state
 * and how the files divide the work.
 */
#ifndef NC_BACKEND_CUDA_BACKEND_H
#define NC_BACKEND_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../backend.h"

/* The ops table of the CUDA backend ("cuda", on the GPU in b->gpus[0]). */
extern const nc_backend_ops nc_cuda_backend_ops;
/* Tensor parallel over the GPUs in b->gpus (cuda_tp.cu; only in builds
 * with NCCL, NC_WITH_NCCL). */
extern const nc_backend_ops nc_cuda_tp_backend_ops;

/* True when CUDA device 0 has compute capability >= 8.0; else false with
 * a one-line reason in why[n] (no driver, no device, too old). */
bool nc_cuda_probe(char *why, size_t n);
/* The same for CUDA device `device` (the reason names the devices there
 * are when it does not exist). */
bool nc_cuda_probe_device(int device, char *why, size_t n);
/* CUDA devices visible to this process (0 when there is no driver). */
int nc_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif /* NC_BACKEND_CUDA_BACKEND_H */
