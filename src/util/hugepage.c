/*
 * hugepage.c: 2 MB-page allocations and advice (hugepage.h).
 *
 * nc_alloc_huge uses posix_memalign, so the block is an ordinary malloc
 * block (free() releases it, as nc_tensor_set does for its buffers): glibc
 * serves such sizes with their own mmap, offset to the 2 MB boundary. The
 * size is rounded up to whole 2 MB pages so the advised range lies inside
 * the block.
 */
#include "hugepage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *nc_alloc_huge(size_t bytes) {
    size_t rounded = (bytes + NC_HUGE_PAGE_BYTES - 1) & ~(NC_HUGE_PAGE_BYTES - 1);
    if (rounded < bytes) {
        errno = ENOMEM;
        return NULL;
    }
    if (rounded == 0) rounded = NC_HUGE_PAGE_BYTES;
    void *p = NULL;
    int rc = posix_memalign(&p, NC_HUGE_PAGE_BYTES, rounded);
    if (rc != 0) {
        errno = rc;
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return p;
}

int nc_advise_huge(const void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    uintptr_t lo = ((uintptr_t)p + NC_HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(NC_HUGE_PAGE_BYTES - 1);
    uintptr_t hi = ((uintptr_t)p + bytes) & ~(uintptr_t)(NC_HUGE_PAGE_BYTES - 1);
    if (hi <= lo) return 0;
    return madvise((void *)lo, hi - lo, MADV_HUGEPAGE) == 0 ? 0 : -1;
#else
    (void)p;
    (void)bytes;
    return -1;
#endif
}

int64_t nc_huge_mapped_bytes(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return -1;
    char line[256];
    int64_t total = 0;
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "AnonHugePages: %lld kB", &kb) == 1 || sscanf(line, "FilePmdMapped: %lld kB", &kb) == 1 ||
            sscanf(line, "ShmemPmdMapped: %lld kB", &kb) == 1) {
            total += (int64_t)kb * 1024;
            found = 1;
        }
    }
    fclose(f);
    return found ? total : -1;
}
