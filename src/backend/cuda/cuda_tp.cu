/*
 * cuda_tp.cu: tensor parallel: one engine over several GPUs of one host
 * (device "cuda:0+1", --tensor-parallel 2), Megatron-style over NCCL
 * (docs/multi-device.md, Tensor parallel).
 *
 * Each GPU (rank) runs an ordinary CUDA backend on its share of the model
 * (backend/tp_shard.h: its kv heads and query heads, its MLP units; the
 * embedding, norms and lm_head replicated) with its part of the KV cache:
 * every rank's pool has the same number of blocks, so the engine's block
 * tables hold for all of them. The forward pass is the single-GPU one with
 * two hooks (nc_cuda_tp_hooks): after each row-parallel product (attention
 * out, MLP out) an all-reduce of the residual stream, so 2 per layer, and
 * ranks other than 0 skip the logits. Rank 0 computes the logits and
 * samples; its results are the engine's.
 *
 * Threads: one per GPU, each owning its rank's backend from creation to
 * free (CUDA's current device is per thread, and NCCL wants one thread per
 * rank or grouped calls). The caller of an op posts it to every rank and
 * waits; rank and caller spin for a few hundred microseconds before
 * sleeping, since decode steps come that close together.
 *
 * NCCL is loaded with dlopen at the first tensor-parallel backend
 * (libnccl.so.2 from the library path): a build with nccl.h runs on a
 * machine without NCCL until tensor parallelism is asked for. NVLink
 * multicast (NVLS) is switched off (NCCL_NVLS_ENABLE=0) unless the user set
 * the variable: its multicast objects can leave the host's GPUs unusable
 * for other processes when a program dies holding them, and an all-reduce
 * of one residual row gains nothing from it.
 *
 * Errors are never waited on forever: communicators are non-blocking, and
 * every wait (group start, each all-reduce's enqueue, each step's end)
 * polls the stream and ncclCommGetAsyncError against a deadline. A failure
 * or a timeout aborts the communicators (ncclCommAbort) and stops the
 * group: every later op fails at once with the first error's message, so
 * the engine above stops and fails its requests.
 */
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_backend.h"
#include "cuda_internal.cuh"

extern "C" {
#include "../tp_shard.h"
}

/* How long a step, a group start or an enqueue may go without progress. */
#define TP_TIMEOUT_S 60.0
/* Spinning before sleeping, while waiting for the other side. */
#define TP_SPIN_S 0.0005

/* ==== NCCL, loaded at first use ==== */

static struct {
    decltype(&ncclGetVersion) GetVersion;
    decltype(&ncclGetUniqueId) GetUniqueId;
    decltype(&ncclCommInitRankConfig) CommInitRankConfig;
    decltype(&ncclCommGetAsyncError) CommGetAsyncError;
    decltype(&ncclCommAbort) CommAbort;
    decltype(&ncclCommDestroy) CommDestroy;
    decltype(&ncclAllReduce) AllReduce;
    decltype(&ncclGetErrorString) GetErrorString;
    decltype(&ncclGetLastError) GetLastError;
    int version;
} nccl;
static pthread_once_t nccl_once = PTHREAD_ONCE_INIT;
static char nccl_missing[512]; /* why NCCL could not be loaded, "" once it is */

static void load_nccl(void) {
    void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(nccl_missing, sizeof nccl_missing,
                 "tensor parallel needs NCCL (libnccl.so.2), which is not on the library path: %s", dlerror());
        return;
    }
    const char *missing = NULL;
#define NC_NCCL_SYM(field, name)                                                                       \
    if (!missing && !(nccl.field = reinterpret_cast<decltype(nccl.field)>(dlsym(lib, name)))) missing = name;
    NC_NCCL_SYM(GetVersion, "ncclGetVersion")
    NC_NCCL_SYM(GetUniqueId, "ncclGetUniqueId")
    NC_NCCL_SYM(CommInitRankConfig, "ncclCommInitRankConfig")
    NC_NCCL_SYM(CommGetAsyncError, "ncclCommGetAsyncError")
    NC_NCCL_SYM(CommAbort, "ncclCommAbort")
    NC_NCCL_SYM(CommDestroy, "ncclCommDestroy")
    NC_NCCL_SYM(AllReduce, "ncclAllReduce")
    NC_NCCL_SYM(GetErrorString, "ncclGetErrorString")
    NC_NCCL_SYM(GetLastError, "ncclGetLastError")
#undef NC_NCCL_SYM
    if (missing) {
        snprintf(nccl_missing, sizeof nccl_missing,
                 "the NCCL library found lacks %s: tensor parallel needs NCCL 2.14 or newer", missing);
        return;
    }
    nccl.GetVersion(&nccl.version);
}

/* ==== the small all-reduce: one shot over peer memory ==== */

/* A decode step's all-reduce moves a few kilobytes per rank, where NCCL's
 * latency (several microseconds each, 68 a token on d34) is most of the
 * cost. Between GPUs that can read each other's memory (NVLink, or PCIe
 * with P2P), sums of at most AR_MAX_BYTES go through this kernel instead:
 * every rank copies its part-sums into its own staging buffer, tells each
 * peer it has, waits for the peers to say the same, then adds up all the
 * staging buffers in rank order (so every rank gets the same bits). Larger
 * sums (prefill) stay with NCCL. NC_TP_ALLREDUCE=nccl sends everything
 * through NCCL, for comparison.
 *
 * Each of the AR_BLOCKS blocks handles one slice and meets the peers'
 * block of the same index; its arrivals are numbered by a per-block
 * counter that only it advances (so the numbers need no host and survive
 * graph replay), and its parity picks one of two staging halves: a rank
 * writes a half again only two all-reduces later, when every peer has
 * finished reading it. The grid is always AR_BLOCKS blocks, so the
 * counters of every block move together. A peer that does not arrive
 * within TP_TIMEOUT_S makes the kernel give up and raise a flag in host
 * memory, which the wait hook reports. */
#define AR_MAX_BYTES (1u << 20)
#define AR_BLOCKS 32
#define AR_THREADS 512

typedef struct {
    float *stage[NC_BACKEND_MAX_GPUS];               /* each rank's [2][AR_MAX_BYTES / 4] */
    unsigned long long *arrived[NC_BACKEND_MAX_GPUS]; /* each rank's [ranks][AR_BLOCKS]: the count a peer reached */
    unsigned long long *count;                       /* this rank's [AR_BLOCKS] */
    int *timed_out;                                  /* host-mapped flag of this rank */
    int n, rank;
} ar_peers;

__device__ __forceinline__ unsigned long long ar_load_acquire(const unsigned long long *p) {
    unsigned long long v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void ar_store_release(unsigned long long *p, unsigned long long v) {
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ unsigned long long ar_now_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__global__ void __launch_bounds__(AR_THREADS) ar_kernel(ar_peers p, float *x, long long n) {
    __shared__ unsigned long long seq;
    int b = blockIdx.x, t = threadIdx.x;
    if (t == 0) seq = ++p.count[b];
    __syncthreads();
    size_t half = (size_t)(seq & 1) * (AR_MAX_BYTES / sizeof(float));
    long long per = (n + AR_BLOCKS - 1) / AR_BLOCKS, lo = b * per, hi = lo + per < n ? lo + per : n;
    float *mine = p.stage[p.rank] + half;
    for (long long i = lo + t; i < hi; i += AR_THREADS) mine[i] = x[i];
    __syncthreads();
    if (t < p.n && t != p.rank) {
        __threadfence_system();
        ar_store_release(p.arrived[t] + p.rank * AR_BLOCKS + b, seq);
        const unsigned long long *from = p.arrived[p.rank] + t * AR_BLOCKS + b;
        unsigned long long deadline = ar_now_ns() + (unsigned long long)(TP_TIMEOUT_S * 1e9);
        while (ar_load_acquire(from) < seq)
            if (ar_now_ns() > deadline) {
                *(volatile int *)p.timed_out = 1;
                break;
            }
    }
    __syncthreads();
    for (long long i = lo + t; i < hi; i += AR_THREADS) {
        float sum = 0.0f;
        for (int q = 0; q < p.n; q++) sum += __ldcg(p.stage[q] + half + i);
        x[i] = sum;
    }
}

/* ==== the group ==== */

typedef enum {
    TP_INIT, TP_CONNECT, TP_FORWARD, TP_FORWARD_SAMPLE, TP_COPY, TP_PREPARE, TP_BANDWIDTH, TP_FREE, TP_EXIT
} tp_op;

/* What every rank is asked to do; pointer arguments are the caller's. */
typedef struct {
    tp_op op;
    int only;                      /* a rank index: only it acts; -1: all */
    nc_backend_params params;      /* TP_INIT */
    const nc_batch *batch;         /* TP_FORWARD, TP_FORWARD_SAMPLE */
    float *logits;
    nc_device_sampling *rows;
    int32_t *tokens;
    int32_t src, dst, n;           /* TP_COPY; n: also TP_PREPARE's rows */
} tp_cmd;

struct tp_group;

typedef struct {
    nc_cuda_tp_hooks hooks;        /* first: the rank backend's cu->tp points here */
    struct tp_group *g;
    int gpu;
    nc_backend *sub;               /* this rank's backend */
    ncclComm_t comm;               /* NULL once aborted */
    nc_device_sampling *rows;      /* a follower's copy of the sampling rows [max_seqs] */
    int32_t *tokens;               /* ... and of the sampled ids */
    ar_peers ar;                   /* the one-shot all-reduce's buffers (all ranks'), when the group uses it */
    int *timed_out_host;           /* ar.timed_out as the host sees it */
    bool peer_access;              /* this GPU can read every peer's memory */
    pthread_t thread;
    bool started;
    int rc;
    char error[NC_ERROR_MAX];
} tp_rank;

typedef struct tp_group {
    int n;
    tp_rank ranks[NC_BACKEND_MAX_GPUS];
    const nc_model *model;
    nc_tp_split split;
    ncclUniqueId id;
    char name[128];                /* "cuda:0+1" */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;                  /* commands posted so far (atomic) */
    int pending;                   /* ranks still running the latest one (atomic) */
    tp_cmd cmd;
    double bandwidth;              /* TP_BANDWIDTH's answer */
    bool one_shot;                 /* small all-reduces go through ar_kernel */
    bool dead;                     /* stopped by an NCCL error or a timeout (atomic) */
    char dead_why[NC_ERROR_MAX];   /* the first one (under mu) */
    char description[2048];
} tp_group;

static tp_group *group_of(nc_backend *b) { return (tp_group *)b->impl; }
static bool is_dead(const tp_group *g) { return __atomic_load_n(&g->dead, __ATOMIC_ACQUIRE); }
static tp_rank *rank_of(nc_cuda *cu) { return (tp_rank *)cu->tp; }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void sleep_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* Waits (spinning first) until ready(g, arg) holds; the condition is
 * announced under g->mu with a broadcast. */
static void await(tp_group *g, bool (*ready)(tp_group *, uint64_t), uint64_t arg) {
    double spin_until = nc_now() + TP_SPIN_S;
    while (!ready(g, arg)) {
        if (nc_now() < spin_until) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&g->mu);
        while (!ready(g, arg)) pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
}

static bool posted_after(tp_group *g, uint64_t seen) { return __atomic_load_n(&g->gen, __ATOMIC_ACQUIRE) != seen; }
static bool all_done(tp_group *g, uint64_t unused) { return __atomic_load_n(&g->pending, __ATOMIC_ACQUIRE) == 0; }

static void announce(tp_group *g) {
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Marks the group stopped (the first reason wins) and aborts this rank's
 * communicator; the others abort theirs when they next look. */
static void stop_group(tp_rank *rk, const char *why) {
    tp_group *g = rk->g;
    pthread_mutex_lock(&g->mu);
    if (!is_dead(g)) {
        snprintf(g->dead_why, sizeof g->dead_why, "%s", why);
        __atomic_store_n(&g->dead, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g->mu);
    if (rk->comm) nccl.CommAbort(rk->comm);
    rk->comm = NULL;
}

static int group_stopped(tp_group *g) {
    pthread_mutex_lock(&g->mu);
    nc_fail("tensor parallel %s stopped: %s", g->name, g->dead_why);
    pthread_mutex_unlock(&g->mu);
    return -1;
}

/* An NCCL call of rank rk failed (r) or timed out (r == ncclSuccess):
 * stops the group and records why. */
static int nccl_failed(tp_rank *rk, const char *what, ncclResult_t r) {
    char why[NC_ERROR_MAX];
    int rank = (int)(rk - rk->g->ranks);
    if (r == ncclSuccess)
        snprintf(why, sizeof why, "%s on GPU %d (rank %d) made no progress for %.0f s (a GPU or its link stopped "
                 "answering)", what, rk->gpu, rank, TP_TIMEOUT_S);
    else
        snprintf(why, sizeof why, "NCCL %s on GPU %d (rank %d) failed: %s%s%s", what, rk->gpu, rank,
                 nccl.GetErrorString(r), rk->comm ? ": " : "", rk->comm ? nccl.GetLastError(rk->comm) : "");
    stop_group(rk, why);
    return group_stopped(rk->g);
}

/* Polls a non-blocking communicator until its pending call settles. */
static int settle(tp_rank *rk, const char *what) {
    double deadline = nc_now() + TP_TIMEOUT_S;
    for (;;) {
        if (is_dead(rk->g)) {
            stop_group(rk, "another rank failed");
            return group_stopped(rk->g);
        }
        ncclResult_t st = ncclInProgress;
        ncclResult_t r = nccl.CommGetAsyncError(rk->comm, &st);
        if (r != ncclSuccess) return nccl_failed(rk, what, r);
        if (st == ncclSuccess) return 0;
        if (st != ncclInProgress) return nccl_failed(rk, what, st);
        if (nc_now() > deadline) return nccl_failed(rk, what, ncclSuccess);
        sleep_us(20);
    }
}

/* ==== the hooks the forward pass calls (nc_cuda_tp_hooks) ==== */

static int hook_all_reduce(nc_cuda *cu, int n) {
    tp_rank *rk = rank_of(cu);
    if (!rk->comm) return group_stopped(rk->g);
    size_t count = (size_t)n * cu->C;
    if (rk->g->one_shot && count * sizeof(float) <= AR_MAX_BYTES) {
        ar_kernel<<<AR_BLOCKS, AR_THREADS, 0, cu->stream>>>(rk->ar, cu->x, (long long)count);
        NC_CU_LAUNCHED("the one-shot all-reduce");
        return 0;
    }
    ncclResult_t r = nccl.AllReduce(cu->x, cu->x, count, ncclFloat32, ncclSum, rk->comm, cu->stream);
    if (r == ncclInProgress) return settle(rk, "all-reduce");
    return r == ncclSuccess ? 0 : nccl_failed(rk, "all-reduce", r);
}

static int hook_wait(nc_cuda *cu, const char *what) {
    tp_rank *rk = rank_of(cu);
    double start = nc_now(), deadline = start + TP_TIMEOUT_S;
    for (;;) {
        cudaError_t e = cudaStreamQuery(cu->stream);
        if (rk->timed_out_host && *(volatile int *)rk->timed_out_host) {
            char why[NC_ERROR_MAX];
            snprintf(why, sizeof why, "%s on GPU %d: a peer did not join the one-shot all-reduce within %.0f s", what,
                     rk->gpu, TP_TIMEOUT_S);
            stop_group(rk, why);
            return group_stopped(rk->g);
        }
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) {
            char why[NC_ERROR_MAX];
            snprintf(why, sizeof why, "cuda: %s failed on GPU %d: %s", what, rk->gpu, cudaGetErrorString(e));
            stop_group(rk, why);
            return group_stopped(rk->g);
        }
        if (is_dead(rk->g)) {
            stop_group(rk, "another rank failed");
            return group_stopped(rk->g);
        }
        ncclResult_t st = ncclSuccess;
        if (rk->comm && nccl.CommGetAsyncError(rk->comm, &st) == ncclSuccess && st != ncclSuccess &&
            st != ncclInProgress)
            return nccl_failed(rk, what, st);
        double now = nc_now();
        if (now > deadline) return nccl_failed(rk, what, ncclSuccess);
        if (now - start > 0.001) sleep_us(20); /* a long prefill: stop spinning */
    }
}

/* ==== each rank's thread ==== */

static char *backend_name(int gpu, char *buf, size_t cap) {
    snprintf(buf, cap, "cuda:%d", gpu);
    return buf;
}

static int rank_init(tp_rank *rk, int r, const nc_backend_params *p) {
    tp_group *g = rk->g;
    nc_model *shard = nc_tp_shard(g->model, &g->split, r);
    if (!shard) return -1;
    char name[32];
    rk->sub = nc_backend_create(backend_name(rk->gpu, name, sizeof name), shard, p);
    nc_model_free(shard); /* the backend uploaded it and reads it no more */
    if (!rk->sub) return -1;
    rk->sub->model = NULL;
    nc_cuda *cu = nc_cuda_of(rk->sub);
    rk->hooks.rank = r;
    rk->hooks.all_reduce = hook_all_reduce;
    rk->hooks.wait = hook_wait;
    cu->tp = &rk->hooks;
    if (r > 0) {
        rk->rows = (nc_device_sampling *)nc_xcalloc((size_t)rk->sub->max_seqs, sizeof *rk->rows);
        rk->tokens = (int32_t *)nc_xcalloc((size_t)rk->sub->max_seqs, sizeof *rk->tokens);
    }
    return 0;
}

/* Peer access to every other GPU of the group, and this rank's buffers of
 * the one-shot all-reduce; a GPU that cannot reach its peers' memory
 * leaves the group on NCCL alone. */
static int rank_peers(tp_rank *rk, int r) {
    tp_group *g = rk->g;
    rk->peer_access = true;
    for (int q = 0; q < g->n && rk->peer_access; q++) {
        int can = 0;
        if (q == r) continue;
        if (cudaDeviceCanAccessPeer(&can, rk->gpu, g->ranks[q].gpu) != cudaSuccess || !can) {
            rk->peer_access = false;
            break;
        }
        cudaError_t e = cudaDeviceEnablePeerAccess(g->ranks[q].gpu, 0);
        if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) rk->peer_access = false;
    }
    cudaGetLastError();
    if (!rk->peer_access) return 0;
    size_t flags = (size_t)g->n * AR_BLOCKS * sizeof(unsigned long long);
    NC_CU_TRY(cudaMalloc((void **)&rk->ar.stage[r], 2 * (size_t)AR_MAX_BYTES));
    NC_CU_TRY(cudaMalloc((void **)&rk->ar.arrived[r], flags));
    NC_CU_TRY(cudaMemset(rk->ar.arrived[r], 0, flags));
    NC_CU_TRY(cudaMalloc((void **)&rk->ar.count, AR_BLOCKS * sizeof(unsigned long long)));
    NC_CU_TRY(cudaMemset(rk->ar.count, 0, AR_BLOCKS * sizeof(unsigned long long)));
    NC_CU_TRY(cudaHostAlloc((void **)&rk->timed_out_host, sizeof(int), cudaHostAllocMapped));
    *rk->timed_out_host = 0;
    NC_CU_TRY(cudaHostGetDevicePointer((void **)&rk->ar.timed_out, rk->timed_out_host, 0));
    /* The memsets ran on the legacy stream, which the backend's non-blocking
     * stream does not wait for. */
    NC_CU_TRY(cudaDeviceSynchronize());
    return 0;
}

static void rank_peers_free(tp_rank *rk, int r) {
    if (rk->ar.stage[r]) cudaFree(rk->ar.stage[r]);
    if (rk->ar.arrived[r]) cudaFree(rk->ar.arrived[r]);
    if (rk->ar.count) cudaFree(rk->ar.count);
    if (rk->timed_out_host) cudaFreeHost(rk->timed_out_host);
    memset(&rk->ar, 0, sizeof rk->ar);
    rk->timed_out_host = NULL;
}

static int rank_connect(tp_rank *rk, int r) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* every wait below has a deadline */
    ncclResult_t res = nccl.CommInitRankConfig(&rk->comm, rk->g->n, rk->g->id, r, &cfg);
    if (res != ncclSuccess && res != ncclInProgress) {
        rk->comm = NULL;
        return nccl_failed(rk, "communicator setup", res);
    }
    return settle(rk, "communicator setup") || rank_peers(rk, r);
}

static int rank_run(tp_rank *rk, int r, const tp_cmd *c) {
    nc_backend *b = rk->sub;
    switch (c->op) {
    case TP_INIT: return rank_init(rk, r, &c->params);
    case TP_CONNECT: return rank_connect(rk, r);
    case TP_FORWARD: return b->ops->forward(b, c->batch, c->logits);
    case TP_FORWARD_SAMPLE:
        if (r == 0) return b->ops->forward_sample(b, c->batch, c->rows, c->tokens);
        memcpy(rk->rows, c->rows, (size_t)c->batch->n_seqs * sizeof *rk->rows);
        return b->ops->forward_sample(b, c->batch, rk->rows, rk->tokens);
    case TP_COPY: return b->ops->copy_kv_block(b, c->src, c->dst, c->n);
    case TP_PREPARE: return b->ops->prepare_decode ? b->ops->prepare_decode(b, c->n) : 0;
    case TP_BANDWIDTH:
        rk->g->bandwidth = b->ops->copy_bandwidth ? b->ops->copy_bandwidth(b) : 0;
        return 0;
    case TP_FREE:
        if (rk->comm) {
            if (is_dead(rk->g)) nccl.CommAbort(rk->comm);
            else nccl.CommDestroy(rk->comm);
        }
        rk->comm = NULL;
        /* A stopped group's streams may hold aborted NCCL kernels or a
         * one-shot all-reduce still waiting: freeing would wait on them. Its
         * device memory is left to the process. */
        if (!is_dead(rk->g)) {
            nc_backend_free(b);
            rank_peers_free(rk, (int)(rk - rk->g->ranks));
        }
        rk->sub = NULL;
        return 0;
    case TP_EXIT: break;
    }
    return 0;
}

static void *rank_main(void *arg) {
    tp_rank *rk = (tp_rank *)arg;
    tp_group *g = rk->g;
    int r = (int)(rk - g->ranks);
    cudaSetDevice(rk->gpu);
    uint64_t seen = 0;
    for (;;) {
        await(g, posted_after, seen);
        seen = __atomic_load_n(&g->gen, __ATOMIC_ACQUIRE);
        const tp_cmd *c = &g->cmd;
        tp_op op = c->op;
        if (c->only < 0 || c->only == r) {
            rk->rc = rank_run(rk, r, c);
            if (rk->rc) snprintf(rk->error, sizeof rk->error, "%s", nc_error());
        } else {
            rk->rc = 0;
        }
        if (__atomic_fetch_sub(&g->pending, 1, __ATOMIC_ACQ_REL) == 1) announce(g);
        if (op == TP_EXIT) return NULL;
    }
}

/* A command for every rank, its other arguments zero. */
static tp_cmd command(tp_op op) {
    tp_cmd c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.only = -1;
    return c;
}

/* Runs `c` on every rank (or c->only) and waits for all; -1 + the first
 * failing rank's message. */
static int post(tp_group *g, const tp_cmd *c) {
    if (is_dead(g) && c->op != TP_FREE && c->op != TP_EXIT) return group_stopped(g);
    g->cmd = *c;
    __atomic_store_n(&g->pending, g->n, __ATOMIC_RELEASE);
    pthread_mutex_lock(&g->mu);
    __atomic_fetch_add(&g->gen, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    await(g, all_done, 0);
    for (int r = 0; r < g->n; r++)
        if (g->ranks[r].rc) {
            /* A rank that failed because another did says so; name the cause. */
            if (is_dead(g)) return group_stopped(g);
            return nc_fail("tensor parallel %s, GPU %d: %s", g->name, g->ranks[r].gpu, g->ranks[r].error);
        }
    return 0;
}

/* ==== ops ==== */

static void tp_free(nc_backend *b);

static void describe(tp_group *g) {
    char *d = g->description;
    size_t cap = sizeof g->description;
    int len = snprintf(d, cap, "tensor parallel over %s (NCCL %d%s):", g->name, nccl.version,
                       g->one_shot ? ", one-shot all-reduce over peer memory up to 1 MiB" : "");
    for (int r = 0; r < g->n && len > 0 && (size_t)len < cap; r++) {
        const nc_tp_split *s = &g->split;
        len += snprintf(d + len, cap - (size_t)len, "%s GPU %d: heads %d-%d, MLP units %d-%d, %s", r ? ";" : "",
                        g->ranks[r].gpu, s->head0[r], s->head0[r + 1] - 1, s->mlp0[r], s->mlp0[r + 1] - 1,
                        nc_backend_describe(g->ranks[r].sub));
    }
}

static int start_group(nc_backend *b, tp_group *g, const nc_backend_params *p) {
    pthread_once(&nccl_once, load_nccl);
    if (nccl_missing[0]) return nc_fail("%s", nccl_missing);
    if (nc_tp_split_plan(&b->model->cfg, g->n, &g->split)) return -1;
    /* Keep NVLink multicast off unless the user chose otherwise (see the
     * top of this file). */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    ncclResult_t r = nccl.GetUniqueId(&g->id);
    if (r != ncclSuccess) return nc_fail("tensor parallel %s: ncclGetUniqueId: %s", g->name, nccl.GetErrorString(r));
    for (int i = 0; i < g->n; i++) {
        tp_rank *rk = &g->ranks[i];
        rk->g = g;
        rk->gpu = b->gpus[i];
        if (pthread_create(&rk->thread, NULL, rank_main, rk))
            return nc_fail("tensor parallel %s: cannot start a thread for GPU %d", g->name, rk->gpu);
        rk->started = true;
    }
    /* Rank 0 holds the most heads, so the most KV per block: the pool size
     * it picks fits every rank, and all must have the same. */
    tp_cmd c = command(TP_INIT);
    c.params = *p;
    c.only = p->n_kv_blocks ? -1 : 0;
    if (post(g, &c)) return -1;
    if (!p->n_kv_blocks) {
        c.params.n_kv_blocks = g->ranks[0].sub->n_kv_blocks;
        for (c.only = 1; c.only < g->n; c.only++)
            if (post(g, &c)) return -1;
    }
    c = command(TP_CONNECT);
    if (post(g, &c)) return -1;
    /* The one-shot all-reduce when every GPU reaches every other's memory:
     * each rank learns all the others' buffers. */
    g->one_shot = strcmp(b->env.tp_allreduce, "nccl") != 0;
    for (int r = 0; r < g->n; r++) g->one_shot &= g->ranks[r].peer_access;
    for (int r = 0; r < g->n && g->one_shot; r++) {
        ar_peers *a = &g->ranks[r].ar;
        for (int q = 0; q < g->n; q++) {
            a->stage[q] = g->ranks[q].ar.stage[q];
            a->arrived[q] = g->ranks[q].ar.arrived[q];
        }
        a->n = g->n;
        a->rank = r;
    }
    return 0;
}

static int tp_init(nc_backend *b, const nc_backend_params *p) {
    tp_group *g = (tp_group *)nc_xcalloc(1, sizeof *g);
    b->impl = g;
    g->n = b->n_gpus;
    g->model = b->model;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    int len = snprintf(g->name, sizeof g->name, "cuda:%d", b->gpus[0]);
    for (int i = 1; i < g->n && len > 0 && (size_t)len < sizeof g->name; i++)
        len += snprintf(g->name + len, sizeof g->name - (size_t)len, "+%d", b->gpus[i]);
    if (start_group(b, g, p)) {
        char msg[NC_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", nc_error());
        tp_free(b);
        return nc_fail("%s", msg);
    }
    nc_backend *r0 = g->ranks[0].sub;
    b->n_kv_blocks = r0->n_kv_blocks;
    b->max_batch_tokens = r0->max_batch_tokens;
    b->max_seqs = r0->max_seqs;
    describe(g);
    return 0;
}

static void tp_free(nc_backend *b) {
    tp_group *g = group_of(b);
    if (!g) return;
    bool any = false;
    for (int i = 0; i < g->n; i++) any |= g->ranks[i].started;
    if (any) {
        tp_cmd c = command(TP_FREE);
        post(g, &c);
        c.op = TP_EXIT;
        post(g, &c);
    }
    for (int i = 0; i < g->n; i++) {
        if (g->ranks[i].started) pthread_join(g->ranks[i].thread, NULL);
        free(g->ranks[i].rows);
        free(g->ranks[i].tokens);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
    b->impl = NULL;
}

static int tp_forward(nc_backend *b, const nc_batch *batch, float *logits) {
    tp_cmd c = command(TP_FORWARD);
    c.batch = batch;
    c.logits = logits;
    return post(group_of(b), &c);
}

static int tp_forward_sample(nc_backend *b, const nc_batch *batch, nc_device_sampling *rows, int32_t *tokens_out) {
    if (!batch || !batch->seqs || batch->n_seqs < 1 || batch->n_seqs > b->max_seqs)
        return nc_fail("forward_sample: a batch of %d sequences; this backend takes 1 to %d",
                       batch && batch->seqs ? batch->n_seqs : 0, b->max_seqs);
    tp_cmd c = command(TP_FORWARD_SAMPLE);
    c.batch = batch;
    c.rows = rows;
    c.tokens = tokens_out;
    return post(group_of(b), &c);
}

static int tp_copy_kv_block(nc_backend *b, int32_t src, int32_t dst, int32_t n_tokens) {
    tp_cmd c = command(TP_COPY);
    c.src = src;
    c.dst = dst;
    c.n = n_tokens;
    return post(group_of(b), &c);
}

static int tp_prepare_decode(nc_backend *b, int32_t max_rows) {
    tp_cmd c = command(TP_PREPARE);
    c.n = max_rows;
    return post(group_of(b), &c);
}

static const char *tp_describe(nc_backend *b) { return group_of(b)->description; }

/* Rank 0's answers (measured on its thread, where its GPU is current):
 * every rank stores its share the same way. */
static double tp_copy_bandwidth(nc_backend *b) {
    tp_group *g = group_of(b);
    tp_cmd c = command(TP_BANDWIDTH);
    c.only = 0;
    return post(g, &c) ? 0 : g->bandwidth;
}

static size_t tp_weight_elem_bytes(nc_backend *b, nc_dtype dtype) {
    nc_backend *r0 = group_of(b)->ranks[0].sub;
    return r0->ops->weight_elem_bytes(r0, dtype);
}

static size_t tp_kv_vector_bytes(nc_backend *b) {
    nc_backend *r0 = group_of(b)->ranks[0].sub;
    return r0->ops->kv_vector_bytes(r0);
}

/* Rank 0 samples with the CUDA sampler on its full (replicated lm_head)
 * logits into the caller's rows, log-probabilities included. */
extern "C" const nc_backend_ops nc_cuda_tp_backend_ops = {
    .name = "cuda-tp",
    .init = tp_init,
    .free = tp_free,
    .forward = tp_forward,
    .forward_sample = tp_forward_sample,
    .sample_logprobs = true,
    .copy_kv_block = tp_copy_kv_block,
    .describe = tp_describe,
    .copy_bandwidth = tp_copy_bandwidth,
    .prepare_decode = tp_prepare_decode,
    .weight_elem_bytes = tp_weight_elem_bytes,
    .kv_vector_bytes = tp_kv_vector_bytes,
    .batch_invariant = false, /* as one GPU's backend, plus all-reduces whose row count varies */
};
