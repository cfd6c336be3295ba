/*
 * prefetch.h: brings a model's mmapped weights into memory ahead of the
 * backend, with progress. The backend's first pass over the weights (a
 * copy to the GPU, to huge pages, or the first forward) reads them from
 * disk page by page; for a multi-gigabyte checkpoint on a cold page cache
 * that is seconds of silence. Reading them here first shows that time as
 * a progress bar and costs nothing when they are already in memory.
 */
#ifndef NC_MODEL_PREFETCH_H
#define NC_MODEL_PREFETCH_H

#include "model.h"
#include "util/progress.h"

/* Reads every page of m's tensors that is not in memory yet, reporting
 * bytes on `p` under `label`. Shows nothing when everything is resident
 * already. */
void nc_model_prefetch(const nc_model *m, nc_progress *p, const char *label);

#endif /* NC_MODEL_PREFETCH_H */
