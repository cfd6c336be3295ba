/*
 * prefetch.c: nc_model_prefetch (prefetch.h). mincore() says which pages of
 * a range are resident; the missing ones are asked for with
 * madvise(MADV_WILLNEED) a chunk at a time (the kernel reads the chunk in
 * large requests) and then touched, one byte per page, so the chunk is in
 * memory when the bar moves on.
 */
#include "prefetch.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/common.h"

#define CHUNK_BYTES ((size_t)16 << 20)

/* Bytes of [lo, hi) (page-aligned) not in memory. Ranges mincore cannot
 * describe (not a mapping) count as resident. */
static size_t missing_bytes(uintptr_t lo, uintptr_t hi, size_t page, unsigned char *vec) {
    size_t missing = 0;
    for (uintptr_t a = lo; a < hi; a += CHUNK_BYTES) {
        size_t len = NC_MIN(CHUNK_BYTES, hi - a);
        if (mincore((void *)a, len, vec) != 0) continue;
        for (size_t i = 0; i < (len + page - 1) / page; i++) missing += (vec[i] & 1) ? 0 : page;
    }
    return missing;
}

void nc_model_prefetch(const nc_model *m, nc_progress *p, const char *label) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *vec = nc_xmalloc(CHUNK_BYTES / page + 1);
    int n = nc_tensor_set_count(m->tensors);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const nc_tensor *t = nc_tensor_set_at(m->tensors, i);
        uintptr_t lo = (uintptr_t)t->data & ~(uintptr_t)(page - 1), hi = (uintptr_t)t->data + t->nbytes;
        if (t->nbytes) total += missing_bytes(lo, hi, page, vec);
    }
    if (total == 0) {
        free(vec);
        return;
    }
    int id = nc_progress_add(p, label, (int64_t)total, 0);
    size_t done = 0;
    volatile unsigned char sink = 0;
    for (int i = 0; i < n; i++) {
        const nc_tensor *t = nc_tensor_set_at(m->tensors, i);
        if (!t->nbytes) continue;
        uintptr_t lo = (uintptr_t)t->data & ~(uintptr_t)(page - 1), hi = (uintptr_t)t->data + t->nbytes;
        for (uintptr_t a = lo; a < hi; a += CHUNK_BYTES) {
            size_t len = NC_MIN(CHUNK_BYTES, hi - a);
            size_t miss = missing_bytes(a, a + len, page, vec);
            if (!miss) continue;
            madvise((void *)a, len, MADV_WILLNEED);
            for (uintptr_t q = NC_MAX(a, (uintptr_t)t->data); q < a + len; q += page) sink ^= *(const unsigned char *)q;
            done += miss;
            nc_progress_set(p, id, (int64_t)NC_MIN(done, total));
        }
    }
    (void)sink;
    nc_progress_set(p, id, (int64_t)total);
    nc_progress_end(p, id, NULL);
    free(vec);
}
