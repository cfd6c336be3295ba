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

/* The ops table of the CUDA backend ("cuda"). */
extern const nc_backend_ops nc_cuda_backend_ops;

/* True when a CUDA device of compute capability >= 8.0 is usable; else
 * false with a one-line reason in why[n] (no driver, no device, too old). */
bool nc_cuda_probe(char *why, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* NC_BACKEND_CUDA_BACKEND_H */
