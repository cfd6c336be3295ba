#!/usr/bin/env python3
"""bench_tokenizer.py: encoding speed on one core, ours vs tiktoken, same ranks, same text.

Builds a corpus from text already on a Debian machine (the files under
/usr/share/doc, decompressed, then Python's standard library sources:
English prose, licences, changelogs and code), trains a tokenizer on its
first part with tools/bpe_train.py (nanochat's split pattern), then times
  tiktoken.Encoding(...).encode_ordinary(corpus)   (one thread)
  build/tests/test_tokenizer --bench tokenizer.pkl corpus.txt
taking the best thread CPU time of several runs each (robust on a
shared machine; encode_ordinary runs on the calling thread), checks that both give the same ids,
and prints MB/s for both. Results go in bench/RESULTS.md ("Tokenizer").
Run: python3 tools/bench_tokenizer.py [--build build] [--mb 20] [--vocab 32768]
"""
import argparse
import glob
import gzip
import os
import pickle
import platform
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bpe_train  # noqa: E402


def corpus_files():
    docs = sorted(glob.glob("/usr/share/doc/**/*", recursive=True))
    stdlib = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"), recursive=True))
    return [p for p in docs + stdlib if os.path.isfile(p) and not os.path.islink(p)]


def build_corpus(limit):
    parts, total = [], 0
    for path in corpus_files():
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rb") as f:
                    data = f.read()
            else:
                with open(path, "rb") as f:
                    data = f.read()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        if "\0" in text:
            continue
        parts.append(text)
        total += len(data)
        if total >= limit:
            break
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="build dir holding tests/test_tokenizer")
    ap.add_argument("--mb", type=float, default=20, help="corpus size in MB")
    ap.add_argument("--train-mb", type=float, default=4, help="MB of the corpus to train on")
    ap.add_argument("--vocab", type=int, default=32768, help="vocab size incl. the 9 specials")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=None, help="where to keep corpus + tokenizer (default BUILD/bench-tok)")
    args = ap.parse_args()
    work = args.work or os.path.join(ROOT, args.build, "bench-tok")
    os.makedirs(work, exist_ok=True)

    corpus_path = os.path.join(work, "corpus.txt")
    text = build_corpus(int(args.mb * 1e6))
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write(text)
    data = text.encode()
    tok_path = os.path.join(work, f"tokenizer-{args.vocab}.pkl")
    if not os.path.exists(tok_path):
        t0 = time.time()
        ranks = bpe_train.train_bpe([text[: int(args.train_mb * 1e6)]], args.vocab - 9)
        with open(tok_path, "wb") as f:
            pickle.dump(bpe_train.make_encoding(ranks), f)
        print(f"trained {len(ranks)} ranks in {time.time() - t0:.0f} s -> {tok_path}", file=sys.stderr)
    with open(tok_path, "rb") as f:
        enc = pickle.load(f)

    want = enc.encode_ordinary(text)  # warm-up, and the reference ids
    best = 1e30
    for _ in range(args.repeat):  # thread CPU time, as the C bench: the machine may be shared
        t0 = time.thread_time()
        enc.encode_ordinary(text)
        best = min(best, time.thread_time() - t0)
    tk_mbs = len(data) / best / 1e6

    bench = os.path.join(ROOT, args.build, "tests", "test_tokenizer")
    out = subprocess.run([bench, "--bench", tok_path, corpus_path, str(args.repeat)], check=True,
                         capture_output=True, text=True).stdout
    ours_mbs = float(out.split(",")[-1].split()[0])
    got = subprocess.run([os.path.join(ROOT, args.build, "nanochat"), "tokenize", "--tokenizer", tok_path],
                         input=data, check=True, capture_output=True).stdout.split()
    same = [int(x) for x in got] == want

    import tiktoken
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"tiktoken {tiktoken.__version__}")
    print(f"corpus: {len(data)} bytes ({len(want)} tokens), vocab {enc.n_vocab}")
    print(f"tiktoken encode_ordinary : {tk_mbs:7.2f} MB/s")
    print(f"nanochat-c encode        : {ours_mbs:7.2f} MB/s  ({ours_mbs / tk_mbs:.2f}x)")
    print(f"same ids: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
