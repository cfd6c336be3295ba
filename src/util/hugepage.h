/*
 * hugepage.h: memory in 2 MB pages (Linux transparent huge pages), for the
 * buffers that CPU decode streams every token (the weights).
 *
 * Why: batch-1 decode reads ~1 GB of weights per token. With 4 KB pages
 * every 4 KB of that stream needs a TLB entry and the hardware prefetchers
 * stop at each page boundary; in 2 MB pages the same threaded read ran at
 * 27.8 instead of 22-24 GB/s on the 2-core dev VM (dev/kernels/NOTES_CPU.md,
 * docs/performance.md, CPU backend). THP is
 * commonly configured "madvise" (only regions that ask get huge pages), so
 * the allocation must ask before its pages are first touched.
 *
 * Everything here is best effort: where THP is off or no huge page is free,
 * the memory simply stays in 4 KB pages, with the same contents.
 */
#ifndef NC_UTIL_HUGEPAGE_H
#define NC_UTIL_HUGEPAGE_H

#include <stddef.h>
#include <stdint.h>

#define NC_HUGE_PAGE_BYTES ((size_t)2 << 20)

/* malloc-compatible allocation of `bytes` (rounded up to 2 MB inside),
 * 2 MB-aligned and advised MADV_HUGEPAGE before any page is touched.
 * Release with free(). NULL when out of memory (errno set, nc_error not). */
void *nc_alloc_huge(size_t bytes);

/* Advises MADV_HUGEPAGE on the whole 2 MB pages inside [p, p + bytes)
 * (e.g. a file mapping). Returns 0, or -1 if the kernel refused (no
 * message: callers treat it as "stays in 4 KB pages"). */
int nc_advise_huge(const void *p, size_t bytes);

/* Bytes of this process currently mapped with 2 MB pages (anonymous plus
 * file-backed, from /proc/self/smaps_rollup), or -1 where that is not
 * readable. For diagnostics and benchmarks. */
int64_t nc_huge_mapped_bytes(void);

#endif /* NC_UTIL_HUGEPAGE_H */
