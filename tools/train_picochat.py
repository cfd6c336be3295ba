"""train_picochat.py: trains picochat, nanochat-c's small default chat model,
and writes it exactly as nanochat writes a checkpoint.

    python3 tools/training_data/prepare.py --out .train       # data + tokenizer (CPU)
    python3 tools/train_picochat.py --data .train --out OUT   # one GPU, ~8 min

Mirrors nanochat's own recipe, scaled down: base pretraining on plain text
(scripts/base_train.py), then supervised finetuning on conversations with the
loss on assistant tokens only (scripts/chat_sft.py), Muon for the matrices
and AdamW for embedding and lm_head (nanochat's optimizer split and learning
rates), bf16 autocast, the V1 model of tools/picochat_model.py.

Deterministic given --seed: torch.manual_seed, seeded data order, explicit
attention instead of SDPA, torch.use_deterministic_algorithms.

Writes to --out (nanochat's flat download layout):
    model_<step:06d>.pt   torch.save(model.state_dict()), all tensors bf16
    meta_<step:06d>.json  {"step", "model_config": {...}, ...}
    tokenizer.pkl         copied from --data
    loss.json, loss.png   the loss curve (png when matplotlib is there)
    golden.json           greedy transcripts of the held questions, made by
                          the saved weights in fp32 on the CPU with nanochat's
                          calculator forcing (what the C engine is tested on)
"""

import argparse
import json
import os
import pickle
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from picochat_model import (GPT, GPTConfig, answer_text, generate_greedy,  # noqa: E402
                            param_count, render_for_completion)


# ============================================================ optimizer

def newton_schulz5(G, steps=5):
    """Approximately orthogonalizes G (rows x cols) with the quintic
    Newton-Schulz iteration Muon uses, in bf16."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz, for 2-D weight matrices."""

    def __init__(self, params, lr, momentum=0.95):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "buf" not in state:
                    state["buf"] = torch.zeros_like(p.grad)
                buf = state["buf"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"])  # nesterov
                u = newton_schulz5(g)
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.add_(u.to(p.dtype), alpha=-group["lr"] * scale)


def make_optimizers(model, C):
    lr_scale = (C / 768) ** -0.5  # nanochat scales the AdamW lrs by 1/sqrt(C/768)
    matrices = [p for p in model.transformer.h.parameters()]
    adam = torch.optim.AdamW([
        dict(params=[model.transformer.wte.weight], lr=0.2 * lr_scale),
        dict(params=[model.lm_head.weight], lr=0.004 * lr_scale),
    ], betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    muon = Muon(matrices, lr=0.02)
    for opt in (adam, muon):
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    return adam, muon


def lr_multiplier(step, total, warmdown_frac):
    warmdown = int(total * warmdown_frac)
    if step < total - warmdown:
        return 1.0
    return max(0.0, (total - step) / warmdown)


# ============================================================ data

class Data:
    """The prepared token arrays (tools/training_data/prepare.py), on device.

    text: one stream of uint16 ids, <|bos|> before each document; its last
    `val` tokens are held out. conversations: flat ids + per-token loss mask
    with offsets; each starts with <|bos|>."""

    def __init__(self, path, T, device, seed):
        z = np.load(os.path.join(path, "data.npz"))
        with open(os.path.join(path, "data.json")) as f:
            self.info = json.load(f)
        self.bos = self.info["bos_id"]
        self.T, self.device = T, device
        text = z["text"].astype(np.int64)
        n_val = min(len(text) // 50, 64 * (T + 1))
        self.text = torch.from_numpy(text[:-n_val]).to(device)
        self.text_val = torch.from_numpy(text[-n_val:][: (n_val // (T + 1)) * (T + 1)]).view(-1, T + 1).to(device)
        ids, mask, off = z["conv_ids"], z["conv_mask"], z["conv_offsets"]
        self.convs = [(ids[off[i]:off[i + 1]], mask[off[i]:off[i + 1]]) for i in range(len(off) - 1)]
        n_cval = max(1, len(self.convs) // 100)
        self.conv_val = self._pack(self.convs[-n_cval:], np.random.default_rng(0))
        self.convs = self.convs[:-n_cval]
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.sft_rows, self.sft_pos = None, 0
        self.sft_epochs = 0

    def _pack(self, convs, rng):
        """Shuffles conversations and packs them whole into rows of T+1
        tokens; returns (tokens [R, T+1], loss mask of targets [R, T])."""
        T1 = self.T + 1
        order = rng.permutation(len(convs))
        rows_tok, rows_msk = [], []
        cur_t = np.full(T1, self.bos, np.int64)
        cur_m = np.zeros(T1, np.int64)
        fill = 0
        for i in order:
            ids, m = convs[i]
            n = min(len(ids), T1)
            if fill + n > T1:
                rows_tok.append(cur_t)
                rows_msk.append(cur_m)
                cur_t = np.full(T1, self.bos, np.int64)
                cur_m = np.zeros(T1, np.int64)
                fill = 0
            cur_t[fill:fill + n] = ids[:n]
            cur_m[fill:fill + n] = m[:n]
            fill += n
        if fill:
            rows_tok.append(cur_t)
            rows_msk.append(cur_m)
        tok = torch.from_numpy(np.stack(rows_tok)).to(self.device)
        msk = torch.from_numpy(np.stack(rows_msk)[:, 1:]).to(self.device).bool()
        return tok, msk

    def text_batch(self, B):
        starts = torch.randint(0, len(self.text) - self.T - 1, (B,), generator=self.gen)
        idx = starts.to(self.device)[:, None] + torch.arange(self.T + 1, device=self.device)
        rows = self.text[idx]
        return rows[:, :-1], rows[:, 1:]

    def sft_batch(self, B):
        if self.sft_rows is None or self.sft_pos + B > len(self.sft_rows[0]):
            self.sft_rows = self._pack(self.convs, self.rng)
            self.sft_pos = 0
            self.sft_epochs += 1
        tok, msk = self.sft_rows
        rows, m = tok[self.sft_pos:self.sft_pos + B], msk[self.sft_pos:self.sft_pos + B]
        self.sft_pos += B
        return rows[:, :-1], rows[:, 1:].masked_fill(~m, -1)


def doc_mask(x, bos):
    """[B, 1, T, T] bool: causal, and only within the document (a token sees
    back to the nearest <|bos|> at or before it). With relative positions
    (RoPE) this makes a packed row the same as separate sequences."""
    doc = torch.cumsum((x == bos).int(), dim=1)
    T = x.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


# ============================================================ training

def train(args):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(args.device)
    data = Data(args.data, args.seq, device, args.seed)
    with open(os.path.join(args.data, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    cfg = GPTConfig(sequence_len=args.seq, vocab_size=enc.n_vocab, n_layer=args.depth,
                    n_head=args.n_head, n_kv_head=args.n_head, n_embd=args.n_embd)
    model = GPT(cfg).to(device)
    model.init_weights()
    n_params = param_count(model)
    print(f"model: {cfg}, {n_params:,} parameters")
    adam, muon = make_optimizers(model, cfg.n_embd)
    fwd = torch.compile(model) if args.compile else model
    use_amp = device.type == "cuda"
    total = args.pretrain_steps + args.sft_steps
    log = {"step": [], "loss": [], "phase": [], "val": []}

    def evaluate(step):
        model.eval()
        out = {"step": step}
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            for name, (x, y) in (("text", (data.text_val[:, :-1], data.text_val[:, 1:])),
                                 ("chat", (data.conv_val[0][:, :-1],
                                           data.conv_val[0][:, 1:].masked_fill(~data.conv_val[1], -1)))):
                losses = []  # eager model: the compiled one would recompile for eval mode
                for i in range(0, max(1, len(x) - args.batch + 1), args.batch):
                    xb, yb = x[i:i + args.batch], y[i:i + args.batch]
                    losses.append(float(model(xb, yb, doc_mask(xb, data.bos))))
                out[name] = sum(losses) / len(losses)
        model.train()
        log["val"].append(out)
        print(f"step {step:5d} | val text {out['text']:.4f} | val chat {out['chat']:.4f}", flush=True)

    t0 = last_t = time.time()
    last_step, stopped_at = -1, total
    for step in range(total):
        sft = step >= args.pretrain_steps
        if sft and data.sft_rows is None:
            print(f"step {step}: supervised finetuning on conversations", flush=True)
        if step % args.eval_every == 0:
            evaluate(step)
        if not sft:
            x, y = data.text_batch(args.batch)
        else:
            n_text = int(args.batch * args.sft_text_frac)
            x, y = data.sft_batch(args.batch - n_text)
            if n_text:
                xt, yt = data.text_batch(n_text)
                x, y = torch.cat([x, xt]), torch.cat([y, yt])
        lrm = lr_multiplier(step, total, args.warmdown)
        for opt in (adam, muon):
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * lrm
        for g in muon.param_groups:
            g["momentum"] = 0.85 + 0.10 * min(step / 300, 1.0)
        with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            loss = fwd(x, y, doc_mask(x, data.bos))
        loss.backward()
        adam.step()
        muon.step()
        model.zero_grad(set_to_none=True)
        if step % args.log_every == 0 or step == total - 1:
            lv = loss.detach().item()
            log["step"].append(step)
            log["loss"].append(lv)
            log["phase"].append("sft" if sft else "pretrain")
            now = time.time()
            tok_s = (step - last_step) * args.batch * args.seq / max(now - last_t, 1e-9)
            last_step, last_t = step, now
            print(f"step {step:5d}/{total} | loss {lv:.4f} | lrm {lrm:.2f} | {now - t0:.0f}s | {tok_s:,.0f} tok/s",
                  flush=True)
            if args.time_limit and now - t0 > args.time_limit:
                # safety valve for a fixed device budget: save what we have
                print(f"time limit {args.time_limit}s reached at step {step}: stopping early", flush=True)
                stopped_at = step + 1
                break
    evaluate(stopped_at)
    train_time = time.time() - t0
    print(f"trained {stopped_at} steps in {train_time:.0f}s; conversation epochs: {data.sft_epochs}")
    save(args, model, cfg, enc, stopped_at, log, n_params, train_time)
    return stopped_at


def save(args, model, cfg, enc, step, log, n_params, train_time):
    os.makedirs(args.out, exist_ok=True)
    # bf16 for every tensor: 2 bytes/param keeps the model under the 16 MB
    # budget (nanochat stores wte bf16 and the rest fp32; the loader reads both)
    sd = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, os.path.join(args.out, f"model_{step:06d}.pt"))
    meta = {
        "step": step,
        "model_config": {"sequence_len": cfg.sequence_len, "vocab_size": cfg.vocab_size,
                         "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                         "n_kv_head": cfg.n_kv_head, "n_embd": cfg.n_embd},
        "user_config": vars(args),
        "architecture": "nanochat V1",
        "parameters": n_params,
        "final_val": log["val"][-1],
        "train_seconds": round(train_time, 1),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    with open(os.path.join(args.out, f"meta_{step:06d}.json"), "w") as f:
        json.dump(meta, f, indent=2)
    shutil.copy(os.path.join(args.data, "tokenizer.pkl"), os.path.join(args.out, "tokenizer.pkl"))
    with open(os.path.join(args.out, "loss.json"), "w") as f:
        json.dump(log, f)
    plot_loss(os.path.join(args.out, "loss.json"), os.path.join(args.out, "loss.png"))


def plot_loss(log_path, png_path):
    """Training loss (pretraining, then finetuning) and validation losses."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no loss.png (run with --plot-only later)")
        return
    with open(log_path) as f:
        log = json.load(f)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=90)
    for phase, color in (("pretrain", "tab:blue"), ("sft", "tab:orange")):
        pts = [(s, v) for s, v, p in zip(log["step"], log["loss"], log["phase"]) if p == phase]
        if pts:
            ax.plot(*zip(*pts), color=color, lw=1, label=f"train ({'text' if phase == 'pretrain' else 'finetune mix'})")
    vs = log["val"]
    ax.plot([v["step"] for v in vs], [v["text"] for v in vs], "o-", ms=3, color="tab:green", label="val text")
    ax.plot([v["step"] for v in vs], [v["chat"] for v in vs], "o-", ms=3, color="tab:red",
            label="val conversations (assistant tokens)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.set_title("picochat training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    print(f"wrote {png_path}")


# ============================================================ golden transcripts

def load_checkpoint(ckpt_dir):
    """The newest model_*.pt of a flat checkpoint dir, as an fp32 CPU model."""
    steps = sorted(int(n[6:12]) for n in os.listdir(ckpt_dir) if n.startswith("model_") and n.endswith(".pt"))
    step = steps[-1]
    with open(os.path.join(ckpt_dir, f"meta_{step:06d}.json")) as f:
        meta = json.load(f)
    model = GPT(GPTConfig(**meta["model_config"]))
    sd = torch.load(os.path.join(ckpt_dir, f"model_{step:06d}.pt"), map_location="cpu")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.eval()
    with open(os.path.join(ckpt_dir, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    return model, enc, step


def write_golden(ckpt_dir, questions_path, out_path):
    """Greedy transcripts of every held question by the checkpoint's weights
    in fp32 on the CPU (the C engine's CPU numerics)."""
    model, enc, step = load_checkpoint(ckpt_dir)
    with open(questions_path) as f:
        held = json.load(f)
    cases = []
    for q in held["questions"]:
        prompt = render_for_completion(enc, q["messages"])
        ids, finish, margins = generate_greedy(model, enc, prompt, q["max_tokens"])
        cases.append(dict(q, prompt_ids=prompt, tokens=ids, finish_reason=finish,
                          text=answer_text(enc, ids), margins=margins))
        print(f"{q['name']}: {cases[-1]['text']!r}", flush=True)
    golden = {"model_step": step, "model_files": sorted(os.listdir(ckpt_dir)),
              "generator": "tools/train_picochat.py write_golden: fp32 CPU PyTorch, greedy, "
                           "nanochat calculator forcing", "cases": cases}
    with open(out_path, "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
    print(f"wrote {out_path} ({len(cases)} cases)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".train", help="prepared data dir (prepare.py --out)")
    p.add_argument("--out", default="models/picochat", help="checkpoint output dir")
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=64, help="rows per step")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--sft-steps", type=int, default=3000)
    p.add_argument("--sft-text-frac", type=float, default=0.25, help="share of text rows in finetuning batches")
    p.add_argument("--warmdown", type=float, default=0.4, help="fraction of steps with linearly falling lr")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--time-limit", type=float, default=0, help="stop early (and save) after this many seconds")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the golden pass (0 = all)")
    p.add_argument("--golden", default="", help="write golden transcripts of the questions in "
                   "<data>/heldout.json to this path after training")
    p.add_argument("--golden-only", action="store_true", help="skip training; golden from --out")
    p.add_argument("--plot-only", action="store_true", help="skip training; loss.png from --out/loss.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot_only:
        plot_loss(os.path.join(args.out, "loss.json"), os.path.join(args.out, "loss.png"))
        return
    if not args.golden_only:
        train(args)
    if args.golden:
        write_golden(args.out, os.path.join(args.data, "heldout.json"), args.golden)


if __name__ == "__main__":
    main()
