#!/usr/bin/env python3
"""make_calibration_text.py: tests/data/calibration/picochat_mix.txt, the
calibration text of `nanochat quantize --calibrate` in the tests and in
bench/RESULTS.md: ~64 KB drawn evenly from picochat's three training
sources (tools/training_data/sources.py: King James Bible chapters,
WordNet glosses, fortunes-min cookies) in the proportions of its
pretraining text, documents separated by blank lines.

Calibration text should look like what the model reads, so the sample is
from picochat's own data; the held-out text the quality is measured on
(tests/data/heldout, The Devil's Dictionary) is not in it.

Usage (Debian: apt-get install bible-kjv wordnet-base fortunes-min):
    python3 tools/make_calibration_text.py
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "training_data"))
import sources  # noqa: E402

TARGET_BYTES = 64 * 1024
OUT = os.path.join(ROOT, "tests", "data", "calibration", "picochat_mix.txt")


def evenly(docs, budget):
    """Documents spread evenly over the source until `budget` characters."""
    total = sum(len(d) for d in docs)
    stride = max(1, round(total / budget * 0.9))
    picked, n = [], 0
    for d in docs[::stride]:
        if n + len(d) > budget:
            break
        picked.append(d)
        n += len(d) + 2
    return picked


def main():
    groups = sources.all_documents()
    sizes = {name: sum(len(d) for d in docs) for name, docs in groups}
    total = sum(sizes.values())
    picked = []
    for name, docs in groups:
        picked += evenly(docs, TARGET_BYTES * sizes[name] // total)
    text = "\n\n".join(picked) + "\n"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(text.encode())} bytes, {len(picked)} documents "
          + ", ".join(f"{n} {100 * s / total:.0f}%" for n, s in sizes.items()))


if __name__ == "__main__":
    main()
