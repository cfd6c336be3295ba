/*
 * tp_shard.h: how tensor parallelism splits a model over N GPUs, and each
 * GPU's share as a model of its own (host side, no CUDA: the CPU tests
 * check the arithmetic).
 *
 * Megatron-style (docs/multi-device.md, Tensor parallel): each rank holds
 * a contiguous range of kv heads with their query heads (the columns of
 * c_q / c_k / c_v, the rows of attn.c_proj) and a contiguous range of the
 * MLP's hidden units (the rows of mlp.c_fc, the columns of mlp.c_proj).
 * The embedding, the norms, the lambdas and lm_head are replicated. Each
 * rank computes its heads' attention and its units' MLP, and the two
 * row-parallel products (attention out, MLP out) are partial sums that one
 * all-reduce per product adds up.
 *
 * A head count that N does not divide is split unevenly (d34's 17 heads
 * over two GPUs: 9 + 8) rather than padded: a padded 18th head would give
 * the second GPU as much work as the first and change nothing else. The
 * MLP units then even the load out: they are handed out in 64-unit
 * granules (the kernels' tile) so that every rank streams as close as
 * possible to the same number of weight bytes per token: d34 over two GPUs
 * gives 9 heads + 4224 units and 8 heads + 4480 units, both exactly 6 C²
 * weights per layer.
 *
 * A rank's share is an nc_model with n_head, n_kv_head and mlp_hidden set
 * to its own counts: the single-GPU backend runs it unchanged. Its tensors
 * are views into the full model where the share is a run of whole rows,
 * and copies where it is a set of columns.
 */
#ifndef NC_BACKEND_TP_SHARD_H
#define NC_BACKEND_TP_SHARD_H

#include "../model/model.h"

/* The most GPUs one engine spans (NVLink domains of one host). */
#define NC_TP_MAX_RANKS 16
/* The MLP is split in runs of this many hidden units. */
#define NC_TP_MLP_GRANULE 64

typedef struct {
    int n;                            /* ranks */
    int kv0[NC_TP_MAX_RANKS + 1];     /* rank r holds kv heads [kv0[r], kv0[r+1]) */
    int head0[NC_TP_MAX_RANKS + 1];   /* ... and query heads [head0[r], head0[r+1]) */
    int mlp0[NC_TP_MAX_RANKS + 1];    /* ... and MLP hidden units [mlp0[r], mlp0[r+1]) */
} nc_tp_split;

/* The split of a model of config `c` over `n` ranks; -1 + nc_error() when
 * it cannot be split that way (fewer kv heads or MLP granules than ranks,
 * an MLP width that is not a multiple of the granule). */
int nc_tp_split_plan(const nc_model_config *c, int n, nc_tp_split *out);

/* Rank r's share of `m` (float or 8-bit weights; an 8-bit matrix's row
 * scales go with its rows): a model that borrows m's memory (m must
 * outlive it) plus copies of the column slices. Free with nc_model_free.
 * NULL + nc_error() on failure. */
nc_model *nc_tp_shard(const nc_model *m, const nc_tp_split *sp, int r);

#endif /* NC_BACKEND_TP_SHARD_H */
