#!/usr/bin/env python3
"""make_d34_checkpoint.py: a d34-shaped nanochat checkpoint with random
weights, written exactly as nanochat writes one (torch.save of the state
dict: wte bf16, every other matrix fp32, so the file is ~8.6 GB and needs
ZIP64; meta_<step>.json with model_config), for measuring the load time of a
real-size native checkpoint (issue 4: "load of d34 to ready <= 3 s with a
warm page cache") on the GPU machine:

    python3 tools/make_d34_checkpoint.py /tmp/d34
    build/nanochat bench -m /tmp/d34 --device cuda --verbose --prefill 0 --ctx 128 --batch none
"""
import json
import os
import sys

import torch

L, C, H, V, SEQ = 34, 2176, 17, 65536, 2048


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/d34"
    os.makedirs(out, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(34)

    def rand(rows, cols, dtype=torch.float32):
        return (torch.randn(rows, cols, generator=g, device=dev) * (cols ** -0.5)).to(dtype).cpu()

    sd = {"transformer.wte.weight": rand(V, C, torch.bfloat16)}
    for layer in range(L):
        p = f"transformer.h.{layer}."
        for name in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj"):
            sd[p + name + ".weight"] = rand(C, C)
        sd[p + "mlp.c_fc.weight"] = rand(4 * C, C)
        sd[p + "mlp.c_proj.weight"] = rand(C, 4 * C)
    sd["lm_head.weight"] = rand(V, C)
    torch.save(sd, os.path.join(out, "model_000000.pt"))
    meta = {"step": 0, "model_config": {"sequence_len": SEQ, "vocab_size": V, "n_layer": L, "n_head": H,
                                        "n_kv_head": H, "n_embd": C}}
    with open(os.path.join(out, "meta_000000.json"), "w") as f:
        json.dump(meta, f)
    size = os.path.getsize(os.path.join(out, "model_000000.pt"))
    print(f"wrote {out}/model_000000.pt ({size / 1e9:.2f} GB, {len(sd)} tensors)")


if __name__ == "__main__":
    main()
