"""prepare.py: builds everything picochat's training run reads, on the CPU,
deterministically: the tokenizer, the tokenized text and conversations, and
the held-out questions.

    apt-get install bible-kjv wordnet-base fortunes-min
    python3 tools/training_data/prepare.py --out .train

Writes to --out:
    tokenizer.pkl  pickled tiktoken.Encoding (nanochat's split pattern, ranks
                   from tools/bpe_train.py, the 9 specials at the last 9 ids),
                   saved exactly as nanochat saves its tokenizer
    data.npz       text: uint16 stream, <|bos|> before each document;
                   conv_ids/conv_mask/conv_offsets: rendered conversations and
                   their loss masks (1 = assistant token to learn)
    data.json      sizes, ids, counts
    heldout.json   the held-out problems and the golden questions
and copies heldout.json to tests/data/picochat/ (the e2e test reads it).

Conversations are rendered like nanochat's tokenizer.render_conversation:
<|bos|>, user turns inside <|user_start|>..<|user_end|> (mask 0), assistant
turns <|assistant_start|> (mask 0) + content (mask 1) + <|assistant_end|>
(mask 1); a python part is <|python_start|> code <|python_end|> (mask 1),
a python_output part <|output_start|> result <|output_end|> (mask 0: at
inference the engine forces those tokens).
"""

import argparse
import json
import os
import pickle
import random
import sys
import time

import numpy as np
import tiktoken

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import conversations  # noqa: E402
import sources  # noqa: E402
import bpe_train  # noqa: E402  (tools/bpe_train.py)

SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                 r"""\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>",
            "<|assistant_end|>", "<|python_start|>", "<|python_end|>",
            "<|output_start|>", "<|output_end|>"]

COUNTS = dict(arithmetic=150_000, letters=200_000, definitions=45_000, small_talk=8_000,
              refusal=4_000, multi_turn=30_000)
# Words it learns to define / to spell for letter counting: the most frequent
# of WordNet's tagged corpus, then of our text, then sources.EXTRA_WORDS.
DEFINED_WORDS = (2500, 1000)
LETTER_WORDS = (3000, 3000)


def plain_text(conv):
    """A conversation's text without specials (for tokenizer training)."""
    parts = []
    for m in conv["messages"]:
        if isinstance(m["content"], str):
            parts.append(m["content"])
        else:
            parts += [p["text"] for p in m["content"]]
    return "\n".join(parts)


def render(enc, conv):
    sp = enc._special_tokens
    ids, mask = [sp["<|bos|>"]], [0]

    def add(toks, m):
        ids.extend(toks)
        mask.extend([m] * len(toks))

    for msg in conv["messages"]:
        if msg["role"] == "user":
            add([sp["<|user_start|>"]] + enc.encode_ordinary(msg["content"]) + [sp["<|user_end|>"]], 0)
            continue
        add([sp["<|assistant_start|>"]], 0)
        content = msg["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for part in content:
            toks = enc.encode_ordinary(part["text"])
            if part["type"] == "text":
                add(toks, 1)
            elif part["type"] == "python":
                add([sp["<|python_start|>"]] + toks + [sp["<|python_end|>"]], 1)
            else:
                add([sp["<|output_start|>"]] + toks + [sp["<|output_end|>"]], 0)
        add([sp["<|assistant_end|>"]], 1)
    return ids, mask


def golden_questions(arith, letters):
    """The held questions whose greedy transcripts are the golden test."""
    def chat(name, kind, text, max_tokens=96):
        msgs = [{"role": "user", "content": text}]
        return {"name": name, "kind": kind, "messages": msgs, "max_tokens": max_tokens}

    qs = [
        chat("hello", "small_talk", "Hello!"),
        chat("who", "identity", "Who are you?", 128),
        chat("can_do", "identity", "What can you do?", 128),
        chat("thanks", "small_talk", "Thank you!"),
        chat("define_ocean", "definition", "What does ocean mean?"),
        chat("define_happy", "definition", "Define happy."),
        chat("define_water", "definition", "What is the meaning of water?"),
        chat("poem", "refusal", "Write a poem about the sea.", 128),
        chat("system_prompt", "arithmetic", "What is 7 + 8?"),
    ]
    # the CLI's --system path: merged into the first user message (docs/model.md, Chat format)
    qs[-1]["messages"].insert(0, {"role": "system", "content": "You are a helpful assistant."})
    for i, p in enumerate(arith):
        qs.append(chat(f"arith_{i:02d}", "arithmetic", p["question"]))
    for i, p in enumerate(letters):
        qs.append(chat(f"letters_{i:02d}", "letters", p["question"]))
    return qs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".train")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply conversation counts (tests)")
    ap.add_argument("--tests-dir", default=os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                        "tests", "data", "picochat"))
    ap.add_argument("--tokenizer", default="", help="use this tokenizer.pkl instead of training one (a draft "
                    "model for picochat must share models/picochat/tokenizer.pkl)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    docs = sources.all_documents()
    text_docs = [d for _, ds in docs for d in ds]
    defined = sources.common_words(text_docs, *DEFINED_WORDS)
    letter_words = [w for w, _, _ in sources.common_words(text_docs, *LETTER_WORDS)]
    print(f"{len(defined)} defined words, {len(letter_words)} letter-counting words", flush=True)
    arith_held, letters_held = conversations.heldout_problems(letter_words)
    counts = {k: max(1, int(v * args.scale)) for k, v in COUNTS.items()}
    convs = conversations.generate(args.seed, counts, defined, letter_words, (arith_held, letters_held))
    print(f"{len(convs)} conversations ({time.time() - t0:.1f}s)", flush=True)

    # ---- tokenizer: BPE over all text plus a sample of conversations (or the one given)
    if args.tokenizer:
        with open(args.tokenizer, "rb") as f:
            enc = pickle.load(f)
    else:
        corpus = [d for _, ds in docs for d in ds] + [plain_text(c) for c in convs[:20000]]
        n_ranks = args.vocab_size - len(SPECIALS)
        ranks = bpe_train.train_bpe(corpus, n_ranks)
        enc = tiktoken.Encoding(name="picochat", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                                special_tokens={s: n_ranks + i for i, s in enumerate(SPECIALS)})
    with open(os.path.join(args.out, "tokenizer.pkl"), "wb") as f:
        pickle.dump(enc, f)
    print(f"tokenizer: {enc.n_vocab} ids ({time.time() - t0:.1f}s)", flush=True)

    # ---- pretraining text: documents in a seeded order, <|bos|> before each
    bos = enc._special_tokens["<|bos|>"]
    all_docs = [(name, d) for name, ds in docs for d in ds]
    random.Random(args.seed).shuffle(all_docs)
    encoded = enc.encode_ordinary_batch([d for _, d in all_docs], num_threads=8)
    text = np.fromiter((t for ids in encoded for t in [bos] + ids), dtype=np.uint16)
    per_source = {}
    for (name, _), ids in zip(all_docs, encoded):
        per_source[name] = per_source.get(name, 0) + len(ids) + 1

    # ---- conversations
    ids_all, mask_all, offsets = [], [], [0]
    for c in convs:
        ids, mask = render(enc, c)
        ids_all.extend(ids)
        mask_all.extend(mask)
        offsets.append(len(ids_all))
    np.savez_compressed(os.path.join(args.out, "data.npz"), text=text,
                        conv_ids=np.array(ids_all, np.uint16), conv_mask=np.array(mask_all, np.uint8),
                        conv_offsets=np.array(offsets, np.int64))
    info = {"vocab_size": enc.n_vocab, "bos_id": bos, "text_tokens": int(len(text)),
            "text_tokens_per_source": per_source, "conversations": len(convs),
            "conversation_counts": counts, "conversation_tokens": len(ids_all),
            "assistant_tokens": int(sum(mask_all)), "seed": args.seed}
    with open(os.path.join(args.out, "data.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info, indent=2))

    # ---- held-out problems and golden questions
    arith = [{"a": a, "op": op, "b": b, "question": f"What is {a} {op} {b}?", "expr": f"{a}{op}{b}",
              "result": conversations.calc(f"{a}{op}{b}")} for a, op, b in arith_held]
    letters = [{"word": w, "letter": l, "question": f"How many {l}'s are in {w}?",
                "expr": f"'{w}'.count('{l}')", "result": str(w.count(l))} for w, l in letters_held]
    held = {"about": "picochat's held-out problems (never in its training data, see "
                     "tools/training_data/conversations.py) and the golden questions; "
                     "made by tools/training_data/prepare.py",
            "arithmetic": arith, "letters": letters, "questions": golden_questions(arith, letters)}
    for d in (args.out, args.tests_dir):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "heldout.json"), "w") as f:
            json.dump(held, f, indent=1, ensure_ascii=False)
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
