/*
 * dev/kernels/attn_prefill.cu: harness for the prefill flash-attention
 * kernel (llm.c dev/cuda style): it compiles the backend's own
 * src/backend/cuda/cuda_attn_prefill.cu into this program, runs it through
 * nc_cuda_attn_prefill on a paged KV cache with shuffled block tables, checks
 * it against a CPU reference (fp64 softmax attention of the same bf16 q, k,
 * v) and times the d34 shape (one 2048-token prompt, 17 heads, D 128).
 *
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -DNC_WITH_CUDA \
 *        -o /tmp/attn_prefill dev/kernels/attn_prefill.cu && /tmp/attn_prefill
 *
 * Every case runs both kernels (mma.sync v2 and wgmma v3, the backend's
 * default on sm_90; this harness is built for sm_90a) on the same data
 * against one reference. Cases: d34 full causal (T 2048, H = Hkv = 17), the
 * same with the V6 short window (512) and a 1000-key window, GQA (H 8,
 * Hkv 2) with three ragged chunks that continue earlier context at
 * positions that are not multiples of 64 (chunked prefill / prefix reuse),
 * short chunks (3, 7, 130, 1 rows), and GQA 6/3 with two long chunks and a
 * 300-key window.
 * A row passes when max |ours - ref| <= 2e-2 * max |ref| + 2e-3 (bf16 output and
 * bf16-rounded P, as the kernel computes; a wrong mask or block gives errors
 * of order 1). Timing: median of 20 launches, TFLOP/s of the causal (or
 * windowed) work 4·D·(visible keys) per query row and head.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>

#include "harness.cuh"

#include "../../src/backend/cuda/cuda_attn_prefill.cu"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

typedef struct { int T, pos; } chunk;

static int failures;
#define NVAR 3
static const char *var_name[NVAR] = {"mma.sync v2", "wgmma v3 64-key", "wgmma v3 128-key"};

/* One case: chunks (length, start position) of one batch, H query heads,
 * Hkv kv heads, window (INT32_MAX: full); every variant. Fills us[v] with
 * each variant's kernel time when timed. */
static void run_case(double *us_v, const char *name, const chunk *ch, int S, int H, int Hkv, int window, bool timed) {
    const int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS, R = NC_ATTN_PREFILL_ROWS;
    int N = 0, nblk = 0;
    for (int s = 0; s < S; s++) N += ch[s].T, nblk += (ch[s].pos + ch[s].T + BT - 1) / BT;
    int pool = nblk + 3;
    /* host data: q [N, H, D]; cache [pool][Hkv][64][D] (positions < pos + T of each chunk filled) */
    std::vector<bf16> q((size_t)N * H * D), kc((size_t)pool * Hkv * BT * D), vc(kc.size());
    for (auto &x : q) x = __float2bfloat16(frand() * 2.0f);
    for (size_t i = 0; i < kc.size(); i++) kc[i] = __float2bfloat16(frand() * 2.0f), vc[i] = __float2bfloat16(frand());
    /* metadata as build_meta packs it */
    std::vector<int32_t> perm(pool);
    for (int i = 0; i < pool; i++) perm[i] = i;
    for (int i = pool - 1; i > 0; i--) std::swap(perm[i], perm[(rng >> 33) % (i + 1)]), frand();
    std::vector<int32_t> s_tok0(S), s_ntok(S), s_pos(S), s_bt(S), bt, items;
    std::vector<std::pair<int, std::pair<int, int>>> it;
    for (int s = 0, t = 0; s < S; s++) {
        s_tok0[s] = t, s_ntok[s] = ch[s].T, s_pos[s] = ch[s].pos, s_bt[s] = (int32_t)bt.size();
        int nb = (ch[s].pos + ch[s].T + BT - 1) / BT;
        for (int k = 0; k < nb; k++) bt.push_back(perm[bt.size()]);
        for (int q0 = 0; q0 < ch[s].T; q0 += R)
            it.push_back({(ch[s].pos + std::min(q0 + R, ch[s].T) - 1) / BT, {s, q0}});
        t += ch[s].T;
    }
    std::stable_sort(it.begin(), it.end(), [](const auto &x, const auto &y) { return x.first > y.first; });
    for (auto &x : it) items.push_back(x.second.first), items.push_back(x.second.second);
    int n_items = (int)it.size();
    std::vector<int32_t> meta;
    nc_cuda_meta_layout ml;
    memset(&ml, 0, sizeof ml);
    ml.s_tok0 = meta.size(), meta.insert(meta.end(), s_tok0.begin(), s_tok0.end());
    ml.s_ntok = meta.size(), meta.insert(meta.end(), s_ntok.begin(), s_ntok.end());
    ml.s_pos = meta.size(), meta.insert(meta.end(), s_pos.begin(), s_pos.end());
    ml.s_bt = meta.size(), meta.insert(meta.end(), s_bt.begin(), s_bt.end());
    ml.items = meta.size(), meta.insert(meta.end(), items.begin(), items.end());
    ml.bt = meta.size(), meta.insert(meta.end(), bt.begin(), bt.end());

    static nc_cuda cu;
    static nc_cuda_layer layer;
    memset(&cu, 0, sizeof cu);
    {
        int dev;
        CK(cudaGetDevice(&dev));
        CK(cudaDeviceGetAttribute(&cu.cc_major, cudaDevAttrComputeCapabilityMajor, dev));
    }
    cu.n_blocks = pool, cu.H = H, cu.Hkv = Hkv, cu.G = H / Hkv, cu.D = D;
    layer.window = window;
    cu.layers = &layer;
    cu.ml = ml;
    CK(cudaMalloc(&cu.q, q.size() * 2));
    CK(cudaMalloc(&cu.kc, kc.size() * 2));
    CK(cudaMalloc(&cu.vc, vc.size() * 2));
    CK(cudaMalloc(&cu.attn, q.size() * 2));
    CK(cudaMalloc(&cu.meta_d, meta.size() * 4));
    CK(cudaMemcpy(cu.q, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(cu.kc, kc.data(), kc.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(cu.vc, vc.data(), vc.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(cu.meta_d, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
    std::vector<std::vector<bf16>> outs(NVAR, std::vector<bf16>(q.size()));
    for (int v = 0; v < NVAR; v++) {
        CK(cudaMemset(cu.attn, 0xff, q.size() * 2)); /* NaN: rows never written show up */
        if (nc_cuda_attn_prefill_init(&cu)) exit(1);
        fa_kernel = v;
        if (nc_cuda_attn_prefill(&cu, 0, n_items)) exit(1);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(outs[v].data(), cu.attn, q.size() * 2, cudaMemcpyDeviceToHost));
        us_v[v] = 0;
        if (timed) {
            cudaEvent_t e0, e1;
            CK(cudaEventCreate(&e0));
            CK(cudaEventCreate(&e1));
            std::vector<float> ts;
            for (int r = 0; r < 21; r++) {
                CK(cudaEventRecord(e0));
                if (nc_cuda_attn_prefill(&cu, 0, n_items)) exit(1);
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                if (r) ts.push_back(ms);
            }
            std::sort(ts.begin(), ts.end());
            us_v[v] = ts[ts.size() / 2] * 1e3;
        }
    }

    /* CPU reference; rows checked: all for small cases, every 3rd (and all of
     * heads 0 and H-1) for the large ones */
    double worst[NVAR] = {0}, flops = 0;
    int bad[NVAR] = {0}, checked = 0;
    std::vector<double> sc(1 << 16);
    for (int s = 0; s < S; s++)
        for (int i = 0; i < ch[s].T; i++) {
            int qp = ch[s].pos + i, t = s_tok0[s] + i;
            int k0 = window == INT32_MAX ? 0 : std::max(0, qp - window);
            flops += 4.0 * D * (qp - k0 + 1) * H;
            for (int h = 0; h < H; h++) {
                if (N > 1024 && i % 3 && h && h != H - 1) continue;
                int hk = h / (H / Hkv);
                const bf16 *qr = &q[((size_t)t * H + h) * D];
                double mx = -1e300, sum = 0, ref[NC_HEAD_DIM] = {0}, rmax = 0, err = 0;
                for (int kp = k0; kp <= qp; kp++) {
                    size_t off = (((size_t)bt[s_bt[s] + kp / BT] * Hkv + hk) * BT + kp % BT) * D;
                    double d = 0;
                    for (int e = 0; e < D; e++) d += (double)__bfloat162float(qr[e]) * __bfloat162float(kc[off + e]);
                    sc[kp - k0] = d / sqrt((double)D);
                    mx = std::max(mx, sc[kp - k0]);
                }
                for (int kp = k0; kp <= qp; kp++) {
                    size_t off = (((size_t)bt[s_bt[s] + kp / BT] * Hkv + hk) * BT + kp % BT) * D;
                    double p = exp(sc[kp - k0] - mx);
                    sum += p;
                    for (int e = 0; e < D; e++) ref[e] += p * __bfloat162float(vc[off + e]);
                }
                for (int e = 0; e < D; e++) {
                    ref[e] /= sum;
                    rmax = std::max(rmax, fabs(ref[e]));
                }
                checked++;
                for (int v = 0; v < NVAR; v++) {
                    err = 0;
                    for (int e = 0; e < D; e++) {
                        double o = __bfloat162float(outs[v][((size_t)t * H + h) * D + e]);
                        err = std::max(err, o == o ? fabs(o - ref[e]) : 1e30);
                    }
                    worst[v] = std::max(worst[v], err / (rmax + 1e-30));
                    if (!(err <= 2e-2 * rmax + 2e-3)) {
                        if (bad[v] < 3)
                            printf("  MISMATCH %s [%s]: chunk %d row %d (pos %d) head %d: max err %.3g, max |ref| %.3g\n",
                                   name, var_name[v], s, i, qp, h, err, rmax);
                        bad[v]++;
                    }
                }
            }
        }
    for (int v = 0; v < NVAR; v++) {
        printf("%-34s %-16s %5d rows, worst rel err %.2e, %s", name, var_name[v], checked, worst[v],
               bad[v] ? "FAIL" : "ok");
        if (timed) printf(" | %8.1f us | %6.1f TFLOP/s", us_v[v], flops / us_v[v] * 1e-6);
        printf("\n");
        failures += bad[v] > 0;
    }
    cudaFree(cu.q), cudaFree(cu.kc), cudaFree(cu.vc), cudaFree(cu.attn), cudaFree(cu.meta_d);
}

int main(void) {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("device: %s (%d SMs), prefill attention, %d-row items\n", p.name, p.multiProcessorCount,
           NC_ATTN_PREFILL_ROWS);
    double full[NVAR], w512[NVAR], none[NVAR];
    chunk d34[1] = {{2048, 0}};
    run_case(full, "d34 T2048 causal", d34, 1, 17, 17, INT32_MAX, true);
    run_case(w512, "d34 T2048 window 512", d34, 1, 17, 17, 512, true);
    run_case(none, "d34 T2048 window 1000", d34, 1, 17, 17, 1000, false);
    chunk rag[3] = {{300, 100}, {200, 37}, {130, 0}};
    run_case(none, "GQA 8/2 ragged, continued chunks", rag, 3, 8, 2, INT32_MAX, false);
    run_case(none, "GQA 8/2 ragged, window 100", rag, 3, 8, 2, 100, false);
    chunk small[4] = {{3, 61}, {7, 0}, {130, 64}, {1, 200}};
    run_case(none, "short chunks 3/7/130/1", small, 4, 4, 4, INT32_MAX, false);
    chunk two[2] = {{1000, 1048}, {777, 0}};
    run_case(none, "GQA 6/3 two long chunks, window 300", two, 2, 6, 3, 300, false);
    for (int v = 0; v < NVAR; v++)
        printf("d34 prefill attention, 34 layers [%s]: %.2f ms (window 512: %.2f ms)\n", var_name[v],
               full[v] * 34 * 1e-3, w512[v] * 34 * 1e-3);
    printf("%s\n", failures ? "attn_prefill: FAILED" : "attn_prefill: all cases ok");
    return failures ? 1 : 0;
}
