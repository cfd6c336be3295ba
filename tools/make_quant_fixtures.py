#!/usr/bin/env python3
"""make_quant_fixtures.py: reference data for the 8-bit formats
(docs/quantization.md), computed independently of the C code with numpy
and PyTorch, for tests/c/test_quant.c and tests/sh/test_quantize_cli.sh.

Writes tests/data/quant/:
  * fp8.json: PyTorch's float8_e4m3fn: the fp32 value of each of the 256
    bytes, and the byte of sample fp32 values (ties, subnormals, the
    saturation edge; magnitudes above 448 are clamped first, as the format
    saturates where PyTorch's cast would give NaN);
  * <fixture>_<mode>_<case>.f32 + manifest.json: logits of the forward
    fixtures' models (tests/data/forward: v1_gqa, v6_gqa, weights rebuilt by
    make_forward_fixtures.make_weights) with
      int8: every layer matrix and lm_head quantised (numpy: s = max|w|/127,
            q = clip(rint(w / s), -127, 127)) then dequantised (q * s, fp32),
      fp8:  the same with torch's e4m3fn cast (s = max|w|/448),
      fp8kv: float weights, keys and values rounded to e4m3 with one scale
            per token and kv head (s = max|x|/448) before attention reads them,
    through make_forward_fixtures.reference_forward (fp32): what the
    engine's weight-only kernels compute, up to fp32 rounding;
  * <fixture>_c_k0_int8.bin / _fp8.bin: layer 0's c_k quantised
    (q bytes [rows, cols] then fp32 scales [rows]), the bytes the
    quantiser must reproduce exactly.
tests/fuzz/corpus/formats/safetensors_int8: a tiny int8 model (L1 C8 H2 Hkv1
V16) as `nanochat quantize` writes it, the fuzzer's seed for 8-bit files;
and tests/data/eval/reference.json: picochat's bits per byte on the
held-out text (tests/data/heldout) as nanochat's evaluate_bpb computes it
(windows of sequence_len tokens, <|bos|> + window, sum of fp32
cross-entropy losses / (ln 2 x bytes)), with tools/picochat_model.py
(PyTorch, fp32 on the CPU) for bf16 and int8 weights, over the whole text
and over its first 2048 tokens (what the CLI test runs).

Usage (needs torch, numpy, tiktoken; a few minutes on a CPU):
    python3 tools/make_quant_fixtures.py
"""
import json
import math
import os
import pickle
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_forward_fixtures as mff  # noqa: E402
import picochat_model as pm  # noqa: E402

QUANT_DIR = os.path.join(ROOT, "tests", "data", "quant")
EVAL_DIR = os.path.join(ROOT, "tests", "data", "eval")
FP8_MAX = 448.0
EVAL_LIMIT = 2048

# ---------------------------------------------------------------------------
# The formats, written from docs/quantization.md
# ---------------------------------------------------------------------------


def quant_int8(w):
    """w [R, K] float32 -> (q int8 [R, K], s float32 [R])."""
    s = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(w / s[:, None]), -127, 127)
    q[s == 0] = 0
    return q.astype(np.int8), s


def to_e4m3(v):
    """float32 array (|v| <= 448 after the clamp) -> (bytes uint8, values float32)."""
    t = torch.from_numpy(np.clip(v, -FP8_MAX, FP8_MAX).astype(np.float32)).to(torch.float8_e4m3fn)
    return t.view(torch.uint8).numpy(), t.float().numpy()


def quant_fp8(w):
    """w [R, K] float32 -> (q bytes [R, K], s float32 [R], e4m3 values [R, K])."""
    s = (np.abs(w).max(axis=1) / np.float32(FP8_MAX)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = w / s[:, None]
    v[s == 0] = 0
    q, vals = to_e4m3(v)
    return q, s, vals


def dequant(w, mode):
    w = w.numpy().astype(np.float32)
    if mode == "int8":
        q, s = quant_int8(w)
        return torch.from_numpy(q.astype(np.float32) * s[:, None])
    _, s, vals = quant_fp8(w)
    return torch.from_numpy(vals * s[:, None])


def fp8_kv(x):
    """Keys or values [T, Hkv, D] rounded as the fp8 KV cache stores them."""
    s = x.abs().amax(dim=-1, keepdim=True) / FP8_MAX
    v = torch.where(s > 0, x / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(x))
    return v.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * s


def quantised_names(W):
    return [n for n in W if n == "lm_head.weight" or (n.startswith("transformer.h.") and n.endswith(".weight")
                                                      and ".ve_gate." not in n)]


# ---------------------------------------------------------------------------
# fp8 conversions
# ---------------------------------------------------------------------------


def write_fp8_table():
    decode = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    rng = np.random.default_rng(7)
    samples = [0.0, -0.0, 448.0, -448.0, 447.0, 460.0, 463.9, 1e-9, 2.0**-9, 2.0**-10, 3 * 2.0**-10,
               2.0**-6, 2.0**-6 - 2.0**-10, 1.0625, 1.1875, 1.0 + 1 / 16 + 1 / 32, 240.0, 248.0, 0.5]
    # every midpoint between neighbouring finite values: ties must go to even
    finite = np.unique(np.abs(decode[np.isfinite(decode)]))
    samples += list((finite[:-1] + finite[1:]) / 2)
    samples += list(rng.uniform(-448, 448, 200)) + list(rng.normal(0, 0.01, 200)) + list(rng.normal(0, 1, 200))
    x = np.array(samples, dtype=np.float32)
    x = np.concatenate([x, -x])
    enc, _ = to_e4m3(x)
    data = {"about": "PyTorch float8_e4m3fn (tools/make_quant_fixtures.py)",
            "decode": [None if math.isnan(float(v)) else float(v) for v in decode],
            "encode_bits": [int(b) for b in x.view(np.uint32)], "encode_expected": [int(b) for b in enc]}
    with open(os.path.join(QUANT_DIR, "fp8.json"), "w") as f:
        json.dump(data, f)
        f.write("\n")
    print(f"fp8.json: 256 decodes, {len(x)} encodes")


# ---------------------------------------------------------------------------
# Forward fixtures
# ---------------------------------------------------------------------------


def stored_positions(T):
    """Every 4th position and the last 4 (short prompts), every 16th and the last 4 (long)."""
    step = 4 if T <= 64 else 16
    return sorted(set(range(0, T, step)) | set(range(max(0, T - 4), T)))


def write_forward(manifest):
    for name in ("v1_gqa", "v6_gqa"):
        with open(os.path.join(ROOT, "tests", "data", "forward", name, "model.json")) as f:
            meta = json.load(f)
        mc = meta["model_config"]
        cfg = dict(gen=meta["generation"], padded_vocab=meta["padded_vocab"], **mc)
        W, _ = mff.make_weights(cfg)
        W = {k: v.float() for k, v in W.items()}
        names = quantised_names(W)
        # one matrix's exact bytes
        ck = W["transformer.h.0.attn.c_k.weight"].numpy()
        q8, s8 = quant_int8(ck)
        qf, sf, _ = quant_fp8(ck)
        with open(os.path.join(QUANT_DIR, f"{name}_c_k0_int8.bin"), "wb") as f:
            f.write(q8.tobytes() + s8.astype("<f4").tobytes())
        with open(os.path.join(QUANT_DIR, f"{name}_c_k0_fp8.bin"), "wb") as f:
            f.write(qf.tobytes() + sf.astype("<f4").tobytes())
        entry = {"fixture": name, "c_k0_shape": list(ck.shape), "quantised": names, "cases": []}
        for mode in ("int8", "fp8", "fp8kv"):
            Wm = dict(W)
            if mode != "fp8kv":
                for n in names:
                    Wm[n] = dequant(W[n], mode)
            kv = fp8_kv if mode == "fp8kv" else None
            for k, case in enumerate(meta["cases"]):
                ids = case["prompt"]
                logits = mff.reference_forward(cfg, Wm, ids, kv_round=kv)
                base = mff.reference_forward(cfg, W, ids)
                pos = stored_positions(len(ids))
                fname = f"{name}_{mode}_{k}.f32"
                logits[pos].numpy().astype("<f4").tofile(os.path.join(QUANT_DIR, fname))
                err = float((logits - base).abs().max() / base.abs().max())
                entry["cases"].append({"mode": mode, "case": k, "prompt": ids, "positions": pos, "file": fname,
                                       "relative_change_vs_float": err})
                print(f"{name} {mode} case {k}: T={len(ids)} rows={len(pos)} change vs float {err:.3g}")
        manifest.append(entry)


# ---------------------------------------------------------------------------
# Bits per byte of picochat on the held-out text
# ---------------------------------------------------------------------------


def picochat_model(mode):
    d = os.path.join(ROOT, "models", "picochat")
    with open(os.path.join(d, "meta_004200.json")) as f:
        mc = json.load(f)["model_config"]
    model = pm.GPT(pm.GPTConfig(**mc))
    sd = torch.load(os.path.join(d, "model_004200.pt"), map_location="cpu")
    sd = {k.removeprefix("_orig_mod."): v.float() for k, v in sd.items()}
    if mode != "bf16":
        for n in quantised_names(sd):
            sd[n] = dequant(sd[n], mode)
    model.load_state_dict(sd, strict=True)
    return model.float().eval(), mc["sequence_len"]


@torch.no_grad()
def bpb(model, seq, tokens, bos, token_bytes):
    nats, nbytes = 0.0, 0
    for start in range(0, len(tokens), seq):
        tgt = tokens[start:start + seq]
        inp = [bos] + tgt[:-1]
        logits = model(torch.tensor([inp]))[0]
        loss = F.cross_entropy(logits, torch.tensor(tgt), reduction="none")
        nb = torch.tensor([token_bytes[t] for t in tgt])
        nats += float((loss.double() * (nb > 0)).sum())
        nbytes += int(nb.sum())
    return nats / (math.log(2) * nbytes), nbytes


def write_eval():
    with open(os.path.join(ROOT, "models", "picochat", "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    text_path = os.path.join(ROOT, "tests", "data", "heldout", "devils_dictionary.txt")
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    tokens = enc.encode_ordinary(text)
    bos = enc.encode_single_token("<|bos|>")
    token_bytes = [len(enc.decode_single_token_bytes(t)) for t in range(enc.n_vocab)]
    out = {"about": "picochat bits per byte on tests/data/heldout/devils_dictionary.txt, nanochat's "
                    "evaluate_bpb over windows of sequence_len tokens (tools/make_quant_fixtures.py, PyTorch fp32)",
           "tokens": len(tokens), "limit": EVAL_LIMIT, "results": {}}
    for mode in ("bf16", "int8", "fp8"):
        model, seq = picochat_model(mode)
        full, nbytes = bpb(model, seq, tokens, bos, token_bytes)
        part, part_bytes = bpb(model, seq, tokens[:EVAL_LIMIT], bos, token_bytes)
        out["results"][mode] = {"bpb": full, "bytes": nbytes, "bpb_limit": part, "bytes_limit": part_bytes}
        print(f"picochat {mode}: {full:.6f} bits/byte over {len(tokens)} tokens; first {EVAL_LIMIT}: {part:.6f}")
    out["window"] = seq
    with open(os.path.join(EVAL_DIR, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def safetensors_bytes(tensors, meta):
    """A safetensors file: tensors {name: (dtype name, numpy array)}, widest first."""
    order = sorted(tensors, key=lambda n: -tensors[n][1].itemsize)
    header, off, blobs = {"__metadata__": meta}, 0, []
    for name in order:
        dt, a = tensors[name]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def write_fuzz_seed():
    rng = np.random.default_rng(3)
    C, V, D = 8, 16, 4
    shapes = {"attn.c_q": (2 * D, C), "attn.c_k": (D, C), "attn.c_v": (D, C), "attn.c_proj": (C, 2 * D),
              "mlp.c_fc": (4 * C, C), "mlp.c_proj": (C, 4 * C)}
    tensors = {"transformer.wte.weight": ("F32", rng.normal(size=(V, C)).astype(np.float32))}
    mats = {"lm_head.weight": (V, C)}
    mats.update({f"transformer.h.0.{k}.weight": v for k, v in shapes.items()})
    for name, shape in mats.items():
        q, s = quant_int8(rng.normal(size=shape).astype(np.float32))
        tensors[name] = ("I8", q)
        tensors[name + "_scale"] = ("F32", s)
    meta = {"nanochat.weights": "int8", "nanochat.scheme": "per_channel_absmax", "nanochat.version": "1"}
    with open(os.path.join(ROOT, "tests", "fuzz", "corpus", "formats", "safetensors_int8"), "wb") as f:
        f.write(b"\x02" + safetensors_bytes(tensors, meta))


def main():
    os.makedirs(QUANT_DIR, exist_ok=True)
    write_fuzz_seed()
    os.makedirs(EVAL_DIR, exist_ok=True)
    torch.manual_seed(0)
    write_fp8_table()
    manifest = []
    write_forward(manifest)
    with open(os.path.join(QUANT_DIR, "manifest.json"), "w") as f:
        json.dump({"about": __doc__.split("\n")[0], "fixtures": manifest}, f, indent=1)
        f.write("\n")
    write_eval()


if __name__ == "__main__":
    main()
