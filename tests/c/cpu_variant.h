/*
 * cpu_variant.h: which CPU kernel variants (cpu_kernels.h) a test runs:
 * every one this CPU supports, or only the one NC_CPU_KERNELS names
 * (tests/sh/test_cpu_variants.sh forces each in turn; "auto" or unset: all).
 */
#ifndef NC_TEST_CPU_VARIANT_H
#define NC_TEST_CPU_VARIANT_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"

/* Whether to test variant k (prints why not when the CPU lacks it). */
static inline bool cpu_variant_wanted(const cpu_kernels *k) {
    const char *only = getenv("NC_CPU_KERNELS");
    if (only && *only && strcmp(only, "auto") && strcmp(only, k->name)) return false;
    if (!cpu_kernels_supported(k)) {
        printf("%s kernels: not supported on this CPU, skipped\n", k->name);
        return false;
    }
    return true;
}

#endif /* NC_TEST_CPU_VARIANT_H */
