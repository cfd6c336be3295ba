/*
 * cuda_internal.cuh: state and kernel entry points shared by the CUDA
 * backend's files.
 *
 *   cuda_backend.cu   probe, init (weights -> one bf16 slab, KV pool, scratch,
 *                     rotary table), free, describe, copy_kv_block
 *   cuda_batch.cu     a batch on the host: validation, the metadata buffer
 *                     (token ids, positions, block tables, ...), sampling rows
 *   cuda_forward.cu   the forward pass (nanochat's GPT.forward, docs/model.md)
 *                     for a batch of chunks: the projections, the layer loop,
 *                     the logits, decode graphs
 *   cuda_gemv.cu      matrix-vector products of one row (batch-1 decode), bf16
 *                     and 8-bit weights
 *   cuda_gemv_rows.cu the same for 1..8 rows on the tensor cores (mma.sync,
 *                     weights straight into registers): small decode batches
 *                     and verified drafts of 8-bit weights
 *   cuda_gemm.cu      matrix products of several rows through cuBLASLt (bf16,
 *                     fp32 accumulate)
 *   cuda_gemm_skinny.cu  wgmma + TMA GEMM for 2..64 rows (sm_90a), bf16 and
 *                     8-bit weights (8-bit: also token tiles past 64 rows)
 *   cuda_gemm_q8.cu   mma.sync GEMM for any row count (sm_80+): 8-bit weights, and
 *                     every product under --deterministic
 *   cuda_q8.cuh       int8 / e4m3 conversions on the device
 *   cuda_attn_decode.cu  split-KV (flash-decoding) attention for 1-token chunks,
 *                     and under --deterministic for every token
 *   cuda_attn_prefill.cu tensor-core flash attention for prompts
 *   cuda_elementwise.cu  embedding + smear, norms, RoPE + QK-norm + KV append,
 *                     ReLU², lambdas, backout, logits rows, softcap
 *   cuda_sample.cu    softcap'd logits -> one token per row on the device
 *   cuda_persist.cu   batch-1 decode as one persistent kernel per token (sm_90)
 *
 * Numerics (docs/model.md, Precision): weights, KV cache, q and the
 * attention output are bf16 like nanochat under autocast; the residual
 * stream, every accumulation, norms and the softcap are fp32 (a GPU engine
 * may keep more precision than the reference). With --weights int8 / fp8
 * (docs/quantization.md) the matrices stay 8-bit in memory and are widened
 * exactly inside the kernels (every int8 and e4m3 value is exact in bf16
 * and fp32), the row scale applied to each dot product; with --kv-cache
 * fp8 keys and values are e4m3 with an fp32 scale per (token, kv head).
 *
 * Dimension letters as in model.h; N = tokens in the batch (sum of chunk
 * lengths), S = sequences (chunks) in the batch, R = logits rows, Q = (H +
 * 2 Hkv) D, the fused q|k|v width.
 */
#ifndef NC_BACKEND_CUDA_INTERNAL_CUH
#define NC_BACKEND_CUDA_INTERNAL_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "../../model/model.h"
#include "../../util/common.h"
#include "../backend.h"
}

typedef __nv_bfloat16 bf16;

/* Checks a CUDA runtime call; on failure records "cuda: <what>: <error>"
 * and returns -1 from the enclosing function. */
#define NC_CU_TRY(call)                                                                      \
    do {                                                                                     \
        cudaError_t nc_cu_err_ = (call);                                                     \
        if (nc_cu_err_ != cudaSuccess)                                                       \
            return nc_fail("cuda: %s: %s (%s:%d)", #call, cudaGetErrorString(nc_cu_err_),  \
                           __FILE__, __LINE__);                                              \
    } while (0)

/* Checks the last kernel launch. */
#define NC_CU_LAUNCHED(what)                                                                 \
    do {                                                                                     \
        cudaError_t nc_cu_err_ = cudaGetLastError();                                         \
        if (nc_cu_err_ != cudaSuccess)                                                       \
            return nc_fail("cuda: launching %s: %s", what, cudaGetErrorString(nc_cu_err_));  \
    } while (0)

#define NC_GEMV_MAX_ROWS 1      /* projections of this many rows use our GEMV, larger ones the GEMMs */
#define NC_FP8_ACT_MIN_ROWS 65  /* NC_CUDA_FP8_ACT: fp8 products of this many rows or more quantise their
                                   input (below, the skinny GEMM's weight-only tiles are the faster) */
#define NC_ATTN_MAX_GROUP 8     /* GQA: query heads per kv head the kernels support */
#define NC_ATTN_MAX_SPLITS 64   /* split-KV: most splits per (row, kv head) */
#define NC_ATTN_PAIR_MAX_G 2    /* paired decode attention: most query heads per kv head (registers) */
#define NC_HEAD_DIM 128         /* the attention kernels are written for D = 128 */
#define NC_ATTN_PREFILL_ROWS 128 /* query rows per prefill attention work item */
#define NC_LOGITS_CHUNK 256     /* logits rows computed per lm_head pass */
#define NC_DET_SPLIT_KEYS 256   /* --deterministic: keys per split of a row's attention, whatever the batch */

#define NC_PROF_EVENTS 1024
enum { NC_PROF_EMBED, NC_PROF_QKV, NC_PROF_ROPE, NC_PROF_ATTN, NC_PROF_WO, NC_PROF_FC, NC_PROF_PROJ, NC_PROF_LOGITS,
       NC_PROF_SAMPLE, NC_PROF_STAGES };

/* What a projection does with each output y = dot(weight row, input row)
 * (the GEMV, the skinny GEMM and cuBLASLt all take it). */
typedef enum {
    NC_EPI_STORE = 0,   /* out = y: fp32 from the GEMV (the fused decode attention reads it), bf16 from
                           the GEMMs (nanochat's bf16 linear outputs; rope_append reads them) */
    NC_EPI_ADD = 1,     /* out_f32 += y (residual add) */
    NC_EPI_RELU2 = 2,   /* out_bf16 = bf16(relu(y)^2), nanochat's MLP activation; the GEMMs round y
                           to bf16 first (a bf16 linear output), the GEMV squares it in fp32 */
    NC_EPI_SOFTCAP = 3, /* out_f32 = cap * tanh(y / cap) (logits) */
} nc_cuda_epilogue;

/* How a weight matrix's values are stored. */
typedef enum {
    NC_WEIGHT_BF16 = 0, /* bf16, row-major (float checkpoint dtypes are converted to it at init) */
    NC_WEIGHT_INT8 = 1, /* int8 q, row-major, as the model holds it: W[r, k] = scale[r] * q[r, k] */
    NC_WEIGHT_FP8 = 2,  /* e4m3fn q, row-major: W[r, k] = scale[r] * e4m3(q[r, k]) (sm_89+) */
} nc_cuda_weight_format;

/* A weight matrix as the projections read it (cuda_forward.cu: project).
 * A new storage format is a new format here and a new branch in project(). */
typedef struct {
    const void *data;             /* [rows, cols] on the device */
    int rows, cols;
    int used_rows;                /* leading rows whose outputs are wanted (lm_head: V of Vp); the GEMV
                                     computes only these, the GEMMs all rows (their tiles like the
                                     padded shape) */
    nc_cuda_weight_format format;
    const float *scale;           /* [rows] fp32 row scales of an 8-bit format, else NULL */
} nc_cuda_weight;

typedef struct {
    nc_cuda_weight qkv;           /* [Q, C] c_q | c_k | c_v rows */
    nc_cuda_weight o;             /* [C, H*D] attention output projection (c_proj) */
    nc_cuda_weight fc;            /* [F, C] */
    nc_cuda_weight proj;          /* [C, F] */
    bf16 *ve;                     /* [Vp, Hkv*D] value embeddings, or NULL */
    float *ve_gate;               /* [Hkv, ve_gate_channels], or NULL */
    int32_t window;               /* INT32_MAX: full attention */
    float resid_lambda, x0_lambda; /* bf16-rounded (V2+), else 1, 0 */
} nc_cuda_layer;

/* Per-row sampling settings as the sampling kernel reads them. */
typedef struct {
    float temperature, top_p, min_p;
    int32_t top_k;
    unsigned long long rng[2];
    int32_t want_logprob; /* also write logprob: the sampled token's temperature-1 log-softmax */
    float logprob;
    int32_t skip;         /* draws to skip before this row's (position skip of a verified chunk) */
} nc_cuda_samp;

/* NC_CUDA_GEMV_Q8, resolved at creation: which kernel multiplies one row
 * by 8-bit weights (cuda_gemv.cu). */
typedef enum { NC_GEMV_Q8_FIRST, NC_GEMV_Q8_STREAM, NC_GEMV_Q8_TC } nc_cuda_gemv_q8;

/* NC_CUDA_VERIFY_PAIRS, resolved at creation (cuda_batch.cu, pair_rows). */
typedef enum { NC_PAIRS_OFF, NC_PAIRS_AUTO, NC_PAIRS_ON } nc_cuda_pairs;

/* Where each metadata array of the current batch lives inside the int32
 * meta buffer (offsets in int32 units, same on host and device). Arrays are
 * packed by their actual lengths, block tables last, so one copy of exactly
 * the used bytes uploads a batch; a decode batch of nb rows always gets the
 * same offsets, which lets its CUDA graph be replayed. */
typedef struct {
    int64_t tok, tpos, tprev, tseq;     /* [N] token id, position, previous token (-1), chunk */
    int64_t s_tok0, s_ntok, s_pos, s_bt;/* [S] first token, length, position, block-table offset */
    int64_t s_new;                      /* [S] first position of the chunk's sequence this forward writes
                                           (its position, or a verified chunk's first as decode rows) */
    int64_t dec_seq;                    /* [n_dec] chunks of one token (decode attention rows) */
    int64_t dec_grp;                    /* [n_dec][2] paired batches: each group's first row and row count */
    int64_t items;                      /* [n_items][2] (chunk, first query row) prefill tiles */
    int64_t lrow;                       /* [R] token index of each logits row */
    int64_t bt;                         /* packed block tables */
    int64_t used;                       /* int32 count in use for this batch */
} nc_cuda_meta_layout;

/* Device address of metadata array f of the current batch. */
#define META(cu, f) ((cu)->meta_d + (cu)->ml.f)

/* The shape of the batch being run (nc_cuda_batch_pack). */
typedef struct {
    int N, S, R;        /* tokens, chunks, logits rows */
    int n_dec;          /* one-token chunks (decode attention rows) */
    int n_items;        /* prefill attention work items (chunk, 128-row query tile) */
    bool decode_only;   /* every chunk is one token asking for its logits */
    int dec_group;      /* rows per decode attention group: 2 where the rows of a verified chunk run
                           in pairs (cuda_batch.cu, pair_rows), else 1 */
} nc_cuda_batch;

typedef struct nc_cuda_gemm_cache nc_cuda_gemm_cache;
typedef struct nc_cuda_skinny_state nc_cuda_skinny_state;
typedef struct nc_cuda nc_cuda;
typedef struct nc_cuda_persist nc_cuda_persist;

/* A backend that computes one rank's share of a tensor-parallel engine
 * (cuda_tp.cu) is an ordinary one with its shard's shapes plus this: the
 * forward pass adds up the row-parallel products across ranks, and ranks
 * other than 0 compute no logits. NULL on a single GPU. */
typedef struct {
    int rank;
    /* Sums x[0 .. n*C) over the ranks (all-reduce, on cu->stream). */
    int (*all_reduce)(nc_cuda *cu, int n);
    /* Waits for cu->stream, watching the group for errors and a deadline
     * (in place of a plain cudaStreamSynchronize, which a dead peer could
     * block forever). */
    int (*wait)(nc_cuda *cu, const char *what);
} nc_cuda_tp_hooks;

struct nc_cuda {
    nc_model_config cfg;
    int L, C, H, Hkv, D, F, V, Vp, Q, G; /* G = H / Hkv (a tensor-parallel rank's own counts) */
    int device, sm_count, cc_major, cc_minor;
    nc_backend_env env;                /* the switches read at creation (backend.h) */
    char description[512];
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    nc_cuda_gemm_cache *gemm_cache;
    nc_cuda_skinny_state *skinny;      /* the sm_90a GEMM for 2..64 rows, or NULL (cuBLASLt only) */
    /* --deterministic (docs/performance.md, Batch invariance): every
     * product through the mma.sync GEMM, every token's attention through
     * attn_det with splits of NC_DET_SPLIT_KEYS keys; det_splits = the most
     * splits a row can need (the partials' stride) */
    bool det;
    int det_splits;

    /* weights: one slab */
    void *slab;
    size_t slab_bytes;
    nc_cuda_weight_format layer_format; /* of the layers' matrices (lm_head: lm_head.format) */
    bf16 *wte;                         /* [Vp, C] */
    nc_cuda_weight lm_head;            /* [Vp, C], V rows used */
    nc_cuda_layer *layers;             /* [L] host array of device pointers */
    float *smear_gate;                 /* [smear_channels] or NULL */
    float smear_lambda, backout_lambda; /* bf16-rounded */

    /* paged KV cache: layout [L][n_blocks][Hkv][64][D] for k and for v,
     * bf16 (kc, vc), or with --kv-cache fp8 e4m3 bytes (kc8, vc8) and one
     * fp32 scale per (token, kv head) in ksc, vsc [L][n_blocks][Hkv][64];
     * the other pair NULL */
    bool kv_fp8;
    bf16 *kc, *vc;
    uint8_t *kc8, *vc8;
    float *ksc, *vsc;
    int64_t n_blocks;
    float2 *rope;                      /* [rope_len][D/2] (cos, sin), bf16-rounded */
    int64_t rope_len;

    /* scratch (N = max_tokens) */
    int max_tokens, max_seqs, logits_rows;
    float *x, *x0, *xb;                /* [N, C] residual, x0 (V2+), backout copy (V6) */
    float *qkv;                        /* [N, Q] q|k|v: fp32 from the GEMV, bf16 [N, Q] from the GEMMs */
    float *xr;                         /* [logits_rows, C] gathered rows (GEMV lm_head) */
    float *logits;                     /* [logits_rows, Vp] */
    float *part;                       /* split-KV partials */
    int64_t part_floats;
    bf16 *h;                           /* [N, C] GEMM input rows: normed x, or the normed logits rows */
    bf16 *q;                           /* [N, H, D] */
    bf16 *attn;                        /* [N, H*D] */
    bf16 *u;                           /* [N, F] MLP hidden */
    /* NC_CUDA_FP8_ACT: products of fp8 weights with more than
     * NC_FP8_ACT_MIN_ROWS rows on the fp8 tensor cores (the skinny GEMM's
     * e4m3 variant, or cuBLASLt), their
     * bf16 input rows quantised to e4m3 with one scale per row (fp8_act;
     * else NULL) */
    bool fp8_act;
    uint8_t *act8;                     /* [N, max(C, F, H*D)] e4m3 */
    float *act8_scale;                 /* [N] */

    /* batch metadata */
    nc_cuda_meta_layout ml;            /* of the batch being run */
    int64_t meta_cap, max_items;       /* int32 capacity; prefill tiles per batch */
    int32_t *meta_h, *meta_d;          /* pinned host / device, meta_cap int32 */
    nc_cuda_samp *samp_h, *samp_d;     /* [max_seqs] */
    int32_t *out_tok_h, *out_tok_d;    /* [max_seqs] sampled ids */
    int *sample_chunk;                 /* [max_seqs] chunk index of each sampled row (host) */
    int *sample_pos;                   /* [max_seqs] its position in a verified chunk, -1: a LAST chunk */
    nc_seq_chunk *verify_rows;         /* [max_seqs] a batch with its verified chunks as decode rows */
    int32_t *verify_new;               /* [max_seqs] each such row's s_new */
    int32_t *verify_pair;              /* [max_seqs] each such row's index in its verified chunk where that
                                          chunk's rows run in pairs, else -1 (cuda_batch.cu) */
    nc_cuda_pairs verify_pairs;        /* NC_CUDA_VERIFY_PAIRS, off where the model or mode has no
                                          paired kernel */
    float *logits_h;                   /* pinned [logits_rows, V] */

    /* decode graphs, by batch size (index nb, 1..max_seqs), then those of
     * paired batches (max_seqs + 1 + nb) */
    cudaGraphExec_t *graphs;
    bool *graph_seen;                  /* sizes that ran eagerly once (captured on the second) */
    bool use_graphs;                   /* NC_CUDA_GRAPHS, off while profiling */
    bool pdl;                          /* programmatic dependent launch of the decode kernels (sm_90) */
    bool have_wgmma;                   /* this binary's sm_90a code runs here (wgmma kernels usable) */
    int *attn_count;                   /* [max_seqs * Hkv] split-KV arrival counters (0 between uses) */
    nc_cuda_gemv_q8 gemv_q8;           /* NC_CUDA_GEMV_Q8 */
    int gemv_rows_max;                 /* NC_CUDA_GEMV_ROWS: the most rows of 8-bit weights the tc GEMV takes
                                          (1: none past one, which stays with the GEMV) */
    float *gemv_rows_ws;               /* its split partials, gemv_rows_ws_floats */
    int *gemv_rows_count;              /* [gemv_rows_tiles] its arrival counters (0 between uses) */
    size_t gemv_rows_ws_floats, gemv_rows_tiles;
    nc_cuda_persist *persist;          /* the persistent batch-1 decode kernel, or NULL (graphs) */

    /* NC_CUDA_PROFILE=1: per-stage device time of the latest forward
     * (events between stages, eager launches, no graphs), printed to stderr
     * when the backend is freed */
    bool profile;
    cudaEvent_t prof_ev[NC_PROF_EVENTS];
    int prof_stage[NC_PROF_EVENTS], prof_n;
    double prof_ms[NC_PROF_STAGES];

    const nc_cuda_tp_hooks *tp;        /* tensor parallel: this rank's hooks, else NULL */
};

static inline nc_cuda *nc_cuda_of(nc_backend *b) { return (nc_cuda *)b->impl; }

/* A tensor-parallel rank other than 0: its logits would be rank 0's, so
 * it computes none. */
static inline bool nc_cuda_tp_follower(const nc_cuda *cu) { return cu->tp && cu->tp->rank > 0; }

/* Layer `layer`'s part of the KV pool: bf16 keys and values, or (fp8
 * cache) e4m3 ones and their scales; the other members NULL. */
typedef struct {
    bf16 *kc, *vc;
    uint8_t *kc8, *vc8;
    float *ksc, *vsc;
} nc_cuda_kv_layer;

static inline nc_cuda_kv_layer nc_cuda_kv_of(const nc_cuda *cu, int layer) {
    size_t vecs = (size_t)cu->n_blocks * cu->Hkv * NC_KV_BLOCK_TOKENS, elems = vecs * cu->D;
    nc_cuda_kv_layer kv = {NULL, NULL, NULL, NULL, NULL, NULL};
    if (cu->kv_fp8) {
        kv.kc8 = cu->kc8 + layer * elems, kv.vc8 = cu->vc8 + layer * elems;
        kv.ksc = cu->ksc + layer * vecs, kv.vsc = cu->vsc + layer * vecs;
    } else {
        kv.kc = cu->kc + layer * elems, kv.vc = cu->vc + layer * elems;
    }
    return kv;
}

/* Split-KV splits for a decode batch of nb rows: enough CTAs for ~2 waves. */
int nc_cuda_decode_splits(const nc_cuda *cu, int nb);

/* ==== cuda_gemv.cu ==== */

/* out[r] = epilogue(s * dot(W[r, :K], in[:K])) for r < rows (w->used_rows
 * rows of w, K = w->cols), one input row (fp32 or bf16: in_bf16); s = the
 * row scale of an 8-bit w (1 for bf16), times 1/rms(in) when norm
 * (RMSNorm folded in). Launched with programmatic dependent launch when
 * cu->pdl: its weight loads overlap the previous kernel's tail. */
int nc_cuda_gemv(nc_cuda *cu, const nc_cuda_weight *w, const void *in, bool in_bf16, bool norm,
                 nc_cuda_epilogue epi, void *out);

/* ==== cuda_gemv_rows.cu ==== */

/* out = epilogue(s * in · Wᵀ) for n = 1..8 input rows of w->cols values
 * (fp32, RMS-normed on the way when norm, or bf16: in_bf16), w->used_rows
 * outputs per row, row stride w->rows; s as nc_cuda_gemv's. One row: the
 * GEMV's output conventions (fp32 store); 2+: the GEMMs' (bf16 store and
 * ReLU²). Deterministic; a row's outputs do not depend on n. */
int nc_cuda_gemv_rows(nc_cuda *cu, const nc_cuda_weight *w, const void *in, bool in_bf16, bool norm, int n,
                      nc_cuda_epilogue epi, void *out);
/* Whether nc_cuda_gemv_rows takes w with n rows (shape, scratch). */
bool nc_cuda_gemv_rows_fits(const nc_cuda *cu, const nc_cuda_weight *w, int n);
/* Its scratch for this model's shapes: split partials (floats) and tiles
 * (arrival counters). */
void nc_cuda_gemv_rows_scratch(const nc_cuda *cu, size_t *ws_floats, size_t *tiles);

/* ==== cuda_gemm.cu ==== */

int nc_cuda_gemm_init(nc_cuda *cu);
void nc_cuda_gemm_free(nc_cuda *cu);
/* Y[n, m] (row-major, ld m) = epilogue(X[n, k] · W[m, k]ᵀ), X and W bf16
 * row-major, through cuBLASLt (bf16 Y for STORE and RELU2, fp32 for ADD and
 * SOFTCAP) plus a ReLU² / softcap pass. */
int nc_cuda_lt_matmul(nc_cuda *cu, const bf16 *W, const bf16 *X, void *Y, int m, int n, int k,
                      nc_cuda_epilogue epi);
/* The same product for an fp8 w on the fp8 tensor cores: X8 [n, w->cols]
 * e4m3 rows with one fp32 scale each (xs, nc_cuda_quant_rows_e4m3), the
 * weights' row scales and the rows' scales applied by cuBLASLt to each
 * output (outer-vector scaling), then the epilogue. */
int nc_cuda_lt_matmul_fp8(nc_cuda *cu, const nc_cuda_weight *w, const uint8_t *X8, const float *xs, void *Y, int n,
                          nc_cuda_epilogue epi);
/* Whether cuBLASLt has an fp8 product with per-row scales on this GPU
 * (asked once, for a model-wide square product of 128 rows, with a bf16
 * output and with an fp32 one accumulated). */
int nc_cuda_lt_fp8_probe(nc_cuda *cu);

/* ==== cuda_gemm_skinny.cu ==== */

/* Enables the skinny GEMM on an sm_90 device when this binary has its
 * sm_90a code, the driver encodes TMA descriptors and the kernels fit,
 * unless NC_CUDA_SKINNY=0 (for comparisons). Otherwise cu->skinny stays
 * NULL and cuBLASLt serves every batch; the backend's description says
 * which is in use. */
int nc_cuda_skinny_init(nc_cuda *cu);
void nc_cuda_skinny_free(nc_cuda *cu);
/* Whether the skinny GEMM serves Y[n, w->rows] = X[n, w->cols] · Wᵀ: bf16
 * weights for 2..64 rows, 8-bit ones for 2 rows and more (token tiles of
 * 128 past 64). */
bool nc_cuda_skinny_fits(const nc_cuda *cu, const nc_cuda_weight *w, const void *X, const void *Y, int n);
/* As nc_cuda_lt_matmul (the epilogue and an 8-bit w's row scales fused),
 * for a product nc_cuda_skinny_fits accepts. */
int nc_cuda_skinny_gemm(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n, nc_cuda_epilogue epi);
/* Whether nc_cuda_skinny_gemm_rope can run the qkv product w of n rows
 * (nc_cuda_skinny_fits, and each warp of its epilogue finishes at most one
 * whole token row of a head; cuda_gemm_skinny.cu, sk_rope_ok). */
bool nc_cuda_skinny_rope_fits(const nc_cuda *cu, const nc_cuda_weight *w, const void *X, const void *Y, int n);
/* The qkv product (NC_EPI_STORE into Y = the rope arguments' qkv) with
 * RoPE + QK-norm, value embeddings and the KV-cache append of every head of
 * every row in its epilogue: the rope_append kernel's work, the same
 * nc_rope_head per (token, head), without its launch. */
int nc_cuda_skinny_gemm_rope(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n,
                             const struct nc_rope_args *rope);
/* Whether its e4m3 x e4m3 variant runs here (NC_CUDA_FP8_ACT's products). */
bool nc_cuda_skinny_fp8_act_ready(const nc_cuda *cu);
/* The same product for fp8 weights and e4m3 input rows X8 [n, w->cols]
 * with one scale per row (nc_cuda_quant_rows_e4m3) on the fp8 tensor
 * cores, in 128- or 256-token tiles; where nc_cuda_skinny_fits and
 * nc_cuda_skinny_fp8_act_ready accept. */
int nc_cuda_skinny_gemm_fp8_act(nc_cuda *cu, const nc_cuda_weight *w, const uint8_t *X8, const float *xscale, void *Y,
                                int n, nc_cuda_epilogue epi);

/* ==== cuda_gemm_q8.cu ==== */

/* Sets the kernels' shared memory size. */
int nc_cuda_mma_gemm_init(nc_cuda *cu);
/* Y[n, m] = epilogue(scale[m] · X[n, k] · W[m, k]ᵀ) for a w of any format
 * (bf16: no scale; fp8 on sm_89+), X bf16 row-major, any n >= 1 (tensor
 * cores, mma.sync: sm_80+); Y as nc_cuda_lt_matmul's. A row's outputs do
 * not depend on n or on the other rows (no split-K). */
int nc_cuda_mma_gemm(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n, nc_cuda_epilogue epi);

/* ==== cuda_elementwise.cu ==== */

/* x[t] = rmsnorm(wte[tok[t]]) (+ V6 smear); x0 copy when x0 != NULL. */
int nc_cuda_embed(nc_cuda *cu, int n);
/* V2+: x = resid_lambda * x + x0_lambda * x0 over n rows. */
int nc_cuda_lambdas(nc_cuda *cu, int layer, int n);
/* out[t] = bf16(rmsnorm(x[t])) for n rows of width C. */
int nc_cuda_rmsnorm_bf16(nc_cuda *cu, const float *x, bf16 *out, int n);
/* RoPE + QK-norm (+ scale) of q and k, value embeddings, KV append: reads
 * the bf16 qkv [n, Q] of the GEMM path (like nanochat's bf16 linear outputs
 * under autocast) and writes q [n, H, D] and the cache of `layer`. */
int nc_cuda_rope_append(nc_cuda *cu, int layer, int n);
/* u = bf16(relu(u)^2) in place, count values (cuBLASLt path). */
int nc_cuda_relu2(nc_cuda *cu, bf16 *u, int64_t count);
/* out[r, :k] = e4m3(x[r, :k] / scale[r]), scale[r] = max |x[r, :]| / 448
 * (1 for a zero row), for n rows of k bf16 values (k a multiple of 8). */
int nc_cuda_quant_rows_e4m3(nc_cuda *cu, const bf16 *x, int n, int k, uint8_t *out, float *scale);
/* Logits input rows: rows r < R of token lrow[r0 + r], with the V6
 * backout subtracted; fp32 into xr (for the GEMV, which folds the norm)
 * or rmsnorm'ed bf16 into h (for the GEMMs). */
int nc_cuda_gather_rows(nc_cuda *cu, int r0, int R, bool to_bf16);
/* y[r, c] = cap * tanh(y[r, c] / cap) for rows x cols values (row stride
 * cols; cuBLASLt path). */
int nc_cuda_softcap(nc_cuda *cu, float *y, int rows, int cols);
/* Copies the first n positions of block src into block dst (all layers;
 * an fp8 cache's scales too). */
int nc_cuda_copy_block(nc_cuda *cu, int32_t src, int32_t dst, int32_t n);

/* ==== cuda_attn_decode.cu ==== */

/* Attention for nb one-token chunks (meta dec_seq) of `layer` with
 * `splits` splits per (row, kv head); writes attn rows. fused = false: q
 * and the cache are ready (a rope_append kernel ran); true: the batch has
 * only decode rows (one, on the GEMV path) and the kernel does RoPE,
 * QK-norm and the append itself from the fp32 qkv of the GEMV. group = 2
 * (not fused): a CTA takes the rows of group z of meta dec_grp instead,
 * two rows of one verified chunk (or one row) that share each chunk of
 * keys and values it loads. */
int nc_cuda_attn_decode(nc_cuda *cu, int layer, int nb, int splits, bool fused, int group);
/* --deterministic: attention for every token of the batch (decode rows and
 * prefill chunks alike; q and the cache ready), each through the same
 * splits of NC_DET_SPLIT_KEYS keys merged in one order, so a token's output
 * depends only on its position, its keys and values. */
int nc_cuda_attn_det(nc_cuda *cu, int layer, int n);

/* ==== cuda_attn_prefill.cu ==== */

/* Flash attention for n_items (chunk, NC_ATTN_PREFILL_ROWS-row query tile) work items. */
int nc_cuda_attn_prefill(nc_cuda *cu, int layer, int n_items);
/* Picks the kernel (the wgmma one on sm_90a, NC_CUDA_FA choosing its key
 * step; else mma.sync) and sets its shared memory size. */
int nc_cuda_attn_prefill_init(nc_cuda *cu);

/* ==== cuda_sample.cu ==== */

/* One token per logits row r < R (softcapped logits, V valid columns, row
 * stride ld) with the settings in samp_d; writes out_tok_d, advances the
 * generator states in samp_d and, for rows with want_logprob, writes their
 * logprob there. */
int nc_cuda_sample(nc_cuda *cu, const float *logits, int64_t ld, int R);

/* ==== cuda_persist.cu ==== */

/* Enables the persistent kernel for batch-1 decode steps (cu->persist)
 * when NC_CUDA_PERSIST=1 on an sm_90 device running this binary's sm_90a
 * code, not --deterministic, with shapes its tiling holds (bf16 or 8-bit
 * matrices; docs/performance.md, Persistent decode); otherwise cu->persist
 * stays NULL and decode steps replay graphs. -1 + nc_error() when
 * NC_CUDA_PERSIST_BUFS asks for more slots than shared memory holds. After
 * init_kernels (have_wgmma) and the launch modes (profile). */
int nc_cuda_persist_init(nc_cuda *cu);
void nc_cuda_persist_free(nc_cuda *cu);
/* "persistent kernel (its ring)" while cu->persist, else NULL. */
const char *nc_cuda_persist_describe(const nc_cuda *cu);
/* Queues the decode step of the current batch (one row, decode_only):
 * embedding, layers and softcapped logits into cu->logits row 0. */
int nc_cuda_persist_step(nc_cuda *cu);
/* After the stream synchronised: -1 + nc_error() when the step's kernel
 * gave up at a wait (and resets its state for the next step);
 * under NC_CUDA_PROFILE fills cu->prof_ms with its stage times. */
int nc_cuda_persist_check(nc_cuda *cu);
/* NC_CUDA_PROFILE: the persistent kernel's per-stage breakdown of the last
 * profiled step (work, barrier, waits for tiles and for slots), on stderr. */
void nc_cuda_persist_print_profile(const nc_cuda *cu);

/* ==== cuda_batch.cu ==== */

/* Longest chunk asking NC_LOGITS_ALL that runs as decode rows (a decode
 * row and its drafts: the scheduler verifies at most 8 by default). */
#define NC_CUDA_VERIFY_MAX_ROWS 16

/* Validates a batch against backend.h's contract and this backend's sizes,
 * packs its metadata into cu->meta_h (layout in cu->ml) and queues the
 * upload to cu->meta_d; fills *bs. Chunks verifying drafts run as decode
 * rows where they fit (cuda_batch.cu, verify_as_rows). -1 + nc_error() on
 * a bad batch. */
int nc_cuda_batch_pack(nc_cuda *cu, const nc_batch *batch, nc_cuda_batch *bs);
/* Queues the upload of the sampling settings of the R sampled positions,
 * in batch order: one per chunk asking NC_LOGITS_LAST, every position of
 * one asking NC_LOGITS_ALL (logits row r = the r-th such position). */
int nc_cuda_sampling_pack(nc_cuda *cu, const nc_batch *batch, const nc_device_sampling *rows, int R);
/* After the sampled rows' download completed: each LAST chunk's token and
 * advanced generator state into its entries of tokens_out / rows, each ALL
 * chunk's tokens (and log-probabilities) into rows[].tokens / .logprobs. */
void nc_cuda_sampling_unpack(nc_cuda *cu, int R, nc_device_sampling *rows, int32_t *tokens_out);

/* ==== cuda_forward.cu ==== */

int nc_cuda_forward(nc_backend *b, const nc_batch *batch, float *logits);
int nc_cuda_forward_sample(nc_backend *b, const nc_batch *batch, nc_device_sampling *rows,
                           int32_t *tokens_out);

/* ==== small device helpers ==== */

__device__ __forceinline__ float nc_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float nc_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of up to 1024 threads; `red` is >= 32 floats of shared
 * memory; every thread gets the result. */
__device__ __forceinline__ float nc_block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = nc_warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return nc_warp_sum(v);
}

/* Programmatic dependent launch (sm_90): a kernel launched with the PDL
 * attribute (nc_launch) may start while its predecessor finishes; it must
 * call nc_pdl_wait() before touching anything the predecessor writes, which
 * returns once the predecessor (and, because it waited too, every earlier
 * kernel) has completed. Every kernel that precedes a PDL launch calls
 * nc_pdl_trigger() first thing so the successor's CTAs can be scheduled as
 * soon as SM room frees up. Both are no-ops without PDL / before sm_90. */
__device__ __forceinline__ void nc_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void nc_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

/* Launches `kernel` on cu->stream, with programmatic dependent launch when
 * cu->pdl: the kernel may then start while its predecessor finishes, so it
 * must call nc_pdl_wait() before it reads or writes anything an earlier
 * kernel of the forward touches (weights and the batch metadata uploaded
 * before the first kernel are safe to read before). Kernels launched plainly
 * need no wait. */
template <typename... KernelArgs, typename... Args>
static inline cudaError_t nc_launch(const nc_cuda *cu, void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                                    size_t smem, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = cu->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = cu->pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* A 16-byte load of data read once (weights streamed by the GEMVs): not
 * kept in L1, and the L2 fetches 256-byte sectors at a time. */
__device__ __forceinline__ uint4 nc_ld_stream(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* d += a · b: one mma.sync m16n8k16, bf16 in, fp32 accumulate (sm_80+);
 * a, b and d in the PTX fragment layouts. */
__device__ __forceinline__ void nc_mma_bf16(float *d, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 8 bf16 (one 16-byte chunk) -> fp32. */
__device__ __forceinline__ void nc_bf16x8_to_f32(uint4 u, float *f) {
    const __nv_bfloat162 *p = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(p[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

#endif /* NC_BACKEND_CUDA_INTERNAL_CUH */
