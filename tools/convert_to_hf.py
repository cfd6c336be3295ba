#!/usr/bin/env python3
"""convert_to_hf.py: a nanochat checkpoint folder (model_<step>.pt +
meta_<step>.json + tokenizer.pkl) -> the Hugging Face transformers layout
(config.json of NanoChatConfig, model.safetensors or shards + index,
tokenizer.json), without torch or transformers.

    python3 tools/convert_to_hf.py models/picochat OUT [--shards N]

Used by tests/py/test_hub_e2e.py to serve picochat in the transformers layout
from the mock Hub. V1 checkpoints only (the transformers port's scope).
The output is deterministic: same input, same bytes.

How the pieces are read and written (learned from the formats, not from
torch's code):
  - model_<step>.pt is a ZIP holding data.pkl (the state dict, pickled with
    torch._utils._rebuild_tensor_v2 calls over persistent storage ids) and
    data/<key> (each storage's raw little-endian bytes). A restricted
    Unpickler maps those few globals to numpy views; anything else is
    refused.
  - safetensors: 8-byte little-endian header length, a JSON header
    {name: {dtype, shape, data_offsets}}, then the tensors' bytes.
  - tokenizer.json as transformers' TikTokenConverter writes it: vocab keyed
    by each token's bytes in GPT-2's byte-to-unicode alphabet with its
    tiktoken rank as id, merges derived from the ranks, the split regex as a
    Split pre-tokenizer, the special tokens as added tokens.
"""
import argparse
import collections
import json
import os
import pickle
import re
import struct
import sys
import zipfile

import numpy as np

# ==== reading a torch .pt without torch ====

STORAGE_DTYPES = {"FloatStorage": ("F32", np.float32), "BFloat16Storage": ("BF16", np.uint16),
                  "HalfStorage": ("F16", np.float16)}


class _Storage:
    def __init__(self, kind):
        self.kind = kind


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """(safetensors dtype, contiguous numpy array) of a tensor view."""
    st_dtype, array = storage
    itemsize = array.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(array[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return st_dtype, np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, zf, prefix):
        super().__init__(f)
        self.zf, self.prefix = zf, prefix

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _Storage(name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        kind, storage, key = pid[0], pid[1], pid[2]
        if kind != "storage" or not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        st_dtype, np_dtype = STORAGE_DTYPES[storage.kind]
        raw = self.zf.read(f"{self.prefix}/data/{key}")
        return st_dtype, np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<"))


def read_pt(path):
    with zipfile.ZipFile(path) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("/data.pkl")]
        with zf.open(pkl) as f:
            state = _Unpickler(f, zf, prefix).load()
    return {k[len("_orig_mod."):] if k.startswith("_orig_mod.") else k: v for k, v in state.items()}


# ==== names, config, safetensors ====

PER_LAYER = {"attn.c_q.weight": "self_attn.q_proj.weight", "attn.c_k.weight": "self_attn.k_proj.weight",
             "attn.c_v.weight": "self_attn.v_proj.weight", "attn.c_proj.weight": "self_attn.o_proj.weight",
             "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_proj.weight": "mlp.fc2.weight"}


def hf_name(name):
    if name == "transformer.wte.weight":
        return "model.embed_tokens.weight"
    if name == "lm_head.weight":
        return name
    m = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", name)
    if m and m.group(2) in PER_LAYER:
        return f"model.layers.{m.group(1)}.{PER_LAYER[m.group(2)]}"
    raise SystemExit(f"convert_to_hf: {name} has no transformers name (only nanochat V1 converts)")


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(tensors):
            f.write(tensors[name][1].astype(tensors[name][1].dtype.newbyteorder("<"), copy=False).tobytes())


def config_json(mc, enc, dtype):
    sp = enc._special_tokens
    return {"architectures": ["NanoChatForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": sp["<|bos|>"], "dtype": dtype, "eos_token_id": sp["<|assistant_end|>"],
            "final_logit_softcapping": 15.0, "hidden_act": "relu2", "hidden_size": mc["n_embd"],
            "intermediate_size": 4 * mc["n_embd"], "max_position_embeddings": mc["sequence_len"],
            "model_type": "nanochat", "num_attention_heads": mc["n_head"], "num_hidden_layers": mc["n_layer"],
            "num_key_value_heads": mc["n_kv_head"], "pad_token_id": sp["<|assistant_end|>"], "rms_norm_eps": 1e-06,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "tie_word_embeddings": False,
            "use_cache": True, "vocab_size": mc["vocab_size"]}


# ==== tokenizer.json ====

def gpt2_alphabet():
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def bpe_split(ranks, token):
    """The two parts BPE with ranks below the token's own merges last."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < limit and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def tokenizer_json(enc):
    ranks = enc._mergeable_ranks
    alpha = gpt2_alphabet()
    spell = lambda b: "".join(alpha[x] for x in b)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            parts = bpe_split(ranks, token)
            if len(parts) == 2:
                merges.append([spell(parts[0]), spell(parts[1])])
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": enc._pat_str}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                      "vocab": {spell(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])},
                      "merges": merges}}


# ==== main ====

def newest_step(src):
    steps = [int(m.group(1)) for n in os.listdir(src) if (m := re.fullmatch(r"model_(\d+)\.pt", n))]
    if not steps:
        raise SystemExit(f"convert_to_hf: no model_<step>.pt in {src}")
    return max(steps)


def convert(src, out, shards=0):
    step = newest_step(src)
    with open(os.path.join(src, f"meta_{step:06d}.json")) as f:
        mc = json.load(f)["model_config"]
    with open(os.path.join(src, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    tensors = {hf_name(k): v for k, v in read_pt(os.path.join(src, f"model_{step:06d}.pt")).items()}
    dtypes = {d for d, _ in tensors.values()}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(mc, enc, "bfloat16" if dtypes == {"BF16"} else "float32"), f, indent=2, sort_keys=True)
        f.write("\n")
    if shards <= 1:
        write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    else:
        names = sorted(tensors)
        weight_map, total = {}, 0
        for s in range(shards):
            part = names[s::shards]
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(os.path.join(out, fname), {n: tensors[n] for n in part})
            for n in part:
                weight_map[n] = fname
                total += tensors[n][1].nbytes
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(enc), f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=0, help="split the weights into N safetensors files + index")
    args = ap.parse_args()
    convert(args.src, args.out, args.shards)


if __name__ == "__main__":
    sys.exit(main())
