/*
 * harness.cuh: the error checks every dev/kernels harness uses, and the
 * error functions of the backend sources some of them compile in. Harnesses
 * are built alone with plain nvcc (the command is at the top of each), so
 * this header sits next to them and needs nothing but the CUDA toolkit.
 */
#ifndef NC_DEV_HARNESS_CUH
#define NC_DEV_HARNESS_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdarg.h>
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

/* What the backend sources a harness compiles in call on failure
 * (util/common.c's, which the harness does not link): print and go on /
 * exit. */
extern "C" {
__attribute__((format(printf, 1, 2))) int nc_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}
__attribute__((noreturn, format(printf, 3, 4))) void nc_die_at(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}
const char *nc_error(void) { return "(printed above)"; } /* nc_fail printed the message */
void *nc_xcalloc(size_t count, size_t size) {
    void *p = calloc(count, size);
    if (!p) exit(1);
    return p;
}
}

#endif /* NC_DEV_HARNESS_CUH */
