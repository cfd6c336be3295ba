#!/usr/bin/env python3
"""bench_pytorch.py: the strongest PyTorch baselines for `nanochat bench`, on
the same shapes, to be measured in the same device call.

The model is nanochat's V1 `GPT.forward` (docs/model.md): rmsnorm without
weight after the embedding and before every block, RoPE (half-split pairs,
bf16 tables) then QK-norm, softmax attention, ReLU² MLP, an untied lm_head and
a softcap of 15 in fp32. Weights are random bf16 (uniform ±sqrt(3/fan_in),
never zero), q, k and v in one fused matrix per layer. Each test gets a static
KV cache sized exactly to its context: a decode step at context n writes the
new key and value at position n and attends to all n + 1 positions, no mask
(gpt-fast style, but sliced to the context instead of masking a longer cache).
The cache starts filled with random values (decode speed depends on how many
keys there are, not on what they are); each step's argmax is the next input.
Every timed step of a test runs at the same context (in graph modes, one
graph replayed); nanochat bench's steps start there and advance.

Modes; each (mode, test) is one attempt, and a failure (a compile error, out
of memory) is reported while the rest still run:
  eager         PyTorch ops launched one by one from Python
  graph         the eager step captured in a CUDA graph and replayed
  compile       torch.compile (inductor) of the whole step with gpt-fast's
                settings (coordinate descent tuning, which also turns batch-1
                matrix-vector products into tuned Triton reductions),
                captured in a CUDA graph
  max-autotune  the same with mode="max-autotune-no-cudagraphs" (inductor
                also autotunes its matrix-product templates)

Tests, named as `nanochat bench` names them: `prefill N` (one N-token
prompt, logits of the last position; time to those logits), `decode ctx N`
(batch 1), `batch B ctx N` (B rows at context N).

Compiling: one compiled step per mode and kind: decode of one row (the
context is dynamic, so every `decode ctx` test reuses it), decode of several
rows (rows and context dynamic), prefill. On an H100 each takes about a
minute for d34. --budget bounds the whole run: cheap modes run first, and a
compile that is not expected to fit in the time left is skipped and reported.

Self-check: before timing, every mode runs one step from the same state as
eager; the logits and the first layer's key and value written to the cache
must agree within --tol (relative L2). A mode that disagrees is reported
WRONG, not timed, and the script exits 1. On the CPU (`--device cpu --model
tiny`: tiny shapes, no CUDA graphs, timings meaningless) that check is the
point.

Output: one line per measurement, a table (tests x modes, best mode last)
and a line `JSON {...}` with every result and, per test, the best mode.
--json-out FILE keeps the same JSON in FILE, rewritten after every result, so
a run stopped from outside still leaves what it measured.
    python3 tools/bench_pytorch.py --model d34 [--budget 270]
    python3 tools/bench_pytorch.py --device cpu --model tiny
"""
import argparse
import gc
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# n_layer, n_embd, n_head, vocab
SHAPES = {"tiny": (2, 64, 4, 512), "d20": (20, 1280, 10, 65536), "d26": (26, 1664, 13, 65536),
          "d32": (32, 2048, 16, 65536), "d34": (34, 2176, 17, 65536)}
SOFTCAP = 15.0
ROPE_BASE = 10000.0
MODES = ["eager", "graph", "compile", "max-autotune"]
COMPILE_MODE = {"compile": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def rms(x):
    """nanochat's norm: no weight, PyTorch's default eps (FLT_EPSILON for fp32)."""
    return F.rms_norm(x, (x.size(-1),))


class Block(nn.Module):
    def __init__(self, C, mat):
        super().__init__()
        self.wqkv, self.wo = mat(3 * C, C), mat(C, C)   # (3C, C) fused q, k, v; (C, C)
        self.fc, self.proj = mat(4 * C, C), mat(C, 4 * C)


class GPT(nn.Module):
    """V1 with random weights. Dimensions: B rows, T tokens per row, S cached
    positions, C channels, H heads of D, V vocabulary."""

    def __init__(self, L, C, H, V, max_pos, device):
        super().__init__()
        gen = torch.Generator(device=device).manual_seed(1)

        def mat(rows, cols):
            bound = math.sqrt(3.0 / cols)
            w = (torch.rand(rows, cols, device=device, generator=gen) * 2 - 1) * bound
            return nn.Parameter(w.to(torch.bfloat16), requires_grad=False)

        self.H, self.D = H, C // H
        self.wte, self.lm_head = mat(V, C), mat(V, C)   # (V, C) each, not tied
        self.blocks = nn.ModuleList(Block(C, mat) for _ in range(L))
        inv = 1.0 / ROPE_BASE ** (torch.arange(0, self.D, 2, dtype=torch.float32, device=device) / self.D)
        freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32, device=device), inv)
        self.register_buffer("cos", freqs.cos().bfloat16(), persistent=False)   # (max_pos, D/2)
        self.register_buffer("sin", freqs.sin().bfloat16(), persistent=False)

    def rope(self, x, pos):
        """x (B, T, H, D) at positions pos (T): nanochat's apply_rotary_emb."""
        d = self.D // 2
        cos, sin = self.cos[pos][None, :, None, :], self.sin[pos][None, :, None, :]
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, x1 * -sin + x2 * cos], dim=-1)

    def forward_tokens(self, tok, pos, ks, vs, prefill):
        """tok (B, T) at positions pos (T); ks, vs: per layer (B, H, S, D).
        Decode (T = 1): writes the new key and value at pos and attends to all
        S positions. Prefill (S = T): writes positions 0..T-1, causal
        attention. Returns the last position's logits (B, V) fp32 and their
        argmax (B)."""
        B, T = tok.shape
        x = rms(self.wte[tok])
        for blk, kc, vc in zip(self.blocks, ks, vs):
            q, k, v = (rms(x) @ blk.wqkv.t()).view(B, T, 3, self.H, self.D).unbind(2)
            q, k = rms(self.rope(q, pos)), rms(self.rope(k, pos))
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if prefill:
                kc.copy_(k)
                vc.copy_(v)
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                kc.index_copy_(2, pos, k)
                vc.index_copy_(2, pos, v)
                a = F.scaled_dot_product_attention(q, kc, vc)
            x = x + a.transpose(1, 2).reshape(B, T, -1) @ blk.wo.t()
            x = x + F.relu(rms(x) @ blk.fc.t()).square() @ blk.proj.t()
        logits = (rms(x[:, -1]) @ self.lm_head.t()).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        return logits, logits.argmax(-1)

    def decode(self, tok, pos, ks, vs):
        return self.forward_tokens(tok, pos, ks, vs, prefill=False)

    def prefill(self, tok, pos, ks, vs):
        return self.forward_tokens(tok, pos, ks, vs, prefill=True)


class Test:
    """One benchmark: `prefill T` (rows 1, ctx 0, T tokens) or decode of
    `rows` rows at context `ctx`."""

    def __init__(self, name, kind, rows, ctx, tokens, steps):
        self.name, self.kind, self.rows, self.ctx, self.tokens, self.steps = name, kind, rows, ctx, tokens, steps
        self.ref = None   # eager's (logits, written key, written value), made once

    def state(self, model, device):
        """Fresh inputs and cache, the same on every call (seeded)."""
        gen = torch.Generator(device=device).manual_seed(2)
        H, D, V = model.H, model.D, model.wte.shape[0]
        S = self.tokens if self.kind == "prefill" else self.ctx + 1

        def cache():
            return [torch.randn(self.rows, H, S, D, device=device, dtype=torch.bfloat16, generator=gen)
                    for _ in model.blocks]

        st = argparse.Namespace(ks=cache(), vs=cache())
        st.tok0 = torch.randint(0, V, (self.rows, self.tokens), device=device, generator=gen)
        st.tok = st.tok0.clone()
        st.pos = (torch.arange(self.tokens, device=device) if self.kind == "prefill"
                  else torch.tensor([self.ctx], device=device))
        return st

    def written(self, st):
        """What the step wrote to the cache: the first layer's key and value at
        the step's position (its whole cache for a prefill). The first layer's,
        because they carry no rounding differences from earlier layers: a
        position or write error shows in full."""
        if self.kind == "prefill":
            return st.ks[0].clone(), st.vs[0].clone()
        return st.ks[0][:, :, self.ctx].clone(), st.vs[0][:, :, self.ctx].clone()


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


class Bench:
    def __init__(self, args):
        self.args, self.dev = args, torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.dev_name = torch.cuda.get_device_name() if self.cuda else "cpu"
        self.t_start = time.monotonic()
        self.compiled = {}          # (mode, kind) -> compiled step
        self.compile_failed = {}    # (mode, kind) -> error text
        # Seconds the first compile of a mode is expected to take: the longest
        # seen so far for that mode; max-autotune, before one is seen, twice
        # the plain compile's (it also compiles and times matrix templates).
        self.compile_s = {}
        self.json_out = args.json_out
        self.results = []
        self.wrong = False

    def left(self):
        return math.inf if self.args.budget <= 0 else self.args.budget - (time.monotonic() - self.t_start)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def fn_kind(self, test):
        return "prefill" if test.kind == "prefill" else ("decode1" if test.rows == 1 else "decodeN")

    def step_fn(self, model, mode, test):
        """The step function of `mode` for `test` (compiled once per mode and kind)."""
        eager = model.prefill if test.kind == "prefill" else model.decode
        if mode in ("eager", "graph"):
            return eager
        key = (mode, self.fn_kind(test))
        if key not in self.compiled:
            self.compiled[key] = torch.compile(eager, mode=COMPILE_MODE[mode], fullgraph=True)
        return self.compiled[key]

    def make_runner(self, fn, test, st, mode):
        """A callable doing one step (the next input fed back for decode),
        returning the logits; in graph modes a CUDA graph replay. Also
        returns the seconds of its first call (the compile, when there is one)."""
        if test.kind != "prefill" and mode in COMPILE_MODE:
            # Cache length (and rows, for several) vary between tests: one compile serves them all.
            dims = (0, 2) if test.rows > 1 else (2,)
            for t in st.ks + st.vs:
                for d in dims:
                    torch._dynamo.maybe_mark_dynamic(t, d)
            if test.rows > 1:
                torch._dynamo.maybe_mark_dynamic(st.tok, 0)

        def step():
            logits, nxt = fn(st.tok, st.pos, st.ks, st.vs)
            if test.kind != "prefill":
                st.tok.copy_(nxt.view(-1, 1))
            return logits

        t0 = time.monotonic()
        if not (self.cuda and mode != "eager"):
            step()
            self.sync()
            return step, time.monotonic() - t0
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
            torch.cuda.synchronize()
            first = time.monotonic() - t0
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()

        def replay():
            graph.replay()
            return out

        replay.graph = graph   # keeps the graph (and its memory pool) alive with the runner
        return replay, first

    def timed(self, run, steps):
        for _ in range(3):
            run()
        self.sync()
        ts = []
        for _ in range(steps):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                run()
                b.record()
                b.synchronize()
                ts.append(a.elapsed_time(b) / 1e3)
            else:
                t0 = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def check(self, run, test, st):
        """One step from the test's initial state against eager's; returns the logits' error."""
        st.tok.copy_(st.tok0)
        logits = run().clone()
        self.sync()
        k, v = test.written(st)
        ref_logits, ref_k, ref_v = test.ref
        err = rel_err(logits, ref_logits)
        cache_err = max(rel_err(k, ref_k), rel_err(v, ref_v))
        if not (err <= self.args.tol and cache_err <= self.args.tol):   # NaN fails too
            raise AssertionError(f"WRONG: logits differ from eager's by {err:.3g}, the written cache by "
                                 f"{cache_err:.3g} (relative L2; --tol {self.args.tol})")
        return err

    def reference(self, model, test):
        st = test.state(model, self.dev)
        logits, _ = model.prefill(st.tok, st.pos, st.ks, st.vs) if test.kind == "prefill" else \
            model.decode(st.tok, st.pos, st.ks, st.vs)
        test.ref = (logits.clone(),) + test.written(st)

    def summary(self):
        return dict(device=self.dev_name, torch=torch.__version__, model=self.args.model, budget_s=self.args.budget,
                    elapsed_s=round(time.monotonic() - self.t_start, 1), results=self.results, best=self.best())

    def record(self, mode, test, **kv):
        row = dict(mode=mode, test=test.name, **kv)
        self.results.append(row)
        if self.json_out:
            with open(self.json_out + ".tmp", "w") as f:
                json.dump(self.summary(), f)
            os.replace(self.json_out + ".tmp", self.json_out)
        if "tok_s" in row:
            extra = f"  (first call {row['first_call_s']:.0f} s)" if row.get("first_call_s", 0) >= 1 else ""
            print(f"{mode:13s} {test.name:18s} {row['tok_s']:11.1f} tok/s {row['ms']:9.3f} ms  "
                  f"err {row['err']:.1e}{extra}", flush=True)
        else:
            print(f"{mode:13s} {test.name:18s} {row['error']}", flush=True)

    def run_one(self, model, mode, test):
        key = (mode, self.fn_kind(test)) if mode in COMPILE_MODE else None
        if mode == "graph" and not self.cuda:
            return   # the same as eager without a GPU
        if key in self.compile_failed:
            return self.record(mode, test, error=f"not run: {self.compile_failed[key]}")
        if self.left() <= 0:
            return self.record(mode, test, error="skipped: --budget spent")
        fresh = key is not None and key not in self.compiled
        expect = self.compile_s.get(mode) or (self.compile_s.get("compile") or self.args.compile_estimate) * \
            (2 if mode == "max-autotune" else 1)
        if fresh and expect > self.left():
            self.compile_failed[key] = f"compile skipped: ~{expect:.0f} s expected, " \
                                       f"{self.left():.0f} s of --budget left"
            return self.record(mode, test, error=self.compile_failed[key])
        st = run = None
        try:
            if test.ref is None:
                self.reference(model, test)
            st = test.state(model, self.dev)
            fn = self.step_fn(model, mode, test)
            try:
                run, first = self.make_runner(fn, test, st, mode)
            except Exception as e:
                if fresh:
                    self.compile_failed[key] = f"compile failed: {one_line(e)}"
                raise
            if fresh:
                self.compile_s[mode] = max(self.compile_s.get(mode, 0), first)
            err = self.check(run, test, st)
            sec = self.timed(run, test.steps)
            self.record(mode, test, tok_s=round(test.rows * (test.tokens if test.kind == "prefill" else 1) / sec, 2),
                        ms=round(sec * 1e3, 4), err=float(f"{err:.3g}"), first_call_s=round(first, 1))
        except AssertionError as e:
            self.wrong = True
            self.record(mode, test, error=str(e))
        except Exception as e:   # compile errors, out of memory, capture failures: report, go on
            self.record(mode, test, error=f"failed: {one_line(e)}")
        finally:
            del st, run
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()

    def best(self):
        best = {}
        for r in self.results:
            if "tok_s" in r and (r["test"] not in best or r["tok_s"] > best[r["test"]]["tok_s"]):
                best[r["test"]] = dict(mode=r["mode"], tok_s=r["tok_s"], ms=r["ms"])
        return best


def one_line(e):
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:240]


def parse_list(s):
    return [] if s in ("", "none") else [int(v) for v in s.split(",")]


def main():
    ap = argparse.ArgumentParser(description="PyTorch baselines for `nanochat bench` (see the file's top comment)")
    ap.add_argument("--model", default="d34", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--modes", default=None, help=f"comma-separated, of {','.join(MODES)} (default: all)")
    ap.add_argument("--prefill", type=int, default=None, help="prompt length of the prefill test (0 = skip)")
    ap.add_argument("--ctx", default=None, help="batch-1 decode contexts (default 128,1024,4096)")
    ap.add_argument("--batch", default=None, help="batched decode sizes (default 8,32,64,128)")
    ap.add_argument("--batch-ctx", type=int, default=None, help="context of the batched tests (default 512)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per decode test (default 64)")
    ap.add_argument("--budget", type=float, default=270, help="seconds for the whole run (0 = no limit)")
    ap.add_argument("--compile-estimate", type=float, default=None,
                    help="seconds a compile is expected to take until one has been measured (default 75; tiny 0)")
    ap.add_argument("--json-out", metavar="FILE", help="the JSON summary, rewritten after every result")
    ap.add_argument("--tol", type=float, default=0.1,
                    help="relative L2 error against eager allowed (bf16 rounding differences over many layers "
                         "reach a few 1e-2; a wrong position, mask or lost cache write gives more than 0.1)")
    args = ap.parse_args()
    tiny = args.model == "tiny"
    # Tiny shapes check the code, not the speed.
    defaults = dict(prefill=64, ctx="16,48", batch="2,4", batch_ctx=32, steps=3, compile_estimate=0) if tiny else \
        dict(prefill=2048, ctx="128,1024,4096", batch="8,32,64,128", batch_ctx=512, steps=64, compile_estimate=75)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    modes = MODES if args.modes is None else args.modes.split(",")
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode '{m}' (modes: {', '.join(MODES)})")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_pytorch: no CUDA device (use --device cpu --model tiny for the CPU self-check)", file=sys.stderr)
        return 2

    ctxs, batches = parse_list(args.ctx), parse_list(args.batch)
    tests = [Test(f"decode ctx {c}", "decode", 1, c, 1, args.steps) for c in ctxs]
    tests += [Test(f"batch {b} ctx {args.batch_ctx}", "decode", b, args.batch_ctx, 1, max(8, args.steps // 4))
              for b in batches]
    if args.prefill:
        tests.append(Test(f"prefill {args.prefill}", "prefill", 1, 0, args.prefill, max(3, args.steps // 8)))

    if any(m in COMPILE_MODE for m in modes):
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config
        inductor_config.coordinate_descent_tuning = True   # gpt-fast's setting
        inductor_config.fx_graph_cache = True
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 32)

    L, C, H, V = SHAPES[args.model]
    bench = Bench(args)
    print(f"device: {bench.dev_name}, torch {torch.__version__}, model {args.model} (L{L} C{C} H{H} V{V}, random bf16), "
          f"modes {','.join(modes)}, budget {args.budget:.0f} s", flush=True)
    with torch.inference_mode():
        max_pos = max([args.prefill] + [c + 1 for c in ctxs] + ([args.batch_ctx + 1] if batches else []))
        model = GPT(L, C, H, V, max_pos, bench.dev)
        for mode in modes:   # cheapest modes first, so a spent budget costs the compiled ones
            if mode in COMPILE_MODE:
                torch._dynamo.reset()   # nothing compiled for another mode may serve this one
            for test in tests:
                bench.run_one(model, mode, test)

    best = bench.best()
    names = [t.name for t in tests]
    cols = [m for m in modes if any(r["mode"] == m and "tok_s" in r for r in bench.results)]
    print(f"\n{'test':18s}" + "".join(f"{m:>14s}" for m in cols) + "   best")
    for name in names:
        cells = []
        for m in cols:
            r = next((r for r in bench.results if r["mode"] == m and r["test"] == name), None)
            cells.append(f"{r['tok_s']:14.1f}" if r and "tok_s" in r else f"{'-':>14s}")
        b = best.get(name)
        print(f"{name:18s}" + "".join(cells) + (f"   {b['mode']} {b['tok_s']:.1f} tok/s" if b else "   none"))
    print("JSON " + json.dumps(bench.summary()))
    return 1 if bench.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
