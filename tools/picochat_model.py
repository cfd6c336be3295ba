"""picochat_model.py: nanochat's V1 ("classic") GPT in PyTorch, the math of
docs/model.md (V1 forward) exactly, plus nanochat's greedy chat generation
with the calculator tool (docs/model.md, Calculator). Used by tools/train_picochat.py to train the
default model and to write the golden transcripts the C engine is tested
against.

Why V1: it is the architecture of every published nanochat checkpoint
(d20/d26/d32/d34), so the default model drives the same code path in the
engine that users' checkpoints do.

Dimension letters (as src/model/model.h): B batch, T time, C = n_embd,
H heads, Hkv kv heads, D = C/H head dim, V vocab, F = 4C.
"""

import math
import signal
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SOFTCAP = 15.0       # V1 logit softcap
ROPE_BASE = 10000.0  # V1 rotary base


@dataclass
class GPTConfig:
    sequence_len: int = 512
    vocab_size: int = 4096
    n_layer: int = 6
    n_head: int = 2
    n_kv_head: int = 2
    n_embd: int = 256


def norm(x):
    # rmsnorm without weight; eps=None makes PyTorch use FLT_EPSILON, as nanochat does
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x, cos, sin):
    """x [B, T, H, D]; cos, sin [1, T, 1, D/2] (bf16-rounded). Half-split
    pairing with nanochat's sign: rotates by -theta."""
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3).to(x.dtype)


def rotary_tables(seq_len, head_dim, device):
    """cos, sin [1, seq_len, 1, D/2], computed in fp32 then rounded to bf16
    (V1 rounds them always, also for fp32 compute)."""
    channel = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
    inv_freq = 1.0 / (ROPE_BASE ** (channel / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    cos, sin = freqs.cos().bfloat16(), freqs.sin().bfloat16()
    return cos[None, :, None, :], sin[None, :, None, :]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_kv_head = cfg.n_head, cfg.n_kv_head
        self.head_dim = cfg.n_embd // cfg.n_head
        C, D = cfg.n_embd, self.head_dim
        self.c_q = nn.Linear(C, cfg.n_head * D, bias=False)
        self.c_k = nn.Linear(C, cfg.n_kv_head * D, bias=False)
        self.c_v = nn.Linear(C, cfg.n_kv_head * D, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)

    def forward(self, x, cos, sin, mask):
        """x [B, T, C]; mask [B, 1, T, T] bool (True = may attend) or None
        for plain causal attention."""
        B, T, C = x.shape
        D = self.head_dim
        q = self.c_q(x).view(B, T, self.n_head, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # RoPE first ...
        q, k = norm(q), norm(k)                                      # ... then QK-norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if self.n_kv_head != self.n_head:
            rep = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # explicit attention (not SDPA): deterministic backward, and a
        # document mask for packed rows
        att = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(D))  # [B, H, T, T]
        if mask is None:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(v.dtype)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(norm(x), cos, sin, mask)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
            "h": nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
        })
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # rotary tables for 10x the training length, like nanochat
        cos, sin = rotary_tables(cfg.sequence_len * 10, cfg.n_embd // cfg.n_head, "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def init_weights(self):
        """nanochat's init: N(0,1) embedding, fan-in scaled linears, zero
        lm_head and zero output projections."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                fan_out, fan_in = m.weight.shape
                std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.lm_head.weight)
        for block in self.transformer.h:
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx, targets=None, mask=None):
        """idx [B, T] token ids; targets [B, T] (-1 = no loss) or None.
        Returns the mean loss, or logits [B, T, V] (fp32) without targets."""
        B, T = idx.shape
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.transformer.wte(idx))
        for block in self.transformer.h:
            x = block(x, cos, sin, mask)
        x = norm(x)
        logits = self.lm_head(x).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1)


def param_count(model):
    return sum(p.numel() for p in model.parameters())


# ============================================================ chat + tool

class _Timeout(Exception):
    pass


def _eval_with_timeout(expr, seconds=3):
    def handler(signum, frame):
        raise _Timeout()
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        return eval(expr, {"__builtins__": {}}, {})  # nanochat's reference semantics
    except Exception:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def use_calculator(expr):
    """nanochat's calculator tool (docs/model.md, Calculator): the result, or None."""
    expr = expr.replace(",", "")
    if all(ch in "0123456789*+-/.() " for ch in expr):
        if "**" in expr:
            return None
        return _eval_with_timeout(expr)
    allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"()._ "
    if not all(ch in allowed for ch in expr):
        return None
    banned = ["__", "import", "exec", "eval", "compile", "open", "file", "input",
              "raw_input", "globals", "locals", "vars", "dir", "getattr", "setattr",
              "delattr", "hasattr"]
    low = expr.lower()
    if any(b in low for b in banned) or ".count(" not in expr:
        return None
    return _eval_with_timeout(expr)


def render_for_completion(enc, messages):
    """nanochat's chat prompt: <|bos|>, each message, then <|assistant_start|>.
    A system message is merged into the first user message."""
    sp = enc._special_tokens
    msgs = list(messages)
    if msgs and msgs[0]["role"] == "system":
        msgs = [{"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}] + msgs[2:]
    ids = [sp["<|bos|>"]]
    for m in msgs:
        if m["role"] == "user":
            ids += [sp["<|user_start|>"]] + enc.encode_ordinary(m["content"]) + [sp["<|user_end|>"]]
        else:
            ids += [sp["<|assistant_start|>"]] + enc.encode_ordinary(m["content"]) + [sp["<|assistant_end|>"]]
    return ids + [sp["<|assistant_start|>"]]


@torch.no_grad()
def generate_greedy(model, enc, prompt_ids, max_tokens):
    """nanochat's Engine at temperature 0 for one row: argmax (lowest index on
    ties), calculator forcing, stop at <|assistant_end|>/<|bos|>. Returns
    (generated ids without the terminal token, finish_reason, margins) where
    margins[i] is the top-1 minus top-2 logit of step i (None when forced;
    one more entry than ids when it stopped: the terminal step's)."""
    sp = enc._special_tokens
    device = next(model.parameters()).device
    ids = list(prompt_ids)
    out, margins, forced = [], [], []
    in_python, expr_tokens = False, []
    finish = "length"
    while len(out) < max_tokens:
        logits = model(torch.tensor([ids], device=device))[0, -1]
        if forced:
            tok = forced.pop(0)
            margins.append(None)
        else:
            top = torch.topk(logits, 2)
            tok = int(torch.argmax(logits))  # first index among ties
            margins.append(float(top.values[0] - top.values[1]))
        if tok in (sp["<|assistant_end|>"], sp["<|bos|>"]):
            finish = "stop"
            break
        out.append(tok)
        ids.append(tok)
        if tok == sp["<|python_start|>"]:
            in_python, expr_tokens = True, []
        elif tok == sp["<|python_end|>"] and in_python:
            in_python = False
            result = use_calculator(enc.decode(expr_tokens))
            if result is not None:
                forced += [sp["<|output_start|>"]] + enc.encode_ordinary(str(result)) + [sp["<|output_end|>"]]
        elif in_python:
            expr_tokens.append(tok)
    return out, finish, margins


def answer_text(enc, ids):
    """The reply text as the engine shows it: specials dropped."""
    sp_ids = set(enc._special_tokens.values())
    return enc.decode([t for t in ids if t not in sp_ids])
