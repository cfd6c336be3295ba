/*
 * dev/kernels/gemm_q8.cu: harness for the products of 8-bit weights (int8,
 * e4m3; docs/quantization.md), llm.c dev/cuda style. It compiles the
 * backend's own kernels into this program (cuda_gemv.cu, cuda_gemm_q8.cu,
 * cuda_gemm_skinny.cu, and cuda_gemm.cu for cuBLASLt's bf16 baseline),
 * checks them against a CPU reference (double sums of the dequantised
 * weights: s[r] * q[r, k] or s[r] * e4m3(q[r, k])) on random data, and
 * times them on the d34 and d20 shapes.
 *
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -DNC_WITH_CUDA \
 *        -o /tmp/gemm_q8 dev/kernels/gemm_q8.cu -lcublasLt && /tmp/gemm_q8 [d34|d20|all] [gemv]
 *
 * With `gemv` only part 1 runs (the GEMV table and the step graph).
 *
 * 1. The batch-1 GEMV (nc_cuda_gemv) per shape, format and kernel: the
 *    streaming kernel ("new", the backend's default) beside the first one
 *    ("old R=1|2|4", NC_CUDA_GEMV_Q8=old, rows per warp R; 2 is its
 *    default), fp32 normed input (qkv, fc, lm_head) or bf16 input (attn
 *    proj, mlp proj), and bf16 weights beside them: time | GB/s | % of the
 *    copy bandwidth measured here | max error relative to the row set's
 *    largest |y|. Then the whole decode step's GEMVs (34 layers x 4 +
 *    lm_head, distinct weights) as one CUDA graph with PDL, per format and
 *    kernel: the GEMV part of a batch-1 step.
 * 2. The GEMMs at 2..64 rows (decode batches) and 2048 (a prefill chunk)
 *    per shape and format: the wgmma skinny kernel (sm_90a) and the
 *    mma.sync one, cuBLASLt on bf16 weights of the same shape beside them.
 * Every result is checked: GEMV outputs within 2e-5 of the row set's largest
 * (fp32 sums of exactly widened weights: the same math as the reference,
 * summed in another order), the epilogues once each per format and kernel,
 * and the new kernel also on a grid sized for 3 SMs (hundreds of rows per
 * warp) and on a 1001 x 640 matrix (its 8-lanes-per-row variant); GEMM fp32 outputs
 * (residual add) within 1e-4 (tensor-core fp32 accumulation), bf16 ones
 * within 1e-2. Exits 1 on any mismatch.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "harness.cuh"

#include "../../src/backend/cuda/cuda_elementwise.cu"
#include "../../src/backend/cuda/cuda_gemm.cu"
#include "../../src/backend/cuda/cuda_gemm_q8.cu"
#include "../../src/backend/cuda/cuda_gemm_skinny.cu"
#include "../../src/backend/cuda/cuda_gemv.cu"
#include "../../src/backend/cuda/cuda_gemv_rows.cu"

extern "C" {
#include "../../src/util/numeric.h"
}

__global__ void probe_kernel(int *out) {
#ifdef NC_HAVE_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)(rnd() >> 8) / 8388608.0f - 1.0f; } /* [-1, 1) */

static int failures;
static nc_cuda cu;
static double copy_bw;
static void *flush_buf; /* written before each timed call: weights start from HBM, not L2 */
#define FLUSH_BYTES (96u << 20)

static const char *fmt_name(int f) { return f == NC_WEIGHT_INT8 ? "int8" : f == NC_WEIGHT_FP8 ? "fp8" : "bf16"; }

/* One weight matrix in every format: device copies and the host values
 * (dequantised, as doubles would see them). */
typedef struct {
    int rows, cols;
    uint8_t *q8[3]; /* [format]: int8 / e4m3 bytes on the device (index 1, 2) */
    bf16 *w16;      /* the bf16 weights of the baseline */
    std::vector<uint16_t> h16;
    float *scale;   /* device [rows] */
    std::vector<uint8_t> hq[3];
    std::vector<float> hs;
    std::vector<float> hs1; /* ones: the row scales of bf16 weights */
} matrix;

static float host_weight(const matrix &m, int f, size_t i) {
    if (f == NC_WEIGHT_BF16) {
        uint32_t u = (uint32_t)m.h16[i] << 16;
        float v;
        memcpy(&v, &u, 4);
        return v;
    }
    uint8_t b = m.hq[f][i];
    return f == NC_WEIGHT_INT8 ? (float)(int8_t)b : nc_f8e4m3_to_f32(b);
}

static void make_matrix(matrix &m, int rows, int cols) {
    m.rows = rows, m.cols = cols;
    size_t n = (size_t)rows * cols;
    m.hs.resize(rows);
    for (int r = 0; r < rows; r++) m.hs[r] = (0.5f + 0.5f * (frand() + 1.0f)) / 127.0f;
    m.hs1.assign(rows, 1.0f);
    std::vector<uint16_t> w16(n);
    for (int f = NC_WEIGHT_INT8; f <= NC_WEIGHT_FP8; f++) {
        m.hq[f].resize(n);
        for (size_t i = 0; i < n; i++) {
            uint8_t b = (uint8_t)rnd();
            if (f == NC_WEIGHT_INT8 && b == 0x80) b = 0x81; /* -128 never occurs */
            if (f == NC_WEIGHT_FP8 && (b & 0x7f) == 0x7f) b ^= 1; /* nor does NaN */
            m.hq[f][i] = b;
        }
        CK(cudaMalloc(&m.q8[f], n));
        CK(cudaMemcpy(m.q8[f], m.hq[f].data(), n, cudaMemcpyHostToDevice));
    }
    for (size_t i = 0; i < n; i++) w16[i] = (uint16_t)(0x3c00 + (rnd() & 0x3ff) - 0x200) ^ ((rnd() & 1) << 15);
    CK(cudaMalloc(&m.w16, n * 2));
    CK(cudaMemcpy(m.w16, w16.data(), n * 2, cudaMemcpyHostToDevice));
    m.h16 = w16;
    CK(cudaMalloc(&m.scale, rows * 4));
    CK(cudaMemcpy(m.scale, m.hs.data(), rows * 4, cudaMemcpyHostToDevice));
}

static void free_matrix(matrix &m) {
    for (int f = NC_WEIGHT_INT8; f <= NC_WEIGHT_FP8; f++) CK(cudaFree(m.q8[f]));
    CK(cudaFree(m.w16));
    CK(cudaFree(m.scale));
}

static nc_cuda_weight weight_of(const matrix &m, int f) {
    nc_cuda_weight w = {f == NC_WEIGHT_BF16 ? (const void *)m.w16 : (const void *)m.q8[f], m.rows, m.cols, m.rows,
                        (nc_cuda_weight_format)f, f == NC_WEIGHT_BF16 ? NULL : m.scale};
    return w;
}

/* Median of 9 timed calls of `run` after 2 warm-ups, in microseconds (L2
 * flushed before each when flush_buf is set). */
template <typename F>
static double time_us(F run) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> t;
    for (int i = 0; i < 11; i++) {
        if (flush_buf) CK(cudaMemsetAsync(flush_buf, i, FLUSH_BYTES, cu.stream));
        CK(cudaEventRecord(e0, cu.stream));
        run(i);
        CK(cudaEventRecord(e1, cu.stream));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 2) t.push_back(ms);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2] * 1e3;
}

/* ==== the GEMV ==== */

/* The 8-bit GEMV kernels compared: the first kernel with R rows per warp,
 * or the streaming one (R = 0); bf16 weights run once, as "bf16". */
typedef struct {
    const char *name;
    int R;
} gemv_variant;
static const gemv_variant q8_variants[] = {{"old R=1", 1}, {"old R=2", 2}, {"old R=4", 4}, {"new", 0}, {"tc", -1}};

static void gemv_select(const gemv_variant &v) {
    cu.gemv_q8 = v.R == 0 ? NC_GEMV_Q8_STREAM : v.R < 0 ? NC_GEMV_Q8_TC : NC_GEMV_Q8_FIRST;
    if (v.R > 0) cu.env.cuda_gemv_q8_rows = v.R;
}

/* The variants run for format f: bf16 once as "bf16" (the GEMV), and
 * through the tensor-core GEMV as "tc". */
static bool variant_runs(int f, const gemv_variant &v) { return f != NC_WEIGHT_BF16 || v.R == 1 || v.R < 0; }
static const char *variant_name(int f, const gemv_variant &v) {
    return f == NC_WEIGHT_BF16 && v.R == 1 ? "bf16" : v.name;
}

/* nc_cuda_gemv as the backend runs it, or for bf16 weights with the "tc"
 * variant selected the tensor-core GEMV with one row. */
static int gemv_call(const nc_cuda_weight *w, const void *in, bool in16, bool norm, nc_cuda_epilogue e, void *out) {
    if (w->format == NC_WEIGHT_BF16 && cu.gemv_q8 == NC_GEMV_Q8_TC)
        return nc_cuda_gemv_rows(&cu, w, in, in16, norm, 1, e, out);
    return nc_cuda_gemv(&cu, w, in, in16, norm, e, out);
}

/* y for rows r of m (format f) against the host reference; returns max
 * |err| / max |ref| over the rows checked. */
static double gemv_error(const matrix &m, int f, const std::vector<float> &x, bool norm, int epi, const float *y,
                         const bf16 *yb) {
    double ss = 0;
    for (int k = 0; k < m.cols; k++) ss += (double)x[k] * x[k];
    double inv = norm ? 1.0 / sqrt(ss / m.cols + (double)FLT_EPSILON) : 1.0, md = 0, mr = 0;
    for (int r = 0; r < m.rows; r += (m.rows > 4096 ? 37 : 1)) {
        double acc = 0;
        for (int k = 0; k < m.cols; k++) acc += (double)host_weight(m, f, (size_t)r * m.cols + k) * x[k];
        double ref = acc * (f == NC_WEIGHT_BF16 ? 1.0 : m.hs[r]) * inv;
        if (epi == NC_EPI_RELU2) ref = ref > 0 ? ref * ref : 0;
        if (epi == NC_EPI_SOFTCAP) ref = 15.0 * tanh(ref / 15.0);
        double got = epi == NC_EPI_RELU2 ? (double)__bfloat162float(yb[r]) : (double)y[r];
        md = std::max(md, got == got ? fabs(got - ref) : 1e30);
        mr = std::max(mr, fabs(ref));
    }
    return md / (mr + 1e-30);
}

/* The GEMV checks' inputs (x: fp32; x16: bf16, xr its values as floats)
 * and outputs, on the device and the host. */
static struct {
    float *xd, *y;
    bf16 *xb, *yb;
    std::vector<float> x, xr, hy;
    std::vector<bf16> hyb;
} io;

/* Runs the GEMV of m (format f; bf16 input without the norm, or fp32
 * input with it) with epilogue e (adding onto zeros; the other outputs
 * start as NaN, so a row not written fails); returns its error against the
 * host reference. */
static double gemv_run_check(const matrix &m, int f, bool in16, int e) {
    nc_cuda_weight w = weight_of(m, f);
    void *out = e == NC_EPI_RELU2 ? (void *)io.yb : (void *)io.y;
    CK(cudaMemset(io.y, e == NC_EPI_ADD ? 0 : 0xff, m.rows * 4));
    CK(cudaMemset(io.yb, 0xff, m.rows * 2));
    if (gemv_call(&w, in16 ? (const void *)io.xb : (const void *)io.xd, in16, !in16, (nc_cuda_epilogue)e, out))
        exit(1);
    CK(cudaStreamSynchronize(cu.stream));
    CK(cudaMemcpy(io.hy.data(), io.y, m.rows * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(io.hyb.data(), io.yb, m.rows * 2, cudaMemcpyDeviceToHost));
    return gemv_error(m, f, in16 ? io.xr : io.x, !in16, e, io.hy.data(), io.hyb.data());
}

/* The GEMV checks' tolerance: fp32 sums of exactly widened weights (the
 * reference's math in another order), but the tensor-core GEMV rounds fp32
 * input rows to bf16 for the MMA. */
static double gemv_tol(const gemv_variant &v, bool in16) { return v.R < 0 && !in16 ? 1e-2 : 2e-5; }

/* Counts a failure when err is over tol (or NaN); returns the marker to print. */
static const char *judge(double err, double tol) {
    if (err <= tol) return "";
    failures++;
    return "  MISMATCH";
}

static void gemv_checks(const matrix *ms, const char *const *names, int n_shapes) {
    CK(cudaMalloc(&io.xd, 8704 * 4));
    CK(cudaMalloc(&io.xb, 8704 * 2));
    CK(cudaMalloc(&io.y, 65536 * 4));
    CK(cudaMalloc(&io.yb, 65536 * 2));
    io.x.resize(8704), io.xr.resize(8704), io.hy.resize(65536), io.hyb.resize(65536);
    std::vector<bf16> x16(8704);
    for (int k = 0; k < 8704; k++)
        io.x[k] = frand(), x16[k] = __float2bfloat16(frand()), io.xr[k] = __bfloat162float(x16[k]);
    CK(cudaMemcpy(io.xd, io.x.data(), 8704 * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(io.xb, x16.data(), 8704 * 2, cudaMemcpyHostToDevice));
    printf("\nGEMV (batch 1)\n%-10s %-5s %-8s %9s %8s %8s %10s\n", "shape", "fmt", "kernel", "us", "GB/s", "% copy",
           "max err");
    for (int s = 0; s < n_shapes; s++) {
        const matrix &m = ms[s];
        bool in16 = s == 1 || s == 3; /* attn proj, mlp proj: bf16 inputs */
        for (int f = NC_WEIGHT_BF16; f <= NC_WEIGHT_FP8; f++)
            for (const gemv_variant &v : q8_variants) {
                if (!variant_runs(f, v)) continue;
                gemv_select(v);
                double err = gemv_run_check(m, f, in16, NC_EPI_STORE);
                const char *verdict = judge(err, gemv_tol(v, in16));
                nc_cuda_weight w = weight_of(m, f);
                const void *in = in16 ? (const void *)io.xb : (const void *)io.xd;
                double us = time_us([&](int) { gemv_call(&w, in, in16, !in16, NC_EPI_STORE, io.y); });
                double bytes = (double)m.rows * m.cols * (f == NC_WEIGHT_BF16 ? 2 : 1) + (f ? m.rows * 4.0 : 0);
                printf("%-10s %-5s %-8s %9.2f %8.0f %7.1f%% %10.2e%s\n", names[s], fmt_name(f),
                       variant_name(f, v), us, bytes / us / 1e3,
                       100 * bytes / (us * 1e-6) / copy_bw, err, verdict);
            }
    }
    /* each epilogue once per format, on the fc shape, with the old kernel's
     * default (R = 2) and the new one */
    const int epis[] = {NC_EPI_ADD, NC_EPI_RELU2, NC_EPI_SOFTCAP};
    const gemv_variant *checked[] = {&q8_variants[1], &q8_variants[3], &q8_variants[4]};
    for (int f = NC_WEIGHT_INT8; f <= NC_WEIGHT_FP8; f++)
        for (const gemv_variant *v : checked)
            for (int e : epis) {
                gemv_select(*v);
                double err = gemv_run_check(ms[2], f, false, e), tol = e == NC_EPI_RELU2 ? 8e-3 : gemv_tol(*v, false);
                printf("  epilogue %d (%s, %s): max err %.2e%s\n", e, fmt_name(f), v->name, err, judge(err, tol));
            }
    /* the new kernel's other paths: its grid sized for 3 SMs (long runs of
     * rows per warp, many batches of 32 rows with the scales fetched a batch
     * ahead), and 1001 x 640 (8 lanes per row, a partial last row group) */
    matrix odd;
    make_matrix(odd, 1001, 640);
    gemv_select(q8_variants[3]);
    int sms = cu.sm_count;
    for (int f = NC_WEIGHT_INT8; f <= NC_WEIGHT_FP8; f++)
        for (int in16 = 0; in16 < 2; in16++) {
            for (int s = 0; s < n_shapes; s++) {
                cu.sm_count = 3;
                double err = gemv_run_check(ms[s], f, in16, NC_EPI_STORE);
                cu.sm_count = sms;
                printf("  new on 3 SMs' grid, %s (%s, %s input): max err %.2e%s\n", names[s], fmt_name(f),
                       in16 ? "bf16" : "fp32 normed", err, judge(err, 2e-5));
            }
            double err = gemv_run_check(odd, f, in16, NC_EPI_STORE);
            printf("  new, 1001 x 640 (%s, %s input): max err %.2e%s\n", fmt_name(f), in16 ? "bf16" : "fp32 normed",
                   err, judge(err, 2e-5));
        }
    free_matrix(odd);
    CK(cudaFree(io.xd));
    CK(cudaFree(io.xb));
    CK(cudaFree(io.y));
    CK(cudaFree(io.yb));
}

/* Microseconds per replay of one CUDA graph of a step's products:
 * product(w, s) for each matrix s = 0..3 of the L layers and then the
 * lm_head (s = 4), each with its own weights in W (format f). */
template <typename F>
static double step_graph_us(int L, const int (*shape)[2], void *W, int f, const float *scale, F product) {
    size_t es = f == NC_WEIGHT_BF16 ? 2 : 1;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(cu.stream, cudaStreamCaptureModeThreadLocal));
    char *p = (char *)W;
    for (int l = 0; l <= L; l++)
        for (int s = l == L ? 4 : 0; s < (l == L ? 5 : 4); s++) {
            nc_cuda_weight w = {p, shape[s][0], shape[s][1], shape[s][0], (nc_cuda_weight_format)f,
                                f ? scale : NULL};
            if (product(w, s)) exit(1);
            p += (size_t)shape[s][0] * shape[s][1] * es;
        }
    CK(cudaStreamEndCapture(cu.stream, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    double us = time_us([&](int) { CK(cudaGraphLaunch(ge, cu.stream)); });
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return us;
}

/* The step's GEMVs (L layers x qkv, o, fc, proj + lm_head), distinct
 * weights per layer, as one graph with PDL. */
static void step_graph(int L, const int (*shape)[2], const char *model) {
    printf("\nwhole %s step's GEMVs (%d x 4 + lm_head) in a CUDA graph, PDL on\n%-6s %-8s %9s %8s %8s\n", model, L,
           "fmt", "kernel", "ms", "GB/s", "% copy");
    size_t layer = 0;
    for (int s = 0; s < 4; s++) layer += (size_t)shape[s][0] * shape[s][1];
    size_t head = (size_t)shape[4][0] * shape[4][1], total = L * layer + head;
    float *x, *y, *scale;
    void *W;
    CK(cudaMalloc(&W, total * 2));
    CK(cudaMemset(W, 0x11, total * 2));
    CK(cudaMalloc(&x, 8704 * 4));
    CK(cudaMemset(x, 0, 8704 * 4));
    CK(cudaMalloc(&y, 65536 * 4));
    CK(cudaMalloc(&scale, 65536 * 4));
    CK(cudaMemset(scale, 0, 65536 * 4));
    for (int f = NC_WEIGHT_BF16; f <= NC_WEIGHT_FP8; f++)
        for (const gemv_variant &v : q8_variants) {
            if (!variant_runs(f, v)) continue;
            gemv_select(v);
            double us = step_graph_us(L, shape, W, f, scale, [&](const nc_cuda_weight &w, int s) {
                bool in16 = s == 1 || s == 3;
                return gemv_call(&w, x, in16, !in16, in16 ? NC_EPI_ADD : NC_EPI_STORE, y);
            });
            double bytes = (double)total * (f == NC_WEIGHT_BF16 ? 2 : 1);
            printf("%-6s %-8s %9.3f %8.0f %7.1f%%\n", fmt_name(f), variant_name(f, v), us / 1e3,
                   bytes / us / 1e3, 100 * bytes / (us * 1e-6) / copy_bw);
        }
    CK(cudaFree(W));
    CK(cudaFree(x));
    CK(cudaFree(y));
    CK(cudaFree(scale));
}

enum { K_SKINNY, K_MMA, K_LT, K_TC };
static const char *kname[] = {"wgmma", "mma.sync", "cuBLASLt", "tc gemv"};

/* The step's products for n = 2..8 rows (a small decode batch, or a
 * verified chunk of n - 1 drafts) as one graph with PDL: the wgmma skinny
 * GEMM against the tensor-core GEMV, bf16 input rows (STORE for qkv, fc and
 * the lm_head, ADD for the two projections). */
static void rows_step_graph(int L, const int (*shape)[2], const char *model) {
    printf("\nwhole %s step's products of n rows (%d x 4 + lm_head) in a CUDA graph, PDL on\n%-6s %3s %-8s %9s %8s\n",
           model, L, "fmt", "n", "kernel", "ms", "% copy");
    size_t layer = 0;
    for (int s = 0; s < 4; s++) layer += (size_t)shape[s][0] * shape[s][1];
    size_t total = L * layer + (size_t)shape[4][0] * shape[4][1];
    void *W, *Y;
    bf16 *X;
    float *scale;
    CK(cudaMalloc(&W, total * 2));
    CK(cudaMemset(W, 0x11, total * 2));
    CK(cudaMalloc(&X, 8 * 8704 * 2));
    CK(cudaMemset(X, 0, 8 * 8704 * 2));
    CK(cudaMalloc(&Y, 8 * 65536 * 4));
    CK(cudaMemset(Y, 0, 8 * 65536 * 4));
    CK(cudaMalloc(&scale, 65536 * 4));
    CK(cudaMemset(scale, 0, 65536 * 4));
    const int ns[] = {2, 5, 8};
    for (int f = NC_WEIGHT_BF16; f <= NC_WEIGHT_FP8; f++)
        for (int n : ns)
            for (int kern : {K_SKINNY, K_TC}) {
                if (kern == K_SKINNY && !cu.skinny) continue;
                double us = step_graph_us(L, shape, W, f, scale, [&](const nc_cuda_weight &w, int s) {
                    nc_cuda_epilogue e = s == 1 || s == 3 ? NC_EPI_ADD : NC_EPI_STORE;
                    return kern == K_TC ? nc_cuda_gemv_rows(&cu, &w, X, true, false, n, e, Y)
                                        : nc_cuda_skinny_gemm(&cu, &w, X, Y, n, e);
                });
                double bytes = (double)total * (f == NC_WEIGHT_BF16 ? 2 : 1);
                printf("%-6s %3d %-8s %9.3f %7.1f%%\n", fmt_name(f), n, kname[kern], us / 1e3,
                       100 * bytes / (us * 1e-6) / copy_bw);
            }
    CK(cudaFree(W));
    CK(cudaFree(X));
    CK(cudaFree(Y));
    CK(cudaFree(scale));
}

/* ==== the GEMMs ==== */


static void gemm_checks(const matrix *ms, const char *const *names, int n_shapes) {
    const int ns[] = {2, 5, 8, 17, 33, 64, 65, 200, 2048};
    int maxn = 2048, maxk = 8704;
    bf16 *X, *Yb;
    float *Y;
    CK(cudaMalloc(&X, (size_t)maxn * maxk * 2));
    CK(cudaMalloc(&Y, (size_t)maxn * 65536 * 4));
    CK(cudaMalloc(&Yb, (size_t)maxn * 65536 * 2));
    std::vector<bf16> hx((size_t)maxn * maxk);
    for (auto &v : hx) v = __float2bfloat16(frand());
    CK(cudaMemcpy(X, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
    std::vector<float> hy;
    std::vector<bf16> hyb;
    printf("\nGEMMs\n%-10s %5s %-5s %-9s %9s %9s %8s %10s\n", "shape", "n", "fmt", "kernel", "us", "TFLOP/s", "GB/s",
           "max err");
    for (int s = 0; s < n_shapes; s++) {
        const matrix &m = ms[s];
        for (int n : ns) {
            if (s == 4 && n > 64) continue; /* the lm_head runs for the logits rows only */
            for (int f = NC_WEIGHT_BF16; f <= NC_WEIGHT_FP8; f++)
                for (int kern = K_SKINNY; kern <= K_TC; kern++) {
                    nc_cuda_weight w = weight_of(m, f);
                    if (kern == K_TC ? n > 8 : (kern == K_LT) != (f == NC_WEIGHT_BF16)) continue;
                    if (kern == K_SKINNY && !nc_cuda_skinny_fits(&cu, &w, X, Y, n)) continue;
                    /* bf16 Y (STORE) below 65 rows, fp32 (ADD onto zeros) at 65 and more */
                    bool add = n > 64;
                    auto run = [&](int) {
                        void *out = add ? (void *)Y : (void *)Yb;
                        nc_cuda_epilogue e = add ? NC_EPI_ADD : NC_EPI_STORE;
                        int rc = kern == K_SKINNY ? nc_cuda_skinny_gemm(&cu, &w, X, out, n, e)
                                 : kern == K_MMA  ? nc_cuda_mma_gemm(&cu, &w, X, out, n, e)
                                 : kern == K_TC   ? nc_cuda_gemv_rows(&cu, &w, X, true, false, n, e, out)
                                                  : nc_cuda_lt_matmul(&cu, m.w16, X, out, m.rows, n, m.cols, e);
                        if (rc) exit(1);
                    };
                    double err = 0;
                    if (f != NC_WEIGHT_BF16 || kern == K_TC) {
                        CK(cudaMemset(Y, 0, (size_t)n * m.rows * 4));
                        run(0);
                        CK(cudaStreamSynchronize(cu.stream));
                        size_t cnt = (size_t)n * m.rows;
                        hy.resize(cnt), hyb.resize(cnt);
                        if (add) CK(cudaMemcpy(hy.data(), Y, cnt * 4, cudaMemcpyDeviceToHost));
                        else CK(cudaMemcpy(hyb.data(), Yb, cnt * 2, cudaMemcpyDeviceToHost));
                        double md = 0, mr = 0;
                        for (int t = 0; t < n; t += (n > 64 ? 97 : 1))
                            for (int r = 0; r < m.rows; r += (m.rows > 4096 ? 37 : 7)) {
                                double acc = 0;
                                for (int k = 0; k < m.cols; k++)
                                    acc += (double)host_weight(m, f, (size_t)r * m.cols + k) *
                                           __bfloat162float(hx[(size_t)t * m.cols + k]);
                                acc *= f == NC_WEIGHT_BF16 ? 1.0f : m.hs[r];
                                double got = add ? hy[(size_t)t * m.rows + r]
                                                 : (double)__bfloat162float(hyb[(size_t)t * m.rows + r]);
                                md = std::max(md, got == got ? fabs(got - acc) : 1e30);
                                mr = std::max(mr, fabs(acc));
                            }
                        err = md / (mr + 1e-30);
                        if (!(err <= (add ? 1e-4 : 1e-2))) {
                            failures++;
                            printf("  MISMATCH\n");
                        }
                    }
                    double us = time_us(run);
                    double bytes = (double)m.rows * m.cols * (f == NC_WEIGHT_BF16 ? 2 : 1);
                    printf("%-10s %5d %-5s %-9s %9.2f %9.1f %8.0f %10.2e\n", names[s], n, fmt_name(f), kname[kern], us,
                           2.0 * n * m.rows * m.cols / us * 1e-6, bytes / us / 1e3, err);
                }
        }
    }
    CK(cudaFree(X));
    CK(cudaFree(Y));
    CK(cudaFree(Yb));
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "all";
    bool gemv_only = argc > 2 && !strcmp(argv[2], "gemv");
    int dev;
    CK(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    printf("%s (cc %d.%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    if (prop.major * 10 + prop.minor < 89) {
        printf("skipped: fp8 needs compute capability 8.9 or later\n");
        return 0;
    }
    CK(cudaStreamCreateWithFlags(&cu.stream, cudaStreamNonBlocking));
    cu.cfg.norm_eps = FLT_EPSILON, cu.cfg.softcap = 15.0f;
    cu.sm_count = prop.multiProcessorCount, cu.cc_major = prop.major, cu.cc_minor = prop.minor;
    cu.pdl = prop.major >= 9;
    cu.env.cuda_skinny = true;
    {
        int *d, h = 0;
        CK(cudaMalloc(&d, 4));
        probe_kernel<<<1, 1>>>(d);
        CK(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost));
        cu.have_wgmma = h == 1 && prop.major == 9;
    }
    cu.lt_workspace_bytes = 32u << 20;
    CK(cudaMalloc(&cu.lt_workspace, cu.lt_workspace_bytes));
    if (nc_cuda_gemm_init(&cu) || nc_cuda_skinny_init(&cu) || nc_cuda_mma_gemm_init(&cu)) return 1;
    cu.gemv_rows_tiles = 65536 / GR_TILE, cu.gemv_rows_ws_floats = cu.gemv_rows_tiles * GR_MAX_SPLITS * GR_PART;
    CK(cudaMalloc(&cu.gemv_rows_ws, cu.gemv_rows_ws_floats * 4));
    CK(cudaMalloc(&cu.gemv_rows_count, cu.gemv_rows_tiles * 4));
    CK(cudaMemset(cu.gemv_rows_count, 0, cu.gemv_rows_tiles * 4));
    printf("wgmma skinny GEMM: %s\n", cu.skinny ? "yes" : "no (this build or card has no sm_90a code)");
    {
        size_t bytes = 1u << 30;
        void *a, *b;
        CK(cudaMalloc(&a, bytes));
        CK(cudaMalloc(&b, bytes));
        CK(cudaMemset(a, 1, bytes));
        double us = time_us([&](int) { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, cu.stream)); });
        copy_bw = 2.0 * bytes / (us * 1e-6);
        printf("copy bandwidth %.0f GB/s\n", copy_bw / 1e9);
        CK(cudaFree(a));
        CK(cudaFree(b));
    }
    CK(cudaMalloc(&flush_buf, FLUSH_BYTES));
    const char *names[] = {"qkv", "attn proj", "mlp fc", "mlp proj", "lm_head"};
    static const int d34[5][2] = {{6528, 2176}, {2176, 2176}, {8704, 2176}, {2176, 8704}, {65536, 2176}};
    static const int d20[5][2] = {{3840, 1280}, {1280, 1280}, {5120, 1280}, {1280, 5120}, {65536, 1280}};
    const struct {
        const char *name;
        const int (*shape)[2];
        int L;
    } models[] = {{"d34", d34, 34}, {"d20", d20, 20}};
    for (auto &md : models) {
        if (strcmp(which, "all") && strcmp(which, md.name)) continue;
        printf("\n==== %s\n", md.name);
        matrix ms[5];
        for (int s = 0; s < 5; s++) make_matrix(ms[s], md.shape[s][0], md.shape[s][1]);
        gemv_checks(ms, names, 5);
        step_graph(md.L, md.shape, md.name);
        rows_step_graph(md.L, md.shape, md.name);
        if (!gemv_only) gemm_checks(ms, names, 5);
        for (int s = 0; s < 5; s++) free_matrix(ms[s]);
    }
    printf("\n%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
