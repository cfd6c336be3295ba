#!/usr/bin/env python3
"""PyTorch baselines for `nanochat bench` (docs/performance.md, Baselines): the same shapes, measured
in the same device call.

A minimal re-implementation of nanochat's V1 forward (docs/model.md, V1 forward) with
random bf16 weights (uniform +-sqrt(3/fan_in), never zero) and a static KV
cache [L, B, H, T_max, D], in three modes:

  eager     plain PyTorch, one Python-driven step per token
  graph     one decode step captured in a CUDA graph and replayed
  compile   torch.compile of the step (inductor), then captured in a CUDA graph

Tests: prefill of a 2048-token prompt (batch 1, eager, SDPA flash attention;
time to the last position's logits), batch-1 decode at 128 and 1024 context,
batched decode at 8/32/64/128 sequences at 512 context (graph mode).
The KV cache before the timed steps is filled with random values: decode
speed does not depend on what the keys are, only on how many.

Prints one line per measurement and a JSON summary line at the end.
Usage: python3 tools/bench_pytorch.py [--model d34] [--quick] [--no-compile]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

SHAPES = {"d20": (20, 1280, 10), "d26": (26, 1664, 13), "d32": (32, 2048, 16), "d34": (34, 2176, 17)}
VOCAB = 65536
SOFTCAP = 15.0


def rms(x):
    return F.rms_norm(x, (x.size(-1),))


class Model:
    def __init__(self, L, C, H, dev, max_bt, max_t):
        self.L, self.C, self.H, self.D = L, C, H, C // H
        g = torch.Generator(device=dev).manual_seed(1)

        def mat(out, inp):
            s = math.sqrt(3.0 / inp)
            w = (torch.rand(out, inp, device=dev, generator=g) * 2 - 1) * s
            return w.to(torch.bfloat16)

        self.wte = mat(VOCAB, C)
        self.lm = mat(VOCAB, C)
        self.layers = [dict(wqkv=mat(3 * C, C), wo=mat(C, C), fc=mat(4 * C, C), proj=mat(C, 4 * C))
                       for _ in range(L)]
        D = self.D
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32, device=dev) / D))
        t = torch.arange(max_t + 4096, dtype=torch.float32, device=dev)
        fr = torch.outer(t, inv)
        self.cos, self.sin = fr.cos().bfloat16(), fr.sin().bfloat16()
        n = L * H * D * max_bt
        self.kbuf = torch.randn(n, device=dev, dtype=torch.bfloat16)
        self.vbuf = torch.randn(n, device=dev, dtype=torch.bfloat16)

    def set_cache(self, B, t):
        """Views the cache buffers as [L, B, H, t, D] (contiguous per test)."""
        n = self.L * B * self.H * t * self.D
        self.k = self.kbuf[:n].view(self.L, B, self.H, t, self.D)
        self.v = self.vbuf[:n].view(self.L, B, self.H, t, self.D)

    def rope(self, x, pos):  # x [B, T, H, D]; pos [T] long
        d = self.D // 2
        c, s = self.cos[pos][None, :, None, :], self.sin[pos][None, :, None, :]
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * c + x2 * s, -x1 * s + x2 * c], dim=-1)

    def forward(self, tok, pos, B, t_max, prefill=False):
        """tok [B, T]; pos [T] positions (same for every row). Returns argmax ids of the last position."""
        T = tok.size(1)
        x = rms(self.wte[tok])
        for li, w in enumerate(self.layers):
            h = rms(x)
            q, k, v = (h @ w["wqkv"].t()).view(B, T, 3, self.H, self.D).unbind(2)
            q, k = rms(self.rope(q, pos)), rms(self.rope(k, pos))
            kc, vc = self.k[li], self.v[li]
            kc.index_copy_(2, pos, k.transpose(1, 2))
            vc.index_copy_(2, pos, v.transpose(1, 2))
            if prefill:
                a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=True)
            else:
                mask = (torch.arange(t_max, device=tok.device)[None, :] <= pos[:, None])[None, None]
                a = F.scaled_dot_product_attention(q.transpose(1, 2), kc, vc, attn_mask=mask)
            x = x + a.transpose(1, 2).reshape(B, T, self.C) @ w["wo"].t()
            h = rms(x)
            x = x + F.relu(h @ w["fc"].t()).square() @ w["proj"].t()
        logits = (rms(x[:, -1]) @ self.lm.t()).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        return logits.argmax(-1)


def timed(fn, steps, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(steps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def decode_runner(m, B, ctx, t_max, mode):
    """A callable doing one decode step of B rows at position ctx (state advances)."""
    dev = m.wte.device
    m.set_cache(B, t_max)
    tok = torch.randint(0, VOCAB - 16, (B, 1), device=dev)
    pos = torch.tensor([ctx], device=dev)

    def step():
        nxt = m.forward(tok, pos, B, t_max)
        tok.copy_(nxt[:, None])
        pos.add_(1).clamp_(max=t_max - 1)

    if mode == "eager":
        return step
    fn = step
    if mode == "compile":
        cstep = torch.compile(lambda: m.forward(tok, pos, B, t_max), fullgraph=False)

        def fn():
            nxt = cstep()
            tok.copy_(nxt[:, None])
            pos.add_(1).clamp_(max=t_max - 1)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    pos.fill_(ctx)
    return g.replay


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="d34", choices=sorted(SHAPES))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--steps", type=int, default=64)
    args = ap.parse_args()
    L, C, H = SHAPES[args.model]
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    prefill_t = 256 if args.quick else 2048
    ctxs = [128] if args.quick else [128, 1024]
    batches = [8] if args.quick else [8, 32, 64, 128]
    steps = 16 if args.quick else args.steps
    max_b = max(batches)
    t_max_batch = 512 + steps + 16
    t_max = max(prefill_t, max(ctxs) + steps + 16, t_max_batch)
    m = Model(L, C, H, dev, max(max_b * t_max_batch, t_max), t_max)
    res = []
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__} model {args.model} (random bf16)")

    def report(mode, test, tok_s, ms):
        res.append(dict(mode=mode, test=test, tok_s=round(tok_s, 2), ms=round(ms, 4)))
        print(f"{mode:8s} {test:22s} {tok_s:12.1f} tok/s {ms:9.3f} ms", flush=True)

    with torch.inference_mode():
        tok = torch.randint(0, VOCAB - 16, (1, prefill_t), device=dev)
        pos = torch.arange(prefill_t, device=dev)
        m.set_cache(1, prefill_t)
        sec = timed(lambda: m.forward(tok, pos, 1, prefill_t, prefill=True), 3, warm=1)
        report("eager", f"prefill {prefill_t}", prefill_t / sec, sec * 1e3)
        modes = ["eager", "graph"] + ([] if args.no_compile else ["compile"])
        for mode in modes:
            for ctx in ctxs:
                t_run = ctx + steps + 16
                t0 = time.time()
                run = decode_runner(m, 1, ctx, t_run, mode)
                sec = timed(run, steps)
                report(mode, f"decode ctx {ctx}", 1 / sec, sec * 1e3)
                if mode == "compile":
                    print(f"         (compile + capture took {time.time() - t0:.0f} s)", flush=True)
        for B in batches:
            run = decode_runner(m, B, 512, t_max_batch, "graph")
            sec = timed(run, max(8, steps // 4))
            report("graph", f"batch {B} ctx 512", B / sec, sec * 1e3)
    print("JSON " + json.dumps(dict(device=torch.cuda.get_device_name(), model=args.model, results=res)))


if __name__ == "__main__":
    main()
