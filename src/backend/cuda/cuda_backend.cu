/*
 * cuda_backend.cu: the CUDA backend's lifetime: probe, init, free, describe,
 * copy_kv_block, and the ops table (see cuda_internal.cuh for the map of
 * files).
 *
 * init uploads every weight once into one device slab as bf16 (fp32 and f16
 * checkpoint tensors are converted on the GPU, chunk by chunk through two
 * pinned staging buffers so disk reads, PCIe and conversion overlap), with
 * c_q | c_k | c_v fused into one [Q, C] matrix per layer so a decode step
 * reads the attention input once. 8-bit matrices (--weights int8 / fp8,
 * docs/quantization.md) are uploaded as they are, 1 byte per weight, with
 * their fp32 row scales beside them (fused the same way); fp8 needs an
 * sm_89+ card. It then allocates the paged KV pool, bf16 or with
 * --kv-cache fp8 e4m3 plus a scale per (token, kv head) (zeroed: masked
 * keys of a tile multiply finite values), the rotary table
 * (bf16-rounded like nanochat under autocast), all scratch for
 * max_batch_tokens / max_seqs, and pinned metadata buffers, so the token
 * loop never allocates. Memory is checked up front: an OOM names the bytes
 * needed and free.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_hopper.cuh"

extern "C" {
#include "../../util/numeric.h"
}

#define STAGE_BYTES (32u << 20) /* per pinned staging buffer */
#define ROPE_MAX_POSITIONS (1 << 18)

/* ==== probe ==== */

extern "C" int nc_cuda_device_count(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

extern "C" bool nc_cuda_probe_device(int device, char *why, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(why, n, "no usable CUDA driver/device (%s)", cudaGetErrorString(e));
        cudaGetLastError();
        return false;
    }
    if (count == 0) {
        snprintf(why, n, "no CUDA device found");
        return false;
    }
    if (device < 0 || device >= count) {
        snprintf(why, n, "no such device: this machine has %d (cuda:0 .. cuda:%d)", count, count - 1);
        return false;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        snprintf(why, n, "cannot query CUDA device %d", device);
        cudaGetLastError();
        return false;
    }
    if (prop.major < 8) {
        snprintf(why, n, "%s has compute capability %d.%d; the CUDA backend needs >= 8.0 (Ampere)",
                 prop.name, prop.major, prop.minor);
        return false;
    }
    snprintf(why, n, "%s", prop.name);
    return true;
}

extern "C" bool nc_cuda_probe(char *why, size_t n) { return nc_cuda_probe_device(0, why, n); }

/* ==== weight upload ==== */

__global__ void convert_to_bf16_kernel(const void *src, int dtype, bf16 *dst, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        if (dtype == NC_DTYPE_F32)
            dst[i] = __float2bfloat16_rn(((const float *)src)[i]);
        else if (dtype == NC_DTYPE_F16)
            dst[i] = __float2bfloat16_rn(__half2float(((const __half *)src)[i]));
        else
            dst[i] = ((const bf16 *)src)[i];
    }
}

typedef struct {
    void *host[2];      /* pinned */
    void *dev[2];
    cudaEvent_t done[2];
    int turn;
} upload_stage;

static bool is_8bit(nc_dtype d) { return d == NC_DTYPE_I8 || d == NC_DTYPE_F8_E4M3; }

/* Uploads tensor t into dst: f32 / f16 / bf16 converted to bf16, 8-bit
 * matrices (I8, F8_E4M3) as they are. */
static int upload_tensor(nc_cuda *cu, upload_stage *st, void *dst, const nc_tensor *t) {
    if (t->dtype != NC_DTYPE_F32 && t->dtype != NC_DTYPE_F16 && t->dtype != NC_DTYPE_BF16 && !is_8bit(t->dtype))
        return nc_fail("cuda: tensor %s has dtype %s; expected f32, f16, bf16, i8 or f8_e4m3", t->name,
                       nc_dtype_name(t->dtype));
    size_t es = nc_dtype_size(t->dtype);
    int64_t numel = nc_tensor_numel(t);
    int64_t per = STAGE_BYTES / es;
    for (int64_t off = 0; off < numel; off += per) {
        int64_t cnt = NC_MIN(per, numel - off);
        int k = st->turn;
        st->turn ^= 1;
        NC_CU_TRY(cudaEventSynchronize(st->done[k]));
        memcpy(st->host[k], (const char *)t->data + off * es, (size_t)cnt * es);
        if (is_8bit(t->dtype)) {
            NC_CU_TRY(cudaMemcpyAsync((uint8_t *)dst + off, st->host[k], (size_t)cnt, cudaMemcpyHostToDevice,
                                      cu->stream));
        } else {
            NC_CU_TRY(cudaMemcpyAsync(st->dev[k], st->host[k], (size_t)cnt * es, cudaMemcpyHostToDevice,
                                      cu->stream));
            int blocks = (int)NC_MIN((cnt + 255) / 256, (int64_t)4 * cu->sm_count * 8);
            convert_to_bf16_kernel<<<blocks, 256, 0, cu->stream>>>(st->dev[k], (int)t->dtype, (bf16 *)dst + off,
                                                                   cnt);
            NC_CU_LAUNCHED("convert_to_bf16");
        }
        NC_CU_TRY(cudaEventRecord(st->done[k], cu->stream));
    }
    return 0;
}

/* fp32 copy of a small tensor into device memory at dst. */
static int upload_small_f32(nc_cuda *cu, float *dst, const nc_tensor *t) {
    int64_t n = nc_tensor_numel(t);
    float *tmp = (float *)nc_xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) tmp[i] = nc_tensor_get_f32(t, i);
    cudaError_t e = cudaMemcpy(dst, tmp, (size_t)n * sizeof(float), cudaMemcpyHostToDevice);
    free(tmp);
    if (e != cudaSuccess) return nc_fail("cuda: uploading %s: %s", t->name, cudaGetErrorString(e));
    return 0;
}

/* ==== slab layout ==== */

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

typedef struct {
    size_t wte, lm_head, lm_head_scale, smear;
    size_t *wqkv, *wo, *wfc, *wproj, *ve, *ve_gate; /* [L] */
    size_t *sqkv, *so, *sfc, *sproj;                /* [L] row scales of 8-bit matrices */
    size_t total;
} slab_layout;

/* Bytes per weight of the layers' matrices and of lm_head as the slab
 * holds them: 1 for 8-bit ones, 2 (bf16) otherwise. */
static size_t layer_weight_bytes(const nc_model *m) { return m->weights == NC_WEIGHTS_FLOAT ? 2 : 1; }
static size_t lm_head_weight_bytes(const nc_model *m) { return m->lm_head_scale ? 1 : 2; }

/* Offsets of every weight in the slab; slab_free releases the plan. */
static void slab_plan(const nc_model *m, const nc_cuda *cu, slab_layout *s) {
    size_t *arrays = (size_t *)nc_xcalloc((size_t)10 * cu->L, sizeof(size_t));
    s->wqkv = arrays, s->wo = arrays + cu->L, s->wfc = arrays + 2 * cu->L;
    s->wproj = arrays + 3 * cu->L, s->ve = arrays + 4 * cu->L, s->ve_gate = arrays + 5 * cu->L;
    s->sqkv = arrays + 6 * cu->L, s->so = arrays + 7 * cu->L, s->sfc = arrays + 8 * cu->L;
    s->sproj = arrays + 9 * cu->L;
    size_t off = 0, C = cu->C, D = cu->D, es = layer_weight_bytes(m);
    bool q8 = m->weights != NC_WEIGHTS_FLOAT;
#define TAKE(field, bytes) (field = off, off = align256(off + (bytes)))
    TAKE(s->wte, (size_t)cu->Vp * C * 2);
    TAKE(s->lm_head, (size_t)cu->Vp * C * lm_head_weight_bytes(m));
    s->lm_head_scale = (size_t)-1;
    if (m->lm_head_scale) TAKE(s->lm_head_scale, (size_t)cu->Vp * 4);
    for (int l = 0; l < cu->L; l++) {
        TAKE(s->wqkv[l], (size_t)cu->Q * C * es);
        TAKE(s->wo[l], C * (size_t)cu->H * D * es);
        TAKE(s->wfc[l], (size_t)cu->F * C * es);
        TAKE(s->wproj[l], C * (size_t)cu->F * es);
        if (q8) {
            TAKE(s->sqkv[l], (size_t)cu->Q * 4);
            TAKE(s->so[l], C * 4);
            TAKE(s->sfc[l], (size_t)cu->F * 4);
            TAKE(s->sproj[l], C * 4);
        }
        const nc_layer_weights *lw = &m->layers[l];
        s->ve[l] = s->ve_gate[l] = (size_t)-1;
        if (lw->value_embed) TAKE(s->ve[l], (size_t)cu->Vp * cu->Hkv * D * 2);
        if (lw->ve_gate) TAKE(s->ve_gate[l], (size_t)nc_tensor_numel(lw->ve_gate) * 4);
    }
    s->smear = (size_t)-1;
    if (m->smear_gate) TAKE(s->smear, (size_t)nc_tensor_numel(m->smear_gate) * 4);
#undef TAKE
    s->total = off;
}

static void slab_free(slab_layout *s) { free(s->wqkv); }

static int upload_weights(nc_cuda *cu, const nc_model *m, const slab_layout *s) {
    upload_stage st;
    memset(&st, 0, sizeof st);
    int rc = -1;
    for (int k = 0; k < 2; k++) {
        if (cudaMallocHost(&st.host[k], STAGE_BYTES) != cudaSuccess ||
            cudaMalloc(&st.dev[k], STAGE_BYTES) != cudaSuccess ||
            cudaEventCreateWithFlags(&st.done[k], cudaEventDisableTiming) != cudaSuccess) {
            cudaGetLastError();
            nc_fail("cuda: cannot allocate %u MiB staging buffers for the weight upload",
                    2 * (STAGE_BYTES >> 20));
            goto out;
        }
        cudaEventRecord(st.done[k], cu->stream);
    }
    {
        char *base = (char *)cu->slab;
        size_t C = cu->C, D = cu->D, es = layer_weight_bytes(m);
        if (upload_tensor(cu, &st, base + s->wte, m->wte)) goto out;
        if (upload_tensor(cu, &st, base + s->lm_head, m->lm_head)) goto out;
        if (m->lm_head_scale && upload_small_f32(cu, (float *)(base + s->lm_head_scale), m->lm_head_scale)) goto out;
        for (int l = 0; l < cu->L; l++) {
            const nc_layer_weights *lw = &m->layers[l];
            char *qkv = base + s->wqkv[l];
            size_t k_row0 = (size_t)cu->H * D, v_row0 = (size_t)(cu->H + cu->Hkv) * D;
            if (upload_tensor(cu, &st, qkv, lw->c_q) || upload_tensor(cu, &st, qkv + k_row0 * C * es, lw->c_k) ||
                upload_tensor(cu, &st, qkv + v_row0 * C * es, lw->c_v) ||
                upload_tensor(cu, &st, base + s->wo[l], lw->attn_proj) ||
                upload_tensor(cu, &st, base + s->wfc[l], lw->mlp_fc) ||
                upload_tensor(cu, &st, base + s->wproj[l], lw->mlp_proj))
                goto out;
            if (m->weights != NC_WEIGHTS_FLOAT) {
                float *sq = (float *)(base + s->sqkv[l]);
                if (upload_small_f32(cu, sq, lw->scale.c_q) || upload_small_f32(cu, sq + k_row0, lw->scale.c_k) ||
                    upload_small_f32(cu, sq + v_row0, lw->scale.c_v) ||
                    upload_small_f32(cu, (float *)(base + s->so[l]), lw->scale.attn_proj) ||
                    upload_small_f32(cu, (float *)(base + s->sfc[l]), lw->scale.mlp_fc) ||
                    upload_small_f32(cu, (float *)(base + s->sproj[l]), lw->scale.mlp_proj))
                    goto out;
            }
            if (lw->value_embed && upload_tensor(cu, &st, base + s->ve[l], lw->value_embed))
                goto out;
            if (lw->ve_gate && upload_small_f32(cu, (float *)(base + s->ve_gate[l]), lw->ve_gate))
                goto out;
        }
        if (m->smear_gate && upload_small_f32(cu, (float *)(base + s->smear), m->smear_gate)) goto out;
        if (cudaStreamSynchronize(cu->stream) != cudaSuccess) {
            nc_fail("cuda: weight upload failed: %s", cudaGetErrorString(cudaGetLastError()));
            goto out;
        }
    }
    rc = 0;
out:
    for (int k = 0; k < 2; k++) {
        if (st.done[k]) cudaEventSynchronize(st.done[k]), cudaEventDestroy(st.done[k]);
        if (st.host[k]) cudaFreeHost(st.host[k]);
        if (st.dev[k]) cudaFree(st.dev[k]);
    }
    return rc;
}

/* ==== init: the steps ==== */

int nc_cuda_decode_splits(const nc_cuda *cu, int nb) {
    int want = (2 * cu->sm_count + nb * cu->Hkv - 1) / (nb * cu->Hkv);
    return NC_MAX(1, NC_MIN(want, NC_ATTN_MAX_SPLITS));
}

static void cuda_free(nc_backend *b);

static int check_model(const nc_model_config *c) {
    if (c->head_dim != NC_HEAD_DIM)
        return nc_fail("cuda backend: head dim %d is not supported (its attention kernels are "
                       "written for D = %d, the head dim of every published nanochat model)",
                       c->head_dim, NC_HEAD_DIM);
    if (c->n_head % c->n_kv_head || c->n_head / c->n_kv_head > NC_ATTN_MAX_GROUP)
        return nc_fail("cuda backend: %d query heads per kv head; at most %d are supported",
                       c->n_head / c->n_kv_head, NC_ATTN_MAX_GROUP);
    if (c->n_embd % 64 || c->mlp_hidden % 64)
        return nc_fail("cuda backend: n_embd (%d) and the MLP width (%d) must be multiples of 64",
                       c->n_embd, c->mlp_hidden);
    if (c->has_value_embeds && c->ve_gate_channels > c->n_embd)
        return nc_fail("cuda backend: ve_gate width %d exceeds n_embd", c->ve_gate_channels);
    return 0;
}

/* cudaMalloc with an OOM message naming the sizes. */
static int dev_alloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    if (!bytes) return 0;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        *p = NULL;
        return nc_fail("cuda: out of memory allocating %s: %.2f GiB needed, %.2f GiB free of %.2f GiB",
                       what, bytes / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0);
    }
    return 0;
}

static void read_shapes(nc_cuda *cu, const nc_model_config *c) {
    cu->cfg = *c;
    cu->L = c->n_layer, cu->C = c->n_embd, cu->H = c->n_head, cu->Hkv = c->n_kv_head;
    cu->D = c->head_dim, cu->F = c->mlp_hidden, cu->V = c->vocab_size, cu->Vp = c->padded_vocab;
    cu->Q = (cu->H + 2 * cu->Hkv) * cu->D, cu->G = cu->H / cu->Hkv;
}

/* The device, its properties and the backend's stream. */
static int open_device(nc_cuda *cu, int device, cudaDeviceProp *prop) {
    cu->device = device;
    NC_CU_TRY(cudaSetDevice(cu->device));
    NC_CU_TRY(cudaGetDeviceProperties(prop, cu->device));
    cu->sm_count = prop->multiProcessorCount;
    cu->cc_major = prop->major, cu->cc_minor = prop->minor;
    NC_CU_TRY(cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking));
    return 0;
}

/* Batch limits from the parameters (0: defaults), and the split-KV
 * partials the largest decode batch needs (--deterministic: max_seqs rows
 * of the most splits a position of the rotary table can need). */
static int size_batches(nc_cuda *cu, const nc_backend_params *p) {
    if (p->max_batch_tokens < 0 || p->max_seqs < 0 || p->n_kv_blocks < 0)
        return nc_fail("cuda backend: negative size in backend parameters");
    cu->max_tokens = p->max_batch_tokens ? p->max_batch_tokens : 2048;
    cu->max_seqs = p->max_seqs ? p->max_seqs : 64;
    cu->max_seqs = NC_MIN(cu->max_seqs, cu->max_tokens);
    cu->logits_rows = NC_MAX(NC_MIN(cu->max_tokens, NC_LOGITS_CHUNK), cu->max_seqs);
    int64_t part = 0;
    for (int nb = 1; nb <= cu->max_seqs; nb++) /* paired rows take the split count of half as many */
        part = NC_MAX(part, (int64_t)nb * nc_cuda_decode_splits(cu, (nb + 1) / 2));
    if (cu->det) {
        int64_t positions = NC_MIN((int64_t)10 * cu->cfg.sequence_len, (int64_t)ROPE_MAX_POSITIONS);
        if (p->n_kv_blocks) positions = NC_MIN(positions, (int64_t)p->n_kv_blocks * NC_KV_BLOCK_TOKENS);
        cu->det_splits = (int)((NC_MAX(positions, 1) - 1) / NC_DET_SPLIT_KEYS + 1);
        part = NC_MAX(part, (int64_t)cu->max_seqs * cu->det_splits);
    }
    cu->part_floats = part * cu->H * (cu->D + 2);
    return 0;
}

/* The widest input row of a product: C, F or H*D values. */
static size_t act8_width(const nc_cuda *cu) {
    return (size_t)NC_MAX(NC_MAX(cu->C, cu->F), cu->H * cu->D);
}

static size_t scratch_bytes(const nc_cuda *cu) {
    size_t N = cu->max_tokens, C = cu->C, R = cu->logits_rows;
    size_t f = 0;
    f += N * C * 4 * (1 + (cu->cfg.has_lambdas ? 1 : 0) + (cu->cfg.has_smear ? 1 : 0)); /* x x0 xb */
    f += N * (size_t)cu->Q * 4;                                                         /* qkv */
    f += R * C * 4 + R * (size_t)cu->Vp * 4;                                           /* xr logits */
    f += (size_t)cu->part_floats * 4;
    f += N * C * 2 + 2 * N * (size_t)cu->H * cu->D * 2 + N * (size_t)cu->F * 2;         /* h q attn u */
    if (cu->fp8_act) f += N * act8_width(cu) + N * 4;                                  /* act8 act8_scale */
    size_t ws_floats, tiles;
    nc_cuda_gemv_rows_scratch(cu, &ws_floats, &tiles);
    f += (ws_floats + tiles) * 4;                                                       /* gemv_rows */
    return f + 20 * 256;
}

/* What the memory plan found. */
typedef struct {
    size_t kv_block_bytes;   /* one KV block, all layers, keys and values */
    size_t total_bytes;      /* the device's memory */
} memory_plan;

/* Memory plan: weights, scratch and workspace first, then the KV pool
 * (p->n_kv_blocks, or as many blocks as fit, up to max_seqs full-length
 * sequences). Sets cu->n_blocks and the positions the rotary table covers;
 * fails, naming the sizes, when it does not fit. */
static int plan_memory(nc_cuda *cu, const nc_backend_params *p, size_t slab_bytes, memory_plan *mp) {
    const nc_model_config *c = &cu->cfg;
    cu->slab_bytes = slab_bytes;
    cu->lt_workspace_bytes = 32u << 20;
    size_t kv_token_bytes = (size_t)cu->L * 2 * cu->Hkv * (cu->kv_fp8 ? cu->D + sizeof(float) : cu->D * 2);
    size_t kv_block_bytes = kv_token_bytes * NC_KV_BLOCK_TOKENS;
    size_t fixed = cu->slab_bytes + scratch_bytes(cu) + cu->lt_workspace_bytes + (256u << 20);
    size_t fr = 0, tot = 0;
    NC_CU_TRY(cudaMemGetInfo(&fr, &tot));
    int64_t nblocks = p->n_kv_blocks;
    if (!nblocks) {
        int64_t per_seq = (c->sequence_len + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
        int64_t fit = fr > fixed ? (int64_t)((fr - fixed) * 0.9 / kv_block_bytes) : 0;
        nblocks = NC_MIN((int64_t)cu->max_seqs * per_seq, fit);
        if (nblocks < 1) nblocks = 1;
    }
    size_t need = fixed + (size_t)nblocks * kv_block_bytes;
    if (need > fr)
        return nc_fail("cuda: out of memory: the model (%.2f GiB), scratch and a KV pool of %lld "
                       "blocks need %.2f GiB, %.2f GiB free of %.2f GiB; lower the KV pool or batch sizes",
                       cu->slab_bytes / 1073741824.0, (long long)nblocks, need / 1073741824.0,
                       fr / 1073741824.0, tot / 1073741824.0);
    cu->n_blocks = nblocks;
    /* nanochat precomputes rotary tables for 10x the training context; the
     * CPU backend covers the same positions, so both refuse the same batches. */
    cu->rope_len = NC_MIN(NC_MIN(nblocks * NC_KV_BLOCK_TOKENS, (int64_t)10 * c->sequence_len),
                          (int64_t)ROPE_MAX_POSITIONS);
    mp->kv_block_bytes = kv_block_bytes;
    mp->total_bytes = tot;
    return 0;
}

/* The device format of a matrix the model holds as `dtype`. */
static nc_cuda_weight_format weight_format(nc_dtype dtype) {
    return dtype == NC_DTYPE_I8 ? NC_WEIGHT_INT8 : dtype == NC_DTYPE_F8_E4M3 ? NC_WEIGHT_FP8 : NC_WEIGHT_BF16;
}

/* A matrix of the slab as the projections read it: bf16, or 8-bit with its
 * row scales at scale_off. */
static nc_cuda_weight slab_matrix(char *base, size_t off, int rows, int cols, nc_cuda_weight_format f,
                                  size_t scale_off) {
    nc_cuda_weight w = {base + off, rows, cols, rows, f, f == NC_WEIGHT_BF16 ? NULL : (const float *)(base + scale_off)};
    return w;
}

/* Allocates the slab, points the weights into it and uploads them. */
static int load_weights(nc_cuda *cu, const nc_model *m, const slab_layout *sl) {
    if (dev_alloc(&cu->slab, cu->slab_bytes, "the weights")) return -1;
    char *base = (char *)cu->slab;
    int C = cu->C;
    nc_cuda_weight_format lf = cu->layer_format;
    cu->wte = (bf16 *)(base + sl->wte);
    cu->lm_head = slab_matrix(base, sl->lm_head, cu->Vp, C, cu->lm_head.format, sl->lm_head_scale);
    cu->lm_head.used_rows = cu->V; /* the padding rows' logits are never read */
    cu->layers = (nc_cuda_layer *)nc_xcalloc((size_t)cu->L, sizeof(nc_cuda_layer));
    for (int l = 0; l < cu->L; l++) {
        nc_cuda_layer *ly = &cu->layers[l];
        ly->qkv = slab_matrix(base, sl->wqkv[l], cu->Q, C, lf, sl->sqkv[l]);
        ly->o = slab_matrix(base, sl->wo[l], C, cu->H * cu->D, lf, sl->so[l]);
        ly->fc = slab_matrix(base, sl->wfc[l], cu->F, C, lf, sl->sfc[l]);
        ly->proj = slab_matrix(base, sl->wproj[l], C, cu->F, lf, sl->sproj[l]);
        ly->ve = sl->ve[l] != (size_t)-1 ? (bf16 *)(base + sl->ve[l]) : NULL;
        ly->ve_gate = sl->ve_gate[l] != (size_t)-1 ? (float *)(base + sl->ve_gate[l]) : NULL;
        ly->window = nc_config_window(&cu->cfg, l);
        ly->resid_lambda = m->resid_lambdas ? nc_round_bf16(m->resid_lambdas[l]) : 1.0f;
        ly->x0_lambda = m->x0_lambdas ? nc_round_bf16(m->x0_lambdas[l]) : 0.0f;
    }
    cu->smear_gate = sl->smear != (size_t)-1 ? (float *)(base + sl->smear) : NULL;
    cu->smear_lambda = nc_round_bf16(m->smear_lambda);
    cu->backout_lambda = nc_round_bf16(m->backout_lambda);
    return upload_weights(cu, m, sl);
}

/* The paged KV pool, zeroed so that masked slots of a tile are finite:
 * bf16 keys and values, or e4m3 ones and their fp32 scales. */
static int alloc_kv_pool(nc_cuda *cu) {
    size_t vectors = (size_t)cu->n_blocks * cu->L * cu->Hkv * NC_KV_BLOCK_TOKENS, D = cu->D;
    void **bufs[4] = {(void **)&cu->kc, (void **)&cu->vc, NULL, NULL};
    size_t bytes[4] = {vectors * D * 2, vectors * D * 2, 0, 0};
    const char *what[4] = {"the KV cache (keys)", "the KV cache (values)", "the KV cache (key scales)",
                           "the KV cache (value scales)"};
    if (cu->kv_fp8) {
        bufs[0] = (void **)&cu->kc8, bufs[1] = (void **)&cu->vc8;
        bufs[2] = (void **)&cu->ksc, bufs[3] = (void **)&cu->vsc;
        bytes[0] = bytes[1] = vectors * D;
        bytes[2] = bytes[3] = vectors * sizeof(float);
    }
    for (int i = 0; i < 4; i++) {
        if (!bufs[i]) continue;
        if (dev_alloc(bufs[i], bytes[i], what[i])) return -1;
        NC_CU_TRY(cudaMemsetAsync(*bufs[i], 0, bytes[i], cu->stream));
    }
    return 0;
}

/* Rotary table: theta = pos * (1 / base^(2j/D)) in fp32 as nanochat, cos
 * and sin rounded to bf16 (V1 always; V6 on GPU computes in bf16). */
static int build_rope_table(nc_cuda *cu) {
    int half = cu->D / 2;
    size_t n = (size_t)cu->rope_len * half;
    float2 *tab = (float2 *)malloc(n * sizeof(float2));
    if (!tab) return nc_fail("cuda: out of host memory for the rotary table");
    float inv[NC_HEAD_DIM / 2];
    for (int j = 0; j < half; j++)
        inv[j] = 1.0f / powf(cu->cfg.rope_base, (float)(2 * j) / (float)cu->D);
    for (int64_t pos = 0; pos < cu->rope_len; pos++)
        for (int j = 0; j < half; j++) {
            float th = (float)pos * inv[j];
            tab[pos * half + j] = make_float2(nc_round_bf16(cosf(th)), nc_round_bf16(sinf(th)));
        }
    int e = dev_alloc((void **)&cu->rope, n * sizeof(float2), "the rotary table");
    if (!e && cudaMemcpy(cu->rope, tab, n * sizeof(float2), cudaMemcpyHostToDevice) != cudaSuccess)
        e = nc_fail("cuda: uploading the rotary table failed");
    free(tab);
    return e ? -1 : 0;
}

/* The tensor-core GEMV's split partials and arrival counters, for the
 * products of 8-bit matrices (none with bf16 weights). */
static int alloc_gemv_rows(nc_cuda *cu) {
    nc_cuda_gemv_rows_scratch(cu, &cu->gemv_rows_ws_floats, &cu->gemv_rows_tiles);
    if (!cu->gemv_rows_tiles) return 0;
    if (dev_alloc((void **)&cu->gemv_rows_ws, NC_MAX(cu->gemv_rows_ws_floats, 1) * 4, "scratch") ||
        dev_alloc((void **)&cu->gemv_rows_count, cu->gemv_rows_tiles * sizeof(int), "scratch"))
        return -1;
    NC_CU_TRY(cudaMemset(cu->gemv_rows_count, 0, cu->gemv_rows_tiles * sizeof(int)));
    return 0;
}

/* Activations and partials for max_tokens tokens, and the cuBLASLt
 * workspace. */
static int alloc_scratch(nc_cuda *cu) {
    size_t N = cu->max_tokens, C = cu->C, R = cu->logits_rows;
    if (dev_alloc((void **)&cu->x, N * C * 4, "scratch") ||
        (cu->cfg.has_lambdas && dev_alloc((void **)&cu->x0, N * C * 4, "scratch")) ||
        (cu->cfg.has_smear && dev_alloc((void **)&cu->xb, N * C * 4, "scratch")) ||
        dev_alloc((void **)&cu->qkv, N * cu->Q * 4, "scratch") ||
        dev_alloc((void **)&cu->xr, R * C * 4, "scratch") ||
        dev_alloc((void **)&cu->logits, R * cu->Vp * 4, "scratch") ||
        dev_alloc((void **)&cu->part, (size_t)cu->part_floats * 4, "scratch") ||
        dev_alloc((void **)&cu->h, N * C * 2, "scratch") ||
        dev_alloc((void **)&cu->q, N * cu->H * cu->D * 2, "scratch") ||
        dev_alloc((void **)&cu->attn, N * cu->H * cu->D * 2, "scratch") ||
        dev_alloc((void **)&cu->u, N * cu->F * 2, "scratch") ||
        (cu->fp8_act && (dev_alloc((void **)&cu->act8, N * act8_width(cu), "scratch") ||
                         dev_alloc((void **)&cu->act8_scale, N * 4, "scratch"))) ||
        dev_alloc(&cu->lt_workspace, cu->lt_workspace_bytes, "the cuBLASLt workspace") ||
        alloc_gemv_rows(cu))
        return -1;
    return 0;
}

/* Capacity of the metadata buffer: per-token and per-chunk arrays, the
 * prefill tiles, and block tables of max_seqs sequences of the longest
 * context the rotary table allows. */
static void meta_plan(nc_cuda *cu) {
    int64_t N = cu->max_tokens, S = cu->max_seqs;
    cu->max_items = N / NC_KV_BLOCK_TOKENS + S;
    int64_t bt_cap = S * NC_MIN(cu->n_blocks, (cu->rope_len + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS);
    cu->meta_cap = 5 * N + 9 * S + 2 * cu->max_items + bt_cap;
}

/* What crosses between host and device per forward (batch metadata,
 * sampling rows, sampled ids, logits) and the split-KV arrival counters. */
static int alloc_batch_buffers(nc_cuda *cu) {
    meta_plan(cu);
    size_t mbytes = (size_t)cu->meta_cap * 4;
    NC_CU_TRY(cudaMallocHost((void **)&cu->meta_h, mbytes));
    memset(cu->meta_h, 0, mbytes);
    if (dev_alloc((void **)&cu->meta_d, mbytes, "batch metadata")) return -1;
    NC_CU_TRY(cudaMemset(cu->meta_d, 0, mbytes));
    NC_CU_TRY(cudaMallocHost((void **)&cu->samp_h, cu->max_seqs * sizeof(nc_cuda_samp)));
    if (dev_alloc((void **)&cu->samp_d, cu->max_seqs * sizeof(nc_cuda_samp), "sampling state")) return -1;
    NC_CU_TRY(cudaMallocHost((void **)&cu->out_tok_h, cu->max_seqs * sizeof(int32_t)));
    cu->sample_chunk = (int *)nc_xcalloc((size_t)cu->max_seqs, sizeof(int));
    cu->sample_pos = (int *)nc_xcalloc((size_t)cu->max_seqs, sizeof(int));
    cu->verify_rows = (nc_seq_chunk *)nc_xcalloc((size_t)cu->max_seqs, sizeof(nc_seq_chunk));
    cu->verify_new = (int32_t *)nc_xcalloc((size_t)cu->max_seqs, sizeof(int32_t));
    cu->verify_pair = (int32_t *)nc_xcalloc((size_t)cu->max_seqs, sizeof(int32_t));
    if (dev_alloc((void **)&cu->out_tok_d, cu->max_seqs * sizeof(int32_t), "sampled tokens")) return -1;
    NC_CU_TRY(cudaMallocHost((void **)&cu->logits_h, (size_t)cu->logits_rows * cu->V * sizeof(float)));

    if (dev_alloc((void **)&cu->attn_count, (size_t)cu->max_seqs * cu->Hkv * sizeof(int), "attention counters"))
        return -1;
    NC_CU_TRY(cudaMemset(cu->attn_count, 0, (size_t)cu->max_seqs * cu->Hkv * sizeof(int)));
    return 0;
}

/* Whether this binary runs wgmma code on this device: only a build for
 * sm_90a has it (a plain sm_90 or sm_80 build compiles the wgmma kernels to
 * a trap), and only a compute-capability-9 device runs sm_90a code. */
__global__ void wgmma_probe_kernel(int *out) {
#ifdef NC_HAVE_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

static int probe_wgmma(nc_cuda *cu) {
    cu->have_wgmma = false;
    if (cu->cc_major != 9) return 0;
    int *d = NULL, h = 0;
    NC_CU_TRY(cudaMalloc((void **)&d, sizeof(int)));
    wgmma_probe_kernel<<<1, 1, 0, cu->stream>>>(d);
    cudaError_t e = cudaMemcpyAsync(&h, d, sizeof(int), cudaMemcpyDeviceToHost, cu->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu->stream);
    cudaFree(d);
    if (e != cudaSuccess) /* in practice: a build without code for this card */
        return nc_fail("cuda: this build cannot run kernels on this GPU (compute capability %d.%d): %s; rebuild "
                       "with a CUDA_ARCH that includes it (see the Makefile)",
                       cu->cc_major, cu->cc_minor, cudaGetErrorString(e));
    cu->have_wgmma = h == 1;
    return 0;
}

/* The kernels' one-time setup: which ones this device runs, cuBLASLt, the
 * skinny GEMM, the prefill attention's shared memory. */
static int init_kernels(nc_cuda *cu) {
    return probe_wgmma(cu) || nc_cuda_gemm_init(cu) || nc_cuda_skinny_init(cu) || nc_cuda_mma_gemm_init(cu) ||
           nc_cuda_attn_prefill_init(cu);
}

/* Decode graphs (NC_CUDA_GRAPHS), programmatic dependent launch
 * (NC_CUDA_PDL; needs sm_90, on by default there: +9% batch-1 decode on
 * d34, dev/kernels/NOTES.md) and the profile (NC_CUDA_PROFILE, which
 * launches eagerly: no graphs). */
static int init_launch_modes(nc_cuda *cu) {
    cu->graphs = (cudaGraphExec_t *)nc_xcalloc(2 * ((size_t)cu->max_seqs + 1), sizeof(cudaGraphExec_t));
    cu->graph_seen = (bool *)nc_xcalloc(2 * ((size_t)cu->max_seqs + 1), sizeof(bool));
    cu->use_graphs = cu->env.cuda_graphs;
    cu->pdl = cu->env.cuda_pdl && cu->cc_major >= 9;
    cu->profile = cu->env.cuda_profile;
    if (cu->profile) {
        cu->use_graphs = false;
        for (int i = 0; i < NC_PROF_EVENTS; i++) NC_CU_TRY(cudaEventCreate(&cu->prof_ev[i]));
    }
    return 0;
}

static const char *format_name(nc_cuda_weight_format f) {
    return f == NC_WEIGHT_INT8 ? "int8" : f == NC_WEIGHT_FP8 ? "fp8" : "bf16";
}

static void describe(nc_cuda *cu, const cudaDeviceProp *prop, const memory_plan *mp) {
    bool q8 = cu->layer_format != NC_WEIGHT_BF16;
    char lm[32] = "";
    if (cu->lm_head.format != cu->layer_format) snprintf(lm, sizeof lm, " (lm_head %s)", format_name(cu->lm_head.format));
    const char *gemms = cu->det       ? "mma.sync, deterministic (batch-invariant kernels)"
                        : cu->fp8_act ? (nc_cuda_skinny_fp8_act_ready(cu) ? "wgmma (e4m3 input rows past 64)"
                                         : cu->skinny ? "wgmma up to 64 rows, then fp8 cuBLASLt (e4m3 input rows)"
                                                      : "mma.sync up to 64 rows, then fp8 cuBLASLt (e4m3 input rows)")
                        : cu->skinny  ? (q8 ? "wgmma" : "wgmma up to 64 rows, then cuBLASLt")
                                      : (q8 ? "mma.sync" : "cuBLASLt");
    snprintf(cu->description, sizeof cu->description,
             "%.200s (cc %d.%d, %d SMs, %.1f GiB): %s weights%s %.2f GB, KV pool %lld blocks (%.2f GiB%s), "
             "batch GEMMs: %s, batch-1 decode: %s",
             prop->name, prop->major, prop->minor, prop->multiProcessorCount, mp->total_bytes / 1073741824.0,
             format_name(cu->layer_format), lm, cu->slab_bytes / 1e9, (long long)cu->n_blocks,
             cu->n_blocks * mp->kv_block_bytes / 1073741824.0, cu->kv_fp8 ? ", fp8" : "", gemms,
             cu->persist ? nc_cuda_persist_describe(cu) : "graphs");
}

/* fp8 (e4m3) weights and the fp8 KV cache need the e4m3 conversions of
 * sm_89+ (Ada, Hopper); int8 weights run everywhere. */
static int check_formats(const nc_cuda *cu, const nc_model *m, const nc_backend_params *p) {
    if (p->kv_cache != NC_KV_CACHE_BF16 && p->kv_cache != NC_KV_CACHE_FP8)
        return nc_fail("cuda backend: unknown KV cache format %d", (int)p->kv_cache);
    bool fp8 = m->weights == NC_WEIGHTS_FP8 || m->lm_head->dtype == NC_DTYPE_F8_E4M3;
    bool cc89 = cu->cc_major > 8 || (cu->cc_major == 8 && cu->cc_minor >= 9);
    if ((fp8 || p->kv_cache == NC_KV_CACHE_FP8) && !cc89)
        return nc_fail("cuda backend: %s needs compute capability 8.9 or later (Ada, Hopper: e4m3 conversions); "
                       "this GPU has %d.%d: use --weights int8%s",
                       fp8 ? "--weights fp8 (e4m3)" : "--kv-cache fp8", cu->cc_major, cu->cc_minor,
                       p->kv_cache == NC_KV_CACHE_FP8 ? " and --kv-cache bf16" : "");
    return 0;
}

/* ==== init / free ==== */

static int cuda_init_impl(nc_backend *b, const nc_backend_params *p, nc_cuda *cu) {
    const nc_model *m = b->model;
    if (check_model(&m->cfg)) return -1;
    int device = b->n_gpus ? b->gpus[0] : 0;
    char why[256];
    if (!nc_cuda_probe_device(device, why, sizeof why)) return nc_fail("cuda backend: GPU %d: %s", device, why);
    read_shapes(cu, &m->cfg);
    cu->env = b->env;
    cu->det = p->deterministic;
    cudaDeviceProp prop;
    if (open_device(cu, device, &prop) || check_formats(cu, m, p) || size_batches(cu, p)) return -1;
    cu->kv_fp8 = p->kv_cache == NC_KV_CACHE_FP8;
    const char *pairs = cu->env.cuda_verify_pairs;
    cu->verify_pairs = cu->det || cu->G > NC_ATTN_PAIR_MAX_G || !strcmp(pairs, "off") ? NC_PAIRS_OFF
                       : !strcmp(pairs, "on")                                      ? NC_PAIRS_ON
                                                                                   : NC_PAIRS_AUTO;
    const char *q8 = cu->env.cuda_gemv_q8;
    cu->gemv_q8 = !strcmp(q8, "tc") ? NC_GEMV_Q8_TC : !strcmp(q8, "new") ? NC_GEMV_Q8_STREAM : NC_GEMV_Q8_FIRST;
    cu->gemv_rows_max = cu->env.cuda_gemv_rows ? cu->env.cuda_gemv_rows : 8;
    /* fp8 tensor-core prefill products: only for fp8 weights, never under --deterministic */
    cu->fp8_act = cu->env.cuda_fp8_act && !cu->det &&
                  (m->weights == NC_WEIGHTS_FP8 || m->lm_head->dtype == NC_DTYPE_F8_E4M3);
    /* the formats first: the memory plan sizes scratch by them (load_weights fills in the rest) */
    cu->layer_format = weight_format(m->layers[0].c_q->dtype);
    cu->lm_head.format = weight_format(m->lm_head->dtype);
    slab_layout sl;
    slab_plan(m, cu, &sl);
    memory_plan mp = {0, 0};
    int rc = plan_memory(cu, p, sl.total, &mp) || load_weights(cu, m, &sl);
    slab_free(&sl);
    if (rc || alloc_kv_pool(cu) || build_rope_table(cu) || alloc_scratch(cu) || alloc_batch_buffers(cu) ||
        init_kernels(cu) || init_launch_modes(cu) || nc_cuda_persist_init(cu) ||
        (cu->fp8_act && !nc_cuda_skinny_fp8_act_ready(cu) && nc_cuda_lt_fp8_probe(cu)))
        return -1;
    NC_CU_TRY(cudaStreamSynchronize(cu->stream));
    describe(cu, &prop, &mp);
    b->n_kv_blocks = (int32_t)cu->n_blocks;
    b->max_batch_tokens = cu->max_tokens;
    b->max_seqs = cu->max_seqs;
    return 0;
}

static int cuda_init(nc_backend *b, const nc_backend_params *p) {
    nc_cuda *cu = (nc_cuda *)nc_xcalloc(1, sizeof(nc_cuda));
    b->impl = cu;
    if (cuda_init_impl(b, p, cu)) {
        char msg[NC_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", nc_error());
        cuda_free(b);
        return nc_fail("%s", msg);
    }
    return 0;
}

/* NC_CUDA_PROFILE=1: the stage times of the last forward, on stderr. */
static void print_profile(nc_cuda *cu) {
    static const char *names[NC_PROF_STAGES] = {"embed", "qkv", "rope+append", "attention", "attn proj",
                                                "mlp fc", "mlp proj", "logits", "sample"};
    double total = 0;
    for (int i = 0; i < NC_PROF_STAGES; i++) total += cu->prof_ms[i];
    fprintf(stderr, "cuda profile (device ms of the last forward, eager launches):\n");
    for (int i = 0; i < NC_PROF_STAGES; i++)
        fprintf(stderr, "  %-12s %10.2f ms %5.1f%%\n", names[i], cu->prof_ms[i],
                total > 0 ? 100 * cu->prof_ms[i] / total : 0.0);
    nc_cuda_persist_print_profile(cu);
}

static void cuda_free(nc_backend *b) {
    nc_cuda *cu = nc_cuda_of(b);
    if (!cu) return;
    cudaSetDevice(cu->device); /* the caller may be another thread than the one that made it */
    if (cu->stream) cudaStreamSynchronize(cu->stream);
    if (cu->profile) {
        print_profile(cu);
        for (int i = 0; i < NC_PROF_EVENTS; i++)
            if (cu->prof_ev[i]) cudaEventDestroy(cu->prof_ev[i]);
    }
    if (cu->graphs) {
        for (int i = 0; i < 2 * (cu->max_seqs + 1); i++)
            if (cu->graphs[i]) cudaGraphExecDestroy(cu->graphs[i]);
        free(cu->graphs);
    }
    free(cu->graph_seen);
    free(cu->sample_chunk);
    free(cu->sample_pos);
    free(cu->verify_rows);
    free(cu->verify_new);
    free(cu->verify_pair);
    nc_cuda_gemm_free(cu);
    nc_cuda_skinny_free(cu);
    nc_cuda_persist_free(cu);
    void *dev[] = {cu->slab, cu->kc, cu->vc, cu->kc8, cu->vc8, cu->ksc, cu->vsc, cu->rope, cu->x, cu->x0, cu->xb, cu->qkv, cu->xr,
                   cu->logits, cu->part, cu->h, cu->q, cu->attn, cu->u, cu->act8, cu->act8_scale,
                   cu->lt_workspace, cu->meta_d, cu->samp_d, cu->out_tok_d, cu->attn_count, cu->gemv_rows_ws,
                   cu->gemv_rows_count};
    for (size_t i = 0; i < NC_ARRAY_LEN(dev); i++)
        if (dev[i]) cudaFree(dev[i]);
    void *pinned[] = {cu->meta_h, cu->samp_h, cu->out_tok_h, cu->logits_h};
    for (size_t i = 0; i < NC_ARRAY_LEN(pinned); i++)
        if (pinned[i]) cudaFreeHost(pinned[i]);
    if (cu->stream) cudaStreamDestroy(cu->stream);
    free(cu->layers);
    free(cu);
    b->impl = NULL;
    cudaGetLastError();
}

static const char *cuda_describe(nc_backend *b) { return nc_cuda_of(b)->description; }

static int cuda_copy_kv_block(nc_backend *b, int32_t src, int32_t dst, int32_t n_tokens) {
    nc_cuda *cu = nc_cuda_of(b);
    if (src < 0 || dst < 0 || src >= cu->n_blocks || dst >= cu->n_blocks)
        return nc_fail("copy_kv_block: block %d -> %d outside the KV pool [0, %lld)", src, dst,
                       (long long)cu->n_blocks);
    if (n_tokens < 0 || n_tokens > NC_KV_BLOCK_TOKENS)
        return nc_fail("copy_kv_block: %d tokens; a block holds 0..%d", n_tokens, NC_KV_BLOCK_TOKENS);
    if (n_tokens == 0 || src == dst) return 0;
    return nc_cuda_copy_block(cu, src, dst, n_tokens);
}

/* Device-to-device copy bandwidth (bytes read + written per second) over a
 * 1 GiB buffer, median of 5 after a warm-up: the ceiling `nanochat bench`
 * divides by. */
static double cuda_copy_bandwidth(nc_backend *b) {
    nc_cuda *cu = nc_cuda_of(b);
    size_t bytes = 1u << 30;
    void *a = NULL, *c = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&c, bytes) != cudaSuccess) {
        cudaGetLastError();
        if (a) cudaFree(a);
        return 0;
    }
    cudaMemsetAsync(a, 1, bytes, cu->stream);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float t[6];
    for (int i = 0; i < 6; i++) {
        cudaEventRecord(e0, cu->stream);
        cudaMemcpyAsync(c, a, bytes, cudaMemcpyDeviceToDevice, cu->stream);
        cudaEventRecord(e1, cu->stream);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&t[i], e0, e1);
    }
    for (int i = 1; i < 6; i++) /* sort t[1..5] */
        for (int j = i + 1; j < 6; j++)
            if (t[j] < t[i]) { float s = t[i]; t[i] = t[j]; t[j] = s; }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(c);
    cudaGetLastError();
    return t[3] > 0 ? 2.0 * bytes / (t[3] * 1e-3) : 0;
}

/* Runs every decode batch size twice with dummy one-token rows at position
 * 0 (the first run plans its GEMMs, the second captures its graph; see
 * run_decode in cuda_forward.cu). ~10 ms per size on an H100. */
static int cuda_prepare_decode(nc_backend *b, int32_t max_rows) {
    nc_cuda *cu = nc_cuda_of(b);
    if (!cu->use_graphs) return 0;
    int n = NC_MIN((int)max_rows, cu->max_seqs);
    int32_t *blocks = (int32_t *)nc_xmalloc((size_t)n * sizeof(int32_t));
    nc_seq_chunk *rows = (nc_seq_chunk *)nc_xcalloc((size_t)n, sizeof(nc_seq_chunk));
    nc_device_sampling *samp = (nc_device_sampling *)nc_xcalloc((size_t)n, sizeof(nc_device_sampling));
    int32_t *out = (int32_t *)nc_xmalloc((size_t)n * sizeof(int32_t));
    static const int32_t token = 0;
    int rc = 0;
    for (int r = 0; r < n; r++) {
        blocks[r] = r % b->n_kv_blocks;
        rows[r].tokens = &token;
        rows[r].n_tokens = 1;
        rows[r].prev_token = -1;
        rows[r].block_table = &blocks[r];
        rows[r].logits = NC_LOGITS_LAST;
        samp[r].top_p = 1.0f;
    }
    for (int nb = 1; nb <= n && !rc; nb++) {
        nc_batch batch = {rows, nb};
        for (int pass = 0; pass < 2 && !rc; pass++) rc = nc_cuda_forward_sample(b, &batch, samp, out);
    }
    free(blocks);
    free(rows);
    free(samp);
    free(out);
    return rc;
}

/* Float weights live in the device slab as bf16 (upload_tensor converts
 * f32 and f16), 8-bit ones as they are; the KV pool is bf16, or e4m3 with
 * an fp32 scale per vector. */
static size_t cuda_weight_elem_bytes(nc_backend *b, nc_dtype dtype) { return is_8bit(dtype) ? 1 : sizeof(bf16); }

static size_t cuda_kv_vector_bytes(nc_backend *b) {
    const nc_cuda *cu = nc_cuda_of(b);
    return cu->kv_fp8 ? (size_t)cu->D + sizeof(float) : (size_t)cu->D * sizeof(bf16);
}

extern "C" const nc_backend_ops nc_cuda_backend_ops = {
    "cuda",
    cuda_init,
    cuda_free,
    nc_cuda_forward,
    nc_cuda_forward_sample,
    true, /* sample_logprobs */
    true, /* sample_all */
    cuda_copy_kv_block,
    cuda_describe,
    cuda_copy_bandwidth,
    cuda_prepare_decode,
    cuda_weight_elem_bytes,
    cuda_kv_vector_bytes,
    false, /* batch_invariant: decode rows run the GEMV, chunks the GEMMs */
};
