/*
 * cpu_weights.c: where the CPU backend's streamed weights live: a checkpoint
 * mapping (4 KB pages), or a copy in 2 MB pages.
 *
 * Batch-1 decode reads every matrix once per token. Checkpoints are mmapped
 * (docs/formats.md, nanochat .pt), and the kernel here maps file pages 4 KB at a time (file-backed
 * transparent huge pages do not apply on this ext4: MADV_HUGEPAGE on the
 * mapping left FilePmdMapped at 0, MADV_COLLAPSE is refused). The decode
 * matvec then streams ~8% slower than from 2 MB pages (24.8 vs 26.9 GB/s on
 * the 2-core dev VM, dev/kernels/NOTES_CPU.md). So at init the matrices that
 * lie in a file mapping are copied into one anonymous 2 MB-page arena, and
 * the mapping's pages of those ranges are released (MADV_DONTNEED: they stay
 * in the page cache, clean and reclaimable, and would refault identical).
 *
 * Trade-off: load time (one extra pass over the weights: ~0.2 s for d20's
 * 1 GB on 2 cores, from a warm page cache) and, until the kernel reclaims the
 * page cache, the weights twice in RAM; in exchange every token is faster.
 * NC_CPU_WEIGHTS picks: "auto" (default) copies when the matrices take at
 * most half of MemAvailable and THP is not disabled; "copy" always copies;
 * "map" never does. Weights already in memory (random models, converted f16)
 * are left alone. The values are bit-identical either way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../util/common.h"
#include "../../util/hugepage.h"
#include "../../util/mmap_file.h"
#include "cpu_backend.h"

/* Whether transparent huge pages are switched off system-wide. */
static int thp_disabled(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 1;
    char line[128] = {0};
    int off = !fgets(line, sizeof line, f) || strstr(line, "[never]") != NULL;
    fclose(f);
    return off;
}

static size_t matrix_bytes(const cpu_matrix *m) {
    return (size_t)m->rows * (size_t)m->cols * nc_dtype_size(m->dtype);
}

/* The matrices decode streams, in the order the forward pass reads them. */
static int list_matrices(cpu_state *st, cpu_matrix **out) {
    int n = 0;
    for (int l = 0; l < st->cfg.n_layer; l++) {
        cpu_layer *L = &st->layers[l];
        cpu_matrix *per[] = {&L->c_q, &L->c_k, &L->c_v, &L->attn_proj, &L->mlp_fc, &L->mlp_proj};
        for (size_t i = 0; i < NC_ARRAY_LEN(per); i++) out[n++] = per[i];
    }
    out[n++] = &st->lm_head;
    return n;
}

typedef struct {
    const uint8_t *src;
    uint8_t *dst;
    size_t bytes;
} copy_job;

static void copy_worker(void *ctx, int task, int n_tasks, int thread) {
    const copy_job *j = ctx;
    long lo, hi;
    nc_split_range((long)j->bytes, n_tasks, task, 4096, &lo, &hi);
    if (hi > lo) memcpy(j->dst + lo, j->src + lo, (size_t)(hi - lo));
}

int cpu_place_weights(cpu_state *st, const nc_model *m, const char *mode, const char **placement) {
    *placement = "in memory";
    if (!m->tensors) return 0;

    cpu_matrix **mats = nc_xmalloc((size_t)(6 * st->cfg.n_layer + 1) * sizeof *mats);
    int n = list_matrices(st, mats), n_copy = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (nc_tensor_set_in_mapping(m->tensors, mats[i]->data, matrix_bytes(mats[i]))) {
            mats[n_copy++] = mats[i];
            total += (matrix_bytes(mats[i]) + 63) & ~(size_t)63;
        }
    int rc = 0;
    if (n_copy == 0) goto done;
    *placement = "mapped";
    if (!strcmp(mode, "map") || (!strcmp(mode, "auto") && (thp_disabled() || total > nc_mem_available() / 2)))
        goto done;

    uint8_t *arena = nc_alloc_huge(total);
    if (!arena) {
        if (!strcmp(mode, "copy"))
            rc = nc_fail("cpu backend: out of memory copying %zu MB of weights (NC_CPU_WEIGHTS=copy)", total >> 20);
        goto done;
    }
    st->owned = nc_xrealloc(st->owned, (size_t)(st->n_owned + 1) * sizeof(void *));
    st->owned[st->n_owned++] = arena;
    size_t off = 0;
    for (int i = 0; i < n_copy; i++) {
        copy_job j = {mats[i]->data, arena + off, matrix_bytes(mats[i])};
        nc_threadpool_run(st->pool, copy_worker, &j, st->n_tasks);
        nc_release_pages(mats[i]->data, j.bytes);
        mats[i]->data = arena + off;
        off += (j.bytes + 63) & ~(size_t)63;
    }
    *placement = "copied to 2 MB pages";
done:
    free(mats);
    return rc;
}
