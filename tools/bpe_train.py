#!/usr/bin/env python3
"""bpe_train.py: a small, deterministic byte-level BPE trainer (nanochat's recipe).

Trains tiktoken-style mergeable ranks the way nanochat's rustbpe does:
split the text with nanochat's regex (SPLIT_PATTERN), count the distinct
chunks, then repeatedly merge the most frequent adjacent pair of tokens
inside the chunks. Ranks 0..255 are the single bytes; merge k gets rank
256 + k. Ties between equally frequent pairs go to the pair whose token ids
are smallest (lexicographically), so the result depends only on the text.

API:
    ranks = train_bpe(texts, n_ranks)            # {bytes: rank}
    enc = make_encoding(ranks)                   # tiktoken.Encoding + 9 specials
CLI:
    python3 tools/bpe_train.py --vocab-size 4096 --out ranks.tiktoken \\
        [--pkl tokenizer.pkl] corpus.txt ...
--vocab-size counts the 9 special tokens, as nanochat's tok_train does
(so 4096 gives ranks 0..4086 and specials 4087..4095). --out writes
tiktoken's .tiktoken format (base64 token, space, rank per line); --pkl
pickles the tiktoken Encoding exactly as nanochat saves tokenizer.pkl.
Chunks are split with the `regex` module (installed with tiktoken); for
characters its Unicode tables classify differently from tiktoken's, chunk
boundaries may differ, which changes which merges are learned, never the
validity of the ranks. Speed: chunks are counted first, so a merge only touches the distinct
chunks that contain its pair (~20 MB of text trains a 4k vocab in minutes).
"""
import argparse
import base64
import collections
import heapq
import pickle
import sys

import regex

SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

SPECIAL_TOKENS = [
    "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>",
]


def count_chunks(texts, pattern=SPLIT_PATTERN):
    """Counter of the UTF-8 bytes of every regex chunk of every text."""
    rx = regex.compile(pattern)
    counts = collections.Counter()
    for text in texts:
        counts.update(m.encode("utf-8") for m in rx.findall(text))
    return counts


def _pairs(word):
    return zip(word, word[1:])


def train_bpe(texts, n_ranks, pattern=SPLIT_PATTERN, verbose=False):
    """Mergeable ranks {bytes: rank} with n_ranks entries (>= 256), or fewer
    if the text runs out of pairs."""
    if n_ranks < 256:
        raise ValueError(f"n_ranks must be at least 256, got {n_ranks}")
    chunk_counts = count_chunks(texts, pattern)
    # Deterministic order: by bytes.
    items = sorted(chunk_counts.items())
    words = [list(chunk) for chunk, _ in items]
    freqs = [c for _, c in items]
    token_bytes = [bytes([b]) for b in range(256)]
    token_id = {tb: i for i, tb in enumerate(token_bytes)}

    pair_count = collections.defaultdict(int)
    where = collections.defaultdict(set)
    for wi, word in enumerate(words):
        for p in _pairs(word):
            pair_count[p] += freqs[wi]
            where[p].add(wi)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    while len(token_bytes) < n_ranks and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry
        a, b = pair
        merged = token_bytes[a] + token_bytes[b]
        new_id = token_id.get(merged)
        if new_id is None:  # (ab, c) and (a, bc) both make abc: one token
            new_id = token_id[merged] = len(token_bytes)
            token_bytes.append(merged)
        changed = set()
        for wi in sorted(where.pop(pair, ())):
            word, f = words[wi], freqs[wi]
            if len(word) < 2:
                continue
            out, i, hit = [], 0, False
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(new_id)
                    i += 2
                    hit = True
                else:
                    out.append(word[i])
                    i += 1
            if not hit:
                continue
            for p in _pairs(word):
                pair_count[p] -= f
                changed.add(p)
            for p in _pairs(out):
                pair_count[p] += f
                where[p].add(wi)
                changed.add(p)
            words[wi] = out
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            elif p in pair_count:
                del pair_count[p]
        if verbose and new_id == len(token_bytes) - 1 and new_id % 500 == 0:
            print(f"merge {new_id - 255}: {token_bytes[new_id]!r} x{-negc}", file=sys.stderr)

    return {tb: r for r, tb in enumerate(token_bytes)}


def make_encoding(ranks, name="nanochat-c", pattern=SPLIT_PATTERN):
    """A tiktoken Encoding with nanochat's 9 special tokens after the ranks."""
    import tiktoken
    specials = {s: len(ranks) + i for i, s in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens=specials)


def write_tiktoken(ranks, path):
    with open(path, "w") as f:
        for tb, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(tb).decode()} {r}\n")


def read_tiktoken(path):
    ranks = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                tok, r = line.split()
                ranks[base64.b64decode(tok)] = int(r)
    return ranks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab-size", type=int, required=True,
                    help="total vocabulary including the 9 special tokens (>= 265)")
    ap.add_argument("--out", help="write ranks in .tiktoken format")
    ap.add_argument("--pkl", help="write a pickled tiktoken Encoding (nanochat's tokenizer.pkl)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("corpus", nargs="+", help="UTF-8 text files")
    args = ap.parse_args()
    if args.vocab_size < 256 + len(SPECIAL_TOKENS):
        ap.error("--vocab-size must be at least 265 (256 bytes + 9 specials)")
    if not args.out and not args.pkl:
        ap.error("give --out and/or --pkl")
    texts = []
    for path in args.corpus:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    ranks = train_bpe(texts, args.vocab_size - len(SPECIAL_TOKENS), verbose=args.verbose)
    if len(ranks) < args.vocab_size - len(SPECIAL_TOKENS):
        print(f"note: the corpus only supports {len(ranks)} ranks", file=sys.stderr)
    if args.out:
        write_tiktoken(ranks, args.out)
    if args.pkl:
        with open(args.pkl, "wb") as f:
            pickle.dump(make_encoding(ranks), f)
    print(f"trained {len(ranks)} ranks + {len(SPECIAL_TOKENS)} specials", file=sys.stderr)


if __name__ == "__main__":
    main()
