#!/usr/bin/env python3
"""test_picochat_model.py: the PyTorch model that trained picochat and wrote
its golden transcripts (tools/picochat_model.py) is nanochat's V1 math.

Reference: Hugging Face transformers' NanoChatForCausalLM (an independent
implementation of the same architecture), given the same weights, with
rmsnorm eps set to FLT_EPSILON (nanochat's) and our rotary tables switched
to fp32 (transformers keeps them fp32; nanochat V1 rounds them to bf16,
docs/model.md, RoPE). Then the logits must agree to 1e-4; with the bf16 tables they
must differ (so the rounding is really there). GQA (Hkv < H) is included.
Also checks the golden writer's calculator on docs/model.md's Calculator examples.
Skips (77) where torch or transformers is not installed.
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

try:
    import torch
    from transformers import NanoChatConfig, NanoChatForCausalLM
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

import picochat_model as pm  # noqa: E402


def hf_copy(model, cfg):
    hc = NanoChatConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=4 * cfg.n_embd,
                        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                        num_key_value_heads=cfg.n_kv_head, max_position_embeddings=cfg.sequence_len,
                        rms_norm_eps=torch.finfo(torch.float32).eps, final_logit_softcapping=pm.SOFTCAP)
    h = NanoChatForCausalLM(hc)
    sd = {"model.embed_tokens.weight": model.transformer.wte.weight, "lm_head.weight": model.lm_head.weight}
    names = {"attn.c_q": "self_attn.q_proj", "attn.c_k": "self_attn.k_proj", "attn.c_v": "self_attn.v_proj",
             "attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i, block in enumerate(model.transformer.h):
        for ours, theirs in names.items():
            sd[f"model.layers.{i}.{theirs}.weight"] = block.get_submodule(ours).weight
    h.load_state_dict(sd, strict=True)
    return h.eval()


def main():
    fails = 0
    torch.manual_seed(0)
    for n_kv in (2, 1):
        cfg = pm.GPTConfig(sequence_len=64, vocab_size=300, n_layer=2, n_head=2, n_kv_head=n_kv, n_embd=256)
        model = pm.GPT(cfg)
        for p in model.parameters():
            p.data.normal_(0, 0.05)
        model.eval()
        ref = hf_copy(model, cfg)
        idx = torch.randint(0, cfg.vocab_size, (2, 48))
        with torch.no_grad():
            want = ref(idx).logits
            bf16_tables = model(idx)
            D = cfg.n_embd // cfg.n_head
            inv = 1.0 / (pm.ROPE_BASE ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
            f = torch.outer(torch.arange(cfg.sequence_len * 10, dtype=torch.float32), inv)
            model.cos, model.sin = f.cos()[None, :, None, :], f.sin()[None, :, None, :]
            fp32_tables = model(idx)
        d32 = (fp32_tables - want).abs().max().item()
        d16 = (bf16_tables - want).abs().max().item()
        ok = d32 < 1e-4 and d16 > 1e-4
        print(f"Hkv={n_kv}: max |ours - transformers| = {d32:.2e} (fp32 rope), {d16:.2e} (bf16 rope): "
              f"{'ok' if ok else 'FAIL'}")
        fails += not ok

    cases = {"37*41": "1517", "1/5": "0.2", "20/2": "10.0", "0.1+0.2": "0.30000000000000004",
             "1/100000": "1e-05", "1,000*2": "2000", "2**3": None, "1/0": None,
             "'strawberry'.count('r')": "3", "__import__('os')": None, "'ab'.upper()": None}
    for expr, want in cases.items():
        got = pm.use_calculator(expr)
        got = None if got is None else str(got)
        if got != want:
            print(f"use_calculator({expr!r}) = {got!r}, want {want!r}: FAIL")
            fails += 1
    print(f"test_picochat_model: {'FAILED' if fails else 'passed'} ({fails} failures)")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
