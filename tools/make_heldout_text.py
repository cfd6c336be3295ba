#!/usr/bin/env python3
"""make_heldout_text.py: the held-out text of `nanochat eval` (and of the
8-bit quality numbers in bench/RESULTS.md): the first ~100 KB of Ambrose
Bierce's "The Devil's Dictionary" (1911, public domain), as Debian's
dict-devil package ships it. picochat never saw it (its training text is
the KJV Bible, WordNet glosses and fortunes-min, tools/training_data/).

    apt-get download dict-devil && dpkg -x dict-devil_*.deb pkg
    python3 tools/make_heldout_text.py pkg/usr/share/dictd/devil.dict.dz

Keeps the book from its title header (the dictd preamble before it is
dropped) through the last whole entry that ends before --bytes, so the
text ends at an entry boundary. Writes tests/data/heldout/devils_dictionary.txt.
"""
import argparse
import gzip
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dict_dz", help="devil.dict.dz from the dict-devil package")
    ap.add_argument("--bytes", type=int, default=100_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "heldout", "devils_dictionary.txt"))
    args = ap.parse_args()
    text = gzip.open(args.dict_dz).read().decode("ascii")
    start = text.index("            The Internet Wiretap 1st Online Edition of")
    body = text[start:]
    # entries are separated by blank lines; cut at the last one before the limit
    # that is followed by a new headword (an upper-case line start)
    cut = 0
    pos = body.find("\n\n")
    while 0 <= pos < args.bytes:
        nxt = body[pos + 2:pos + 3]
        if nxt.isupper():
            cut = pos + 1
        pos = body.find("\n\n", pos + 1)
    with open(args.out, "w", encoding="ascii") as f:
        f.write(body[:cut])
    print(f"{args.out}: {cut} bytes")


if __name__ == "__main__":
    main()
