/*
 * harness.cuh: the error checks every dev/kernels harness uses. Harnesses
 * are built alone with plain nvcc (the command is at the top of each), so
 * this header sits next to them and needs nothing but the CUDA toolkit.
 */
#ifndef NC_DEV_HARNESS_CUH
#define NC_DEV_HARNESS_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

/* A CUDA runtime call that must succeed: else print where and exit. */
#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* The same for a cuBLASLt call. */
#define LT(x)                                                                                  \
    do {                                                                                       \
        cublasStatus_t s_ = (x);                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s: cublasLt status %d\n", __FILE__, __LINE__, #x, (int)s_); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#endif /* NC_DEV_HARNESS_CUH */
