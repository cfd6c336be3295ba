#!/usr/bin/env python3
"""make_llama_gguf.py: a random-weight llama-architecture GGUF with the sizes
of a nanochat model, for timing llama.cpp on the same shapes and bytes as
`nanochat bench --random dNN` (tools/bench_llamacpp.sh).

nanochat's MLP is two matrices of 4C x C (relu^2); llama's is three of
F x C (SwiGLU). F = 8C/3 rounded up to a multiple of 32 (the q8_0 / q4_0
block) keeps the bytes per token within 0.5%. Vocabulary, untied embedding
and lm_head, heads, head size and layers are nanochat's. The tokenizer is
llama.cpp's "none" (ids only, which is all llama-bench uses).

Weights: bf16 (or f32 norms), uniform with nanochat's init scale, from a
fixed seed. Needs the `gguf` and `numpy` packages (PyPI).

    python3 tools/make_llama_gguf.py --depth 20 --out d20-bf16.gguf
"""
import argparse

import numpy as np

import gguf

SIZES = {20: (1280, 10), 26: (1664, 13), 32: (2048, 16), 34: (2176, 17)}  # C, heads (head size 128)


def bf16(a):
    """float32 array -> uint16 bf16 bits, rounded to nearest even."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=20, choices=sorted(SIZES))
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    C, H = SIZES[args.depth]
    L, V = args.depth, args.vocab
    F = (8 * C // 3 + 31) // 32 * 32
    rng = np.random.default_rng(20)

    def mat(rows, cols):
        s = 3 ** 0.5 / cols ** 0.5
        return bf16(rng.uniform(-s, s, size=(rows, cols)).astype(np.float32))

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(f"random nanochat d{L} shapes")
    w.add_context_length(2048)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(H)
    w.add_rope_dimension_count(C // H)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_tokenizer_model("none")
    w.add_vocab_size(V)
    BF16 = gguf.GGMLQuantizationType.BF16
    ones = np.ones(C, dtype=np.float32)
    w.add_tensor("token_embd.weight", mat(V, C), raw_dtype=BF16)
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", mat(C, C), raw_dtype=BF16)
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", mat(F, C), raw_dtype=BF16)
        w.add_tensor(p + "ffn_up.weight", mat(F, C), raw_dtype=BF16)
        w.add_tensor(p + "ffn_down.weight", mat(C, F), raw_dtype=BF16)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", mat(V, C), raw_dtype=BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    per_token = 2 * (L * (4 * C * C + 3 * C * F) + V * C + C)
    print(f"{args.out}: d{L} shapes, C={C} heads={H} F={F} V={V}, {per_token / 1e9:.3f} GB of bf16 weights read per token")


if __name__ == "__main__":
    main()
