/*
 * membw.h: the memory read bandwidth that CPU decode can draw on, measured
 * the way decode uses memory: every thread of the run streaming reads of
 * its share of a buffer far larger than the last-level cache, in 2 MB
 * pages as the CPU backend keeps its weights (util/hugepage.h).
 *
 * Batch-1 decode reads every weight once per token, so weight bytes / this
 * bandwidth is the fastest a token can be; `nanochat bench` reports decode
 * as a percentage of that (docs/performance.md, Floors). A single-thread
 * memcpy understates it (one core cannot keep enough reads in flight), a
 * buffer that fits the cache overstates it.
 */
#ifndef NC_UTIL_MEMBW_H
#define NC_UTIL_MEMBW_H

#include <stddef.h>

/* Bytes to read for an honest figure: at least 1 GiB and 4x the last-level
 * cache (sysfs), rounded to whole 2 MB pages. */
size_t nc_read_bandwidth_bytes(void);

/* Best of `reps` timed passes (after one untimed pass that also faults the
 * pages in) of n_threads threads (n_threads <= 0: nc_default_threads())
 * summing their shares of a `bytes` buffer; bytes/s, or 0 when the buffer
 * or the threads cannot be had (nc_error() says why). */
double nc_read_bandwidth(int n_threads, size_t bytes, int reps);

#endif /* NC_UTIL_MEMBW_H */
