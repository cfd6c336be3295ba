#!/usr/bin/env python3
"""
make_checkpoint_fixtures.py: small checkpoints written by real PyTorch,
tiktoken and transformers, for tests/c/test_formats.c and
tests/sh/test_cli_load_errors.sh. Output: tests/data/ckpt/ (about 1 MB).

Layouts (docs/formats.md, Locating a checkpoint):
  v1/                 flat nanochat download: model_000005.pt (all keys with
                      `_orig_mod.`; wte bf16, others fp32; c_q/c_k/c_v are
                      views into one storage at offsets; mlp.c_proj of layer 0
                      is a saved transposed view, i.e. non-contiguous),
                      meta_000005.json, tokenizer.pkl (a pickled
                      tiktoken.Encoding)
  v1_zip64/           the same archive rewritten with every ZIP64 feature
                      (saturated 32-bit fields, ZIP64 extras in local and
                      central headers, ZIP64 end record + locator); checked
                      to load in torch.load and Python's zipfile
  v6/                 nanochat V6 tensor set (lambdas, value embeddings on
                      alternating layers, smear, backout), vocab 265 padded
                      to 320 rows, meta with window_pattern "SSSL"
  base/               a nanochat base dir: base_checkpoints/d2 (step 10),
                      chatsft_checkpoints/d1 (step 9), chatsft_checkpoints/d2
                      (steps 3 and 7), tokenizer/tokenizer.pkl
  hf/                 transformers NanoChatForCausalLM.save_pretrained (f32)
  hf_sharded/         the same in bf16, sharded with max_shard_size
  bad/extra_tensor/   V1 plus an unknown tensor (unknown architecture)
  bad/missing_tensor/ V1 without transformer.h.0.mlp.c_fc.weight

expected.txt lists, for every tensor of every weight file, what PyTorch
holds: name, dtype, shape, FNV-1a 64 of its row-major little-endian bytes
(so the C reader must match bit for bit), and float64 sum / abs-sum.

Run from the repository root: python3 tools/make_checkpoint_fixtures.py
Needs torch, tiktoken, transformers (not needed at test time).
"""
import collections
import json
import os
import pickle
import shutil
import struct
import zipfile

import numpy as np
import tiktoken
import torch

OUT = "tests/data/ckpt"
PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
           r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
            "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
VOCAB = 256 + len(SPECIALS)  # byte ranks only, then the nine specials: 265


def fnv1a64(data: bytes) -> int:
    arr = np.frombuffer(data, dtype=np.uint8)
    h = 0xcbf29ce484222325
    prime = 0x100000001b3
    mask = (1 << 64) - 1
    for b in arr.tolist():
        h = ((h ^ b) * prime) & mask
    return h


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


DTYPE_NAMES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def describe(name, t):
    f64 = t.detach().double()
    shape = ",".join(str(d) for d in t.shape) or "-"
    return (f"tensor {name} {DTYPE_NAMES[t.dtype]} {shape} {fnv1a64(tensor_bytes(t)):016x} "
            f"{f64.sum().item():.17g} {f64.abs().sum().item():.17g}")


def write_tokenizer(path):
    ranks = {bytes([i]): i for i in range(256)}
    specials = {s: 256 + i for i, s in enumerate(SPECIALS)}
    enc = tiktoken.Encoding(name="rustbpe", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    assert enc.encode("hi", allowed_special="all") == [104, 105]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(enc, f)


def v1_state(L, C, H, Hkv, V, gen, prefix="", views=True):
    """A nanochat V1 state dict: wte bf16, the rest fp32 (as nanochat saves)."""
    D = C // H
    sd = collections.OrderedDict()
    sd["transformer.wte.weight"] = (torch.randn(V, C, generator=gen)).bfloat16()
    for l in range(L):
        p = f"transformer.h.{l}."
        if views:
            # one storage, three views at offsets 0, H*D*C, (H+Hkv)*D*C
            qkv = torch.randn((H + 2 * Hkv) * D, C, generator=gen) / C ** 0.5
            sd[p + "attn.c_q.weight"] = qkv[: H * D]
            sd[p + "attn.c_k.weight"] = qkv[H * D: (H + Hkv) * D]
            sd[p + "attn.c_v.weight"] = qkv[(H + Hkv) * D:]
        else:
            sd[p + "attn.c_q.weight"] = torch.randn(H * D, C, generator=gen)
            sd[p + "attn.c_k.weight"] = torch.randn(Hkv * D, C, generator=gen)
            sd[p + "attn.c_v.weight"] = torch.randn(Hkv * D, C, generator=gen)
        sd[p + "attn.c_proj.weight"] = torch.randn(C, H * D, generator=gen)
        sd[p + "mlp.c_fc.weight"] = torch.randn(4 * C, C, generator=gen)
        if views and l == 0:
            sd[p + "mlp.c_proj.weight"] = torch.randn(4 * C, C, generator=gen).t()  # non-contiguous
            assert not sd[p + "mlp.c_proj.weight"].is_contiguous()
        else:
            sd[p + "mlp.c_proj.weight"] = torch.randn(C, 4 * C, generator=gen)
    sd["lm_head.weight"] = torch.randn(V, C, generator=gen)
    return collections.OrderedDict((prefix + k, v) for k, v in sd.items())


def meta(step, L, C, H, Hkv, V, seq=256, window_pattern=None):
    mc = {"sequence_len": seq, "vocab_size": V, "n_layer": L, "n_head": H, "n_kv_head": Hkv, "n_embd": C}
    if window_pattern:
        mc["window_pattern"] = window_pattern
    return {"step": step, "val_bpb": 1.234, "model_config": mc, "user_config": {"depth": L}}


def save_nanochat(dirname, step, sd, meta_obj, expected, strip_prefix=True):
    os.makedirs(dirname, exist_ok=True)
    model = os.path.join(dirname, f"model_{step:06d}.pt")
    torch.save(sd, model)
    with open(os.path.join(dirname, f"meta_{step:06d}.json"), "w") as f:
        json.dump(meta_obj, f)
    # what the reader must produce: torch.load's values, prefix stripped
    loaded = torch.load(model)
    expected.append(f"file {os.path.relpath(model, OUT)}")
    for k, v in loaded.items():
        if strip_prefix and k.startswith("_orig_mod."):
            k = k[len("_orig_mod."):]
        expected.append(describe(k, v))
    expected.append("end")
    return model


def v6_state(L, C, H, Hkv, V, gen):
    D = C // H
    Vp = (V + 63) // 64 * 64
    sd = v1_state(L, C, H, Hkv, Vp, gen, views=False)
    sd["resid_lambdas"] = torch.rand(L, generator=gen) + 0.5
    sd["x0_lambdas"] = torch.rand(L, generator=gen) * 0.2
    sd["smear_gate.weight"] = torch.randn(1, 24, generator=gen)
    sd["smear_lambda"] = torch.tensor([0.3])
    sd["backout_lambda"] = torch.tensor([0.2])
    for l in range(L):
        if l % 2 == (L - 1) % 2:
            sd[f"value_embeds.{l}.weight"] = torch.randn(Vp, Hkv * D, generator=gen).bfloat16()
            sd[f"transformer.h.{l}.attn.ve_gate.weight"] = torch.randn(Hkv, 12, generator=gen)
    # newer nanochat keeps the block matrices in bf16 too: mix dtypes
    sd["transformer.h.1.mlp.c_fc.weight"] = sd["transformer.h.1.mlp.c_fc.weight"].bfloat16()
    return sd


# ==== ZIP64 rewrite ====

def write_zip64(src, dst):
    """Rewrites a torch zip with every size/offset in ZIP64 form, data 64-byte aligned."""
    zin = zipfile.ZipFile(src)
    out = bytearray()
    central = []
    for info in zin.infolist():
        data = zin.read(info.filename)
        name = info.filename.encode()
        offset = len(out)
        # local header: sizes saturated, ZIP64 extra (size, comp size), then padding extra to align
        z64 = struct.pack("<HHQQ", 0x0001, 16, len(data), len(data))
        base = offset + 30 + len(name) + len(z64)
        pad = (-(base + 4)) % 64
        extra = z64 + struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        crc = zipfile.crc32(data) & 0xffffffff
        out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc, 0xffffffff, 0xffffffff,
                           len(name), len(extra))
        out += name + extra
        assert len(out) % 64 == 0
        out += data
        central.append((name, crc, len(data), offset))
    cd_start = len(out)
    for name, crc, size, offset in central:
        z64 = struct.pack("<HHQQQ", 0x0001, 24, size, size, offset)
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc, 0xffffffff, 0xffffffff,
                           len(name), len(z64), 0, 0, 0, 0, 0xffffffff)
        out += name + z64
    cd_size = len(out) - cd_start
    eocd64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(central), len(central), cd_size, cd_start)
    out += struct.pack("<IIQI", 0x07064b50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054b50, 0xffff, 0xffff, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    with open(dst, "wb") as f:
        f.write(out)
    # the references agree it is the same archive
    z = zipfile.ZipFile(dst)
    assert z.namelist() == zin.namelist()
    assert all(z.read(n) == zin.read(n) for n in z.namelist())
    a, b = torch.load(src), torch.load(dst)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ==== Hugging Face copies ====

def save_hf(dirname, dtype, expected, shard=None):
    from transformers import NanoChatConfig, NanoChatForCausalLM
    torch.manual_seed(7)
    cfg = NanoChatConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    m = NanoChatForCausalLM(cfg).to(dtype)
    with torch.no_grad():  # nonzero everywhere (transformers zero-inits nothing here, but be explicit)
        for p in m.parameters():
            p.copy_(torch.randn_like(p, dtype=torch.float32).to(dtype))
    kwargs = {"max_shard_size": shard} if shard else {}
    m.save_pretrained(dirname, **kwargs)
    os.remove(os.path.join(dirname, "generation_config.json"))
    write_tokenizer(os.path.join(dirname, "tokenizer.pkl"))
    from safetensors.torch import load_file
    files = sorted(f for f in os.listdir(dirname) if f.endswith(".safetensors"))
    for fn in files:
        expected.append(f"file {os.path.relpath(os.path.join(dirname, fn), OUT)}")
        for k, v in load_file(os.path.join(dirname, fn)).items():
            expected.append(describe(k, v))
        expected.append("end")


def write_fuzz_corpus():
    """Seeds for tests/fuzz/fuzz_formats.c: a selector byte, then the input."""
    corpus = "tests/fuzz/corpus/formats"
    if os.path.isdir(corpus):
        shutil.rmtree(corpus)
    os.makedirs(corpus)
    import io
    from safetensors.torch import save as st_save
    g = torch.Generator().manual_seed(5)
    sd = collections.OrderedDict()
    sd["_orig_mod.a"] = torch.randn(3, 4, generator=g)
    sd["b"] = torch.randn(4, 3, generator=g).t()
    sd["c"] = torch.randn(5, generator=g).bfloat16()
    buf = io.BytesIO()
    torch.save(sd, buf)
    seeds = {
        "pt_small": b"\x00" + buf.getvalue(),
        "pickle_tokenizer": b"\x01" + open(f"{OUT}/v1/tokenizer.pkl", "rb").read(),
        "pickle_p2": b"\x01" + open(f"{OUT}/objects_p2.pkl", "rb").read(),
        "pickle_p5": b"\x01" + open(f"{OUT}/objects_p5.pkl", "rb").read(),
        "safetensors_small": b"\x02" + st_save({"x": torch.randn(2, 3, generator=g),
                                                "y": torch.randn(4, generator=g).bfloat16()}),
        "meta_json": b"\x03" + open(f"{OUT}/v6/meta_000021.json", "rb").read(),
        "hf_config_json": b"\x04" + open(f"{OUT}/hf/config.json", "rb").read(),
    }
    for name, data in seeds.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    gen = torch.Generator().manual_seed(1234)
    expected = []

    # v1: flat download with _orig_mod. keys, views, a transposed view, GQA, odd vocab
    sd = v1_state(2, 32, 2, 1, VOCAB, gen, prefix="_orig_mod.")
    v1 = save_nanochat(f"{OUT}/v1", 5, sd, meta(5, 2, 32, 2, 1, VOCAB), expected)
    write_tokenizer(f"{OUT}/v1/tokenizer.pkl")
    os.makedirs(f"{OUT}/v1_zip64")
    write_zip64(v1, f"{OUT}/v1_zip64/model_000005.pt")
    shutil.copy(f"{OUT}/v1/meta_000005.json", f"{OUT}/v1_zip64/meta_000005.json")
    expected.append("file v1_zip64/model_000005.pt")
    expected += [line for line in expected[1:] if line.startswith("tensor")]
    expected.append("end")

    # v6
    sd = v6_state(3, 32, 2, 1, VOCAB, gen)
    save_nanochat(f"{OUT}/v6", 21, sd, meta(21, 3, 32, 2, 1, VOCAB, window_pattern="SSSL"), expected)

    # a nanochat base dir; lm_head[0,0] carries the step so a test can tell checkpoints apart
    def small(step, L):
        s = v1_state(L, 32, 2, 2, VOCAB, gen, views=False)
        for k in s:
            s[k] = s[k].bfloat16()
        s["lm_head.weight"][0, 0] = float(step)
        return s
    for src, tag, L, step in [("base", "d2", 2, 10), ("chatsft", "d1", 1, 9), ("chatsft", "d2", 2, 3),
                              ("chatsft", "d2", 2, 7)]:
        save_nanochat(f"{OUT}/base/{src}_checkpoints/{tag}", step, small(step, L), meta(step, L, 32, 2, 2, VOCAB),
                      expected)
    write_tokenizer(f"{OUT}/base/tokenizer/tokenizer.pkl")

    save_hf(f"{OUT}/hf", torch.float32, expected)
    save_hf(f"{OUT}/hf_sharded", torch.bfloat16, expected, shard="12KB")

    # unknown architectures
    sd = v1_state(1, 32, 2, 2, 64, gen, views=False)
    sd["transformer.h.0.attn.foo.weight"] = torch.randn(4, 4, generator=gen)
    save_nanochat(f"{OUT}/bad/extra_tensor", 1, sd, meta(1, 1, 32, 2, 2, 64), expected)
    sd = v1_state(1, 32, 2, 2, 64, gen, views=False)
    del sd["transformer.h.0.mlp.c_fc.weight"]
    save_nanochat(f"{OUT}/bad/missing_tensor", 1, sd, meta(1, 1, 32, 2, 2, 64), expected)

    # plain Python objects for the unpickler's value checks (test_formats.c knows them)
    shared = [7, 8]
    obj = {"ints": [0, 1, 255, 256, 65535, 65536, -1, -2 ** 31, 2 ** 31, 2 ** 40, -2 ** 63, 2 ** 63 - 1],
           "float": 1.5, "neg": -0.1, "t": True, "f": False, "none": None, "s": "h\u00e9llo",
           "b": b"\x00\xff", "tuple": (1, (2, 3)), "long_str": "x" * 300, "big_bytes": bytes(range(256)) * 2,
           "shared": (shared, shared)}
    for proto in (2, 5):
        with open(f"{OUT}/objects_p{proto}.pkl", "wb") as f:
            pickle.dump(obj, f, protocol=proto)

    write_fuzz_corpus()

    with open(f"{OUT}/expected.txt", "w") as f:
        f.write("# made by tools/make_checkpoint_fixtures.py: tensor name dtype shape fnv1a64 sum abssum\n")
        f.write("\n".join(expected) + "\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
