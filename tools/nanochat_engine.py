"""nanochat_engine.py: nanochat's PyTorch Engine (nanochat/engine.py:
Engine.generate, Engine.generate_batch, KVCache, RowState,
sample_next_token, the calculator's forcing) written again from its
documented behaviour, on the V1 model of tools/picochat_model.py with a KV
cache. The reference the Python package (python/nanochat_c) is compared
with, and the baseline of its throughput:

  - python/examples/arithmetic_eval.py --engine torch runs its evaluation
    loop through this Engine (tests/py/test_python_example.py compares both
    when torch is installed);
  - tools/bench_generate_many.py times generate_batch prompt by prompt here
    against nanochat_c's generate_many on the same card.

What nanochat's Engine does, and this one too: one batch-1 prefill of the
prompt; its last logits, expanded to num_samples rows, give every row's
first token; the prefill cache is copied into a num_samples-row cache sized
prompt + max_tokens (or sequence_len); each step samples all rows at once
from one torch.Generator seeded with `seed` (argmax at temperature 0,
top-k then softmax / temperature otherwise), replaces a row's token by its
next forced token when the calculator queued some (mask 0), and yields the
column; <|python_end|> closing a non-empty <|python_start|> block whose
expression evaluates queues <|output_start|> result <|output_end|>; a row
is complete once it produced <|assistant_end|> or <|bos|> (it keeps being
sampled); the loop stops when all rows are complete or after max_tokens.
"""
import json
import os
import pickle
from collections import deque

import torch
import torch.nn.functional as F

from picochat_model import GPT, SOFTCAP, GPTConfig, apply_rotary, norm, use_calculator


class KVCache:
    """Keys and values of every layer, [L, B, Hkv, T, D], filled up to pos."""

    def __init__(self, cfg, batch, seq_len, device, dtype):
        D = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch, cfg.n_kv_head, seq_len, D)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    def prefill(self, other):
        """Copies a batch-1 cache into every row (nanochat's KVCache.prefill)."""
        n = other.pos
        self.k[:, :, :, :n] = other.k[:, :, :, :n]
        self.v[:, :, :, :n] = other.v[:, :, :, :n]
        self.pos = n


def forward(model, idx, cache):
    """Logits [B, T, V] (fp32, softcapped) of idx [B, T] at positions
    cache.pos onwards; the cache is extended by T."""
    B, T = idx.shape
    pos = cache.pos
    cos, sin = model.cos[:, pos:pos + T], model.sin[:, pos:pos + T]
    x = norm(model.transformer.wte(idx))
    mask = torch.ones(T, pos + T, dtype=torch.bool, device=idx.device).tril(diagonal=pos)
    for i, block in enumerate(model.transformer.h):
        a = block.attn
        h = norm(x)
        D = a.head_dim
        q = a.c_q(h).view(B, T, a.n_head, D)
        k = a.c_k(h).view(B, T, a.n_kv_head, D)
        v = a.c_v(h).view(B, T, a.n_kv_head, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = norm(q), norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cache.k[i, :, :, pos:pos + T] = k
        cache.v[i, :, :, pos:pos + T] = v
        keys, values = cache.k[i, :, :, :pos + T], cache.v[i, :, :, :pos + T]
        if a.n_kv_head != a.n_head:
            rep = a.n_head // a.n_kv_head
            keys, values = keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + a.c_proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(norm(x))
    cache.pos += T
    logits = model.lm_head(norm(x)).float()
    return SOFTCAP * torch.tanh(logits / SOFTCAP)


def sample_next_token(logits, rng, temperature, top_k):
    """[B, 1] ids from [B, V] logits, as nanochat's sample_next_token."""
    if temperature == 0.0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    if top_k is not None and top_k > 0:
        vals, idx = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)
        probs = F.softmax(vals / temperature, dim=-1)
        return idx.gather(1, torch.multinomial(probs, num_samples=1, generator=rng))
    probs = F.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=rng)


class TiktokenTokenizer:
    """What the Engine asks of nanochat's tokenizer, over a tiktoken Encoding."""

    def __init__(self, enc):
        self.enc = enc

    def encode_special(self, text):
        return self.enc.encode_single_token(text)

    def get_bos_token_id(self):
        return self.encode_special("<|bos|>")

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(ids)


class RowState:
    def __init__(self, tokens):
        self.current_tokens = list(tokens)
        self.forced_tokens = deque()
        self.in_python_block = False
        self.python_expr_tokens = []
        self.completed = False


class Engine:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @torch.inference_mode()
    def generate(self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, seed=42):
        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        rng = torch.Generator(device=device)
        rng.manual_seed(seed)
        python_start, python_end = tok.encode_special("<|python_start|>"), tok.encode_special("<|python_end|>")
        output_start, output_end = tok.encode_special("<|output_start|>"), tok.encode_special("<|output_end|>")
        assistant_end, bos = tok.encode_special("<|assistant_end|>"), tok.get_bos_token_id()

        cfg = model.config
        prefill = KVCache(cfg, 1, len(tokens), device, dtype)
        logits = forward(model, torch.tensor([tokens], dtype=torch.long, device=device), prefill)
        logits = logits[:, -1, :].expand(num_samples, -1)
        decode = KVCache(cfg, num_samples, len(tokens) + max_tokens if max_tokens is not None else cfg.sequence_len,
                         device, dtype)
        decode.prefill(prefill)
        del prefill
        rows = [RowState(tokens) for _ in range(num_samples)]
        generated = 0
        while True:
            if max_tokens is not None and generated >= max_tokens:
                break
            if all(r.completed for r in rows):
                break
            sampled = sample_next_token(logits, rng, temperature, top_k)[:, 0].tolist()
            column, masks = [], []
            for i, r in enumerate(rows):
                forced = len(r.forced_tokens) > 0
                masks.append(0 if forced else 1)
                token = r.forced_tokens.popleft() if forced else sampled[i]
                column.append(token)
                r.current_tokens.append(token)
                if token in (assistant_end, bos):
                    r.completed = True
                if token == python_start:
                    r.in_python_block, r.python_expr_tokens = True, []
                elif token == python_end and r.in_python_block:
                    r.in_python_block = False
                    if r.python_expr_tokens:
                        result = use_calculator(tok.decode(r.python_expr_tokens))
                        if result is not None:
                            r.forced_tokens.extend([output_start] + tok.encode(str(result)) + [output_end])
                    r.python_expr_tokens = []
                elif r.in_python_block:
                    r.python_expr_tokens.append(token)
            yield column, masks
            generated += 1
            ids = torch.tensor(column, dtype=torch.long, device=device).unsqueeze(1)
            logits = forward(model, ids, decode)[:, -1, :]

    def generate_batch(self, tokens, num_samples=1, **kwargs):
        terminal = {self.tokenizer.encode_special("<|assistant_end|>"), self.tokenizer.get_bos_token_id()}
        results = [list(tokens) for _ in range(num_samples)]
        masks = [[0] * len(tokens) for _ in range(num_samples)]
        completed = [False] * num_samples
        for column, column_masks in self.generate(tokens, num_samples, **kwargs):
            for i, (token, mask) in enumerate(zip(column, column_masks)):
                if completed[i]:
                    continue
                if token in terminal:
                    completed[i] = True
                else:
                    results[i].append(token)
                    masks[i].append(mask)
            if all(completed):
                break
        return results, masks


def load_checkpoint(ckpt_dir, device="cpu", dtype=torch.float32):
    """The newest model_<step>.pt of a flat checkpoint dir (picochat's layout)
    and its tokenizer: (Engine, tokenizer)."""
    step = max(int(n[6:12]) for n in os.listdir(ckpt_dir) if n.startswith("model_") and n.endswith(".pt"))
    with open(os.path.join(ckpt_dir, f"meta_{step:06d}.json")) as f:
        meta = json.load(f)
    model = GPT(GPTConfig(**meta["model_config"]))
    sd = torch.load(os.path.join(ckpt_dir, f"model_{step:06d}.pt"), map_location="cpu")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model = model.to(device=device, dtype=dtype).eval()
    with open(os.path.join(ckpt_dir, "tokenizer.pkl"), "rb") as f:
        tok = TiktokenTokenizer(pickle.load(f))
    return Engine(model, tok), tok
