#!/usr/bin/env python3
"""make_forward_fixtures.py: PyTorch reference logits for the CPU backend's
exactness test (tests/c/test_cpu_forward.c) and the `nanochat forward` CLI
test (tests/sh/test_forward_cli.sh). Writes tests/data/forward/.

References:
  * V1: Hugging Face transformers' NanoChatForCausalLM (torch, CPU, fp32),
    adjusted to nanochat's numerics (docs/model.md, RMSNorm and RoPE): rms_norm eps = FLT_EPSILON
    instead of 1e-6, and rotary cos/sin rounded to bf16 (its rotary embedding
    is patched). It is cross-checked against our own minimal reference below,
    which must agree to 1e-5.
  * V6: our own PyTorch implementation of docs/model.md, Later generations (`reference_forward`,
    written from the spec, not from nanochat's code): smear, resid/x0
    lambdas, value embeddings with 3*sigmoid gates, q,k * 1.2, rope base
    100000, sliding windows "SSSL" (S = ceil(seq/4/128)*128), backout at
    layer L//2, vocab padded to 512 rows with vocab_size 500.

Weights. Checkpoints with C = 256..384 and fp32 matrices are megabytes each,
far over the fixture budget, so the three test models are not stored:
every weight is a deterministic function of its tensor name (`prng_uniform`,
a splitmix64 hash reproduced bit for bit by the C test) and the fixtures
hold only a manifest (sizes, tensor names, dtypes, shapes, scales) plus the
reference logits and greedy continuations. One tiny V1 checkpoint IS stored
in nanochat's native format (model_000010.pt: torch.save of the state dict,
fp32 matrices, bf16 wte; meta_000010.json with model_config) so the CLI test
exercises the real checkpoint loader end to end.

Usage: python3 tools/make_forward_fixtures.py [--out tests/data/forward]
(needs torch and transformers; runs in a few seconds on a CPU).
"""
import argparse
import json
import math
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F

FLT_EPSILON = float(np.finfo(np.float32).eps)
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

# ---------------------------------------------------------------------------
# Deterministic weights (mirrored in tests/c/test_cpu_forward.c)
# ---------------------------------------------------------------------------


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def prng_uniform(name, n, scale):
    """n float32 values uniform in [-scale, scale): value i (0-based) is
    ((mix(seed + (i+1)*GOLDEN) >> 40) * 2^-23 - 1) * scale in fp32, with
    seed = fnv1a64(name) and mix the splitmix64 finaliser."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32)
    return (u * np.float32(2.0**-23) - np.float32(1.0)) * np.float32(scale)


def f32(x):
    """x rounded to fp32, as a Python float (exact in JSON)."""
    return float(np.float32(x))


def make_weights(cfg):
    """State dict (name -> torch tensor) and the manifest that lets the C test
    rebuild it. cfg: gen, n_layer, n_embd, n_head, n_kv_head, vocab_size, padded_vocab."""
    L, C, H, Hkv = cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    D = C // H
    Vp = cfg["padded_vocab"]
    v6 = cfg["gen"] == "V6"
    state, manifest = {}, []

    def uniform(name, shape, scale, dtype):
        scale = f32(scale)
        x = torch.from_numpy(prng_uniform(name, int(np.prod(shape)), scale).reshape(shape))
        state[name] = x.to(dtype)
        manifest.append({"name": name, "dtype": "bf16" if dtype == torch.bfloat16 else "f32",
                         "shape": list(shape), "uniform": scale})

    def values(name, vals):
        vals = [f32(v) for v in vals]
        state[name] = torch.tensor(vals, dtype=torch.float32)
        manifest.append({"name": name, "dtype": "f32", "shape": [len(vals)], "values": vals})

    mat = torch.float32
    uniform("transformer.wte.weight", (Vp, C), math.sqrt(3.0), torch.bfloat16)
    for l in range(L):
        p = f"transformer.h.{l}."
        uniform(p + "attn.c_q.weight", (H * D, C), math.sqrt(3.0 / C), mat)
        uniform(p + "attn.c_k.weight", (Hkv * D, C), math.sqrt(3.0 / C), mat)
        uniform(p + "attn.c_v.weight", (Hkv * D, C), math.sqrt(3.0 / C), mat)
        uniform(p + "attn.c_proj.weight", (C, H * D), math.sqrt(3.0 / C), mat)
        uniform(p + "mlp.c_fc.weight", (4 * C, C), math.sqrt(3.0 / C), mat)
        # relu^2 outputs have a large mean square; keep the residual updates O(1)
        uniform(p + "mlp.c_proj.weight", (C, 4 * C), math.sqrt(3.0 / (4 * C)) * 0.5, mat)
        if v6 and l % 2 == (L - 1) % 2:
            uniform(p + "attn.ve_gate.weight", (Hkv, 12), 0.5, mat)
    uniform("lm_head.weight", (Vp, C), math.sqrt(3.0 / C), mat)
    if v6:
        values("resid_lambdas", [1.15 - 0.10 * i / max(L - 1, 1) for i in range(L)])
        values("x0_lambdas", [0.20 - 0.15 * i / max(L - 1, 1) for i in range(L)])
        uniform("smear_gate.weight", (1, 24), 0.5, mat)
        values("smear_lambda", [0.4])
        values("backout_lambda", [0.2])
        for l in range(L):
            if l % 2 == (L - 1) % 2:
                uniform(f"value_embeds.{l}.weight", (Vp, Hkv * D), 1.0, torch.bfloat16)
    return state, manifest


# ---------------------------------------------------------------------------
# Our own reference forward pass, written from docs/model.md (V1 forward, Later generations)
# ---------------------------------------------------------------------------


def window_sizes(cfg):
    L, seq = cfg["n_layer"], cfg["sequence_len"]
    if cfg["gen"] == "V1":
        return [None] * L  # full causal attention
    pattern = cfg.get("window_pattern", "SSSL")
    short = -(-seq // (4 * 128)) * 128  # ceil(seq/4/128)*128
    ws = [seq if pattern[l % len(pattern)] == "L" else short for l in range(L)]
    ws[-1] = seq
    return ws


def rms(x):
    return F.rms_norm(x, (x.size(-1),))  # eps None: FLT_EPSILON in fp32, as nanochat


def rotary(T, D, base, bf16):
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    cos, sin = freqs.cos(), freqs.sin()
    if bf16:
        cos, sin = cos.bfloat16().float(), sin.bfloat16().float()
    return cos, sin


def rope(x, cos, sin):  # x: [T, heads, D]; rotates by -theta (docs/model.md, RoPE)
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c + x2 * s, x1 * (-s) + x2 * c], dim=-1)


@torch.no_grad()
def reference_forward(cfg, W, ids, kv_round=None):
    """fp32 softcapped logits [T, vocab_size] for token ids `ids` (positions 0..T-1).
    kv_round, if given, maps keys and values [T, Hkv, D] (as attention reads
    them from a cache) to their stored precision (tools/make_quant_fixtures.py)."""
    v6 = cfg["gen"] == "V6"
    L, C, H, Hkv = cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    D, V = C // H, cfg["vocab_size"]
    T = len(ids)
    idx = torch.tensor(ids)
    cos, sin = rotary(T, D, 100000.0 if v6 else 10000.0, bf16=not v6)
    wins = window_sizes(cfg)
    pos = torch.arange(T)
    x = rms(W["transformer.wte.weight"][idx].float())
    if v6:
        gate = W["smear_lambda"] * torch.sigmoid(x[1:, :24] @ W["smear_gate.weight"].T)
        x = torch.cat([x[:1], x[1:] + gate * x[:-1]], dim=0)
    x0 = x
    x_backout = None
    for l in range(L):
        p = f"transformer.h.{l}."
        if v6:
            x = W["resid_lambdas"][l] * x + W["x0_lambdas"][l] * x0
        h = rms(x)
        q = (h @ W[p + "attn.c_q.weight"].T).view(T, H, D)
        k = (h @ W[p + "attn.c_k.weight"].T).view(T, Hkv, D)
        v = (h @ W[p + "attn.c_v.weight"].T).view(T, Hkv, D)
        if v6 and l % 2 == (L - 1) % 2:
            ve = W[f"value_embeds.{l}.weight"][idx].float().view(T, Hkv, D)
            g = 3.0 * torch.sigmoid(h[:, :12] @ W[p + "attn.ve_gate.weight"].T)  # [T, Hkv]
            v = v + g[..., None] * ve
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        q, k = rms(q), rms(k)
        if v6:
            q, k = q * 1.2, k * 1.2
        if kv_round is not None:
            k, v = kv_round(k), kv_round(v)
        rep = H // Hkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        diff = pos[:, None] - pos[None, :]  # i - j
        visible = diff >= 0
        if wins[l] is not None:
            visible &= diff <= wins[l]
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
        att = att.masked_fill(~visible[None], float("-inf")).softmax(dim=-1)
        y = torch.einsum("hts,shd->thd", att, v).reshape(T, H * D)
        x = x + y @ W[p + "attn.c_proj.weight"].T
        hm = F.relu(rms(x) @ W[p + "mlp.c_fc.weight"].T).square()
        x = x + hm @ W[p + "mlp.c_proj.weight"].T
        if v6 and l == L // 2:
            x_backout = x
    if v6:
        x = x - W["backout_lambda"] * x_backout
    logits = (rms(x) @ W["lm_head.weight"].T)[:, :V]
    return 15.0 * torch.tanh(logits / 15.0)


# ---------------------------------------------------------------------------
# V1 reference: transformers' NanoChatForCausalLM, adjusted to nanochat
# ---------------------------------------------------------------------------


def hf_v1_model(cfg, W):
    from transformers import NanoChatConfig, NanoChatForCausalLM
    from transformers.models.nanochat import modeling_nanochat as mn

    original_forward = mn.NanoChatRotaryEmbedding.forward

    def bf16_rotary_forward(self, x, position_ids):
        cos, sin = original_forward(self, x, position_ids)
        return cos.bfloat16().to(x.dtype), sin.bfloat16().to(x.dtype)  # nanochat keeps them in bf16

    mn.NanoChatRotaryEmbedding.forward = bf16_rotary_forward
    L, C = cfg["n_layer"], cfg["n_embd"]
    hc = NanoChatConfig(vocab_size=cfg["padded_vocab"], hidden_size=C, intermediate_size=4 * C,
                        num_hidden_layers=L, num_attention_heads=cfg["n_head"],
                        num_key_value_heads=cfg["n_kv_head"], max_position_embeddings=10 * cfg["sequence_len"],
                        rms_norm_eps=FLT_EPSILON, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                        final_logit_softcapping=15.0, tie_word_embeddings=False)
    hc._attn_implementation = "eager"
    model = NanoChatForCausalLM(hc).float().eval()
    sd = {"model.embed_tokens.weight": W["transformer.wte.weight"].float(),
          "lm_head.weight": W["lm_head.weight"]}
    names = {"attn.c_q": "self_attn.q_proj", "attn.c_k": "self_attn.k_proj", "attn.c_v": "self_attn.v_proj",
             "attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for l in range(L):
        for ours, theirs in names.items():
            sd[f"model.layers.{l}.{theirs}.weight"] = W[f"transformer.h.{l}.{ours}.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)

    @torch.no_grad()
    def forward(ids):
        return model(torch.tensor([ids])).logits[0, :, : cfg["vocab_size"]].float()

    return forward


# ---------------------------------------------------------------------------
# Fixture writing
# ---------------------------------------------------------------------------

MODELS = [
    # name, sizes, prompts (lengths), greedy tokens per prompt
    ("v1_mha", dict(gen="V1", n_layer=2, n_embd=256, n_head=2, n_kv_head=2, vocab_size=512, padded_vocab=512,
                    sequence_len=256), [19, 41]),
    ("v1_gqa", dict(gen="V1", n_layer=2, n_embd=384, n_head=3, n_kv_head=1, vocab_size=512, padded_vocab=512,
                    sequence_len=256), [23, 37]),
    # seq 256: S window 128, L window 256; the 300-token prompt slides past both
    ("v6_gqa", dict(gen="V6", n_layer=4, n_embd=256, n_head=2, n_kv_head=1, vocab_size=500, padded_vocab=512,
                    sequence_len=256, window_pattern="SSSL"), [17, 300]),
]
GREEDY_TOKENS = 6


def prompt_ids(rng, n, V):
    """A prompt: BOS-like first id (V-9, where nanochat puts <|bos|>), then random ids < V-9."""
    return [V - 9] + [int(t) for t in rng.integers(0, V - 9, size=n - 1)]


def logit_positions(T):
    """All positions of short prompts; for long ones the first 32, every 16th and the last 16."""
    if T <= 64:
        return list(range(T))
    return sorted(set(range(32)) | set(range(0, T, 16)) | set(range(T - 16, T)))


def greedy(forward, ids, n):
    """n greedy tokens, recomputing the whole sequence each step; also the smallest
    top-1 / top-2 gap seen (the C test's argmax must be robust to ~1e-5)."""
    ids, out, gap = list(ids), [], float("inf")
    for _ in range(n):
        last = forward(ids)[-1]
        top = torch.topk(last, 2).values
        gap = min(gap, float(top[0] - top[1]))
        tok = int(torch.argmax(last))
        out.append(tok)
        ids.append(tok)
    return out, gap


def write_model_fixture(out_dir, name, cfg, lengths, rng):
    W, manifest = make_weights(cfg)
    ours = lambda ids: reference_forward(cfg, W, ids)
    forward = ours
    if cfg["gen"] == "V1":
        forward = hf_v1_model(cfg, W)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    cases = []
    for k, n in enumerate(lengths):
        ids = prompt_ids(rng, n, cfg["vocab_size"])
        logits = forward(ids)
        check = ours(ids)
        err = float((logits - check).abs().max() / logits.abs().max())
        assert err < 1e-5, f"{name}: reference implementations disagree ({err:.2e})"
        positions = logit_positions(n)
        fname = f"logits_{k}.f32"
        logits[positions].numpy().astype("<f4").tofile(os.path.join(d, fname))
        tokens, gap = greedy(forward, ids, GREEDY_TOKENS)
        assert gap > 1e-3, f"{name}: greedy continuation has a near tie ({gap:.2e}); pick other prompts"
        cases.append({"prompt": ids, "logit_positions": positions, "logits_file": fname, "greedy": tokens,
                      "greedy_min_gap": gap, "reference_agreement": err})
        print(f"{name} prompt {k}: T={n} rows={len(positions)} greedy={tokens} gap={gap:.3g} "
              f"hf-vs-own={err:.2e}")
    model_config = {k: cfg[k] for k in ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")}
    if "window_pattern" in cfg:
        model_config["window_pattern"] = cfg["window_pattern"]
    meta = {"generation": cfg["gen"], "model_config": model_config, "padded_vocab": cfg["padded_vocab"],
            "reference": "transformers NanoChatForCausalLM (eps, bf16 rotary adjusted)" if cfg["gen"] == "V1"
            else "tools/make_forward_fixtures.py reference_forward (docs/model.md, Later generations)",
            "tensors": manifest, "cases": cases}
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


def write_tiny_checkpoint(out_dir, rng):
    """A real nanochat checkpoint directory: model_000010.pt + meta_000010.json."""
    cfg = dict(gen="V1", n_layer=1, n_embd=128, n_head=1, n_kv_head=1, vocab_size=256, padded_vocab=256,
               sequence_len=64)
    W, _ = make_weights(cfg)
    d = os.path.join(out_dir, "tiny_v1")
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    torch.save(W, os.path.join(d, "model_000010.pt"))  # fp32 matrices, bf16 wte, as nanochat saves
    model_config = {k: cfg[k] for k in ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")}
    with open(os.path.join(d, "meta_000010.json"), "w") as f:
        json.dump({"step": 10, "model_config": model_config}, f, indent=1)
        f.write("\n")
    ids = prompt_ids(rng, 12, cfg["vocab_size"])
    logits = hf_v1_model(cfg, W)(ids)
    err = float((logits - reference_forward(cfg, W, ids)).abs().max() / logits.abs().max())
    assert err < 1e-5, err
    logits.numpy().astype("<f4").tofile(os.path.join(d, "expected_logits.f32"))
    with open(os.path.join(d, "expected_ids.txt"), "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    print(f"tiny_v1: T={len(ids)} hf-vs-own={err:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "forward"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    os.makedirs(args.out, exist_ok=True)
    for name, cfg, lengths in MODELS:
        write_model_fixture(args.out, name, cfg, lengths, rng)
    write_tiny_checkpoint(args.out, rng)


if __name__ == "__main__":
    main()
