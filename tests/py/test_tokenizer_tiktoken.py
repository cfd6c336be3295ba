#!/usr/bin/env python3
"""test_tokenizer_tiktoken.py: our tokenizer, through the real CLI, against tiktoken.

For two tokenizers (the committed fixture tests/data/tokenizer/tokenizer.pkl
+ its Hugging Face tokenizer.json, and a 3k vocab trained here with
tools/bpe_train.py on the generated text) and a large seeded corpus
(ASCII, accented Latin, CJK, emoji with ZWJ sequences, combining marks,
digit runs, contractions in any case, whitespace runs with \\r\\n and tabs,
random code points incl. astral planes and unassigned ones, punctuation runs, special
token texts typed by a user, invalid UTF-8), checks:
  - ids of `nanochat tokenize` == tiktoken's encode_ordinary, per document
    (--jsonl) and for the whole corpus at once (raw stdin);
  - `nanochat tokenize --decode` gives the text back: decode(encode(x)) == x;
  - text that looks like a special token encodes as plain text;
  - `--chat` ids == a Python reimplementation of nanochat's rendering;
  - stream decoding (test_tokenizer --stream) of random token sequences:
    chunk by chunk as stream_reference() says (CPython's verdict on which
    trailing bytes are an incomplete character), and their join ==
    b"".join(...).decode("utf-8", "replace").
Also probes \\p{L}, \\p{N} and \\s code point by code point against
tiktoken's regex (PCRE2 knows an older Unicode; pretokenize.c adapts it).
Environment: NC_BIN (the nanochat binary), NC_BUILD (its build dir).
"""
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import unicodedata

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bpe_train  # noqa: E402
from make_tokenizer_fixtures import stream_reference  # noqa: E402  (the one Python reference of stream decoding)

NC_BIN = os.environ.get("NC_BIN", os.path.join(ROOT, "build", "nanochat"))
NC_BUILD = os.environ.get("NC_BUILD", os.path.join(ROOT, "build"))
DATA = os.path.join(ROOT, "tests", "data", "tokenizer")
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL:", msg, file=sys.stderr)


# ---- the corpus ----

WORDS = ("the of and to in is was for on that with as by at from it this be are or an have not "
         "which but they you his her all one were there been their has more when will would who "
         "Hello World Python tokenizer nanochat GPU model chat").split()
ACCENTED = "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœßÀÉÎÕÜŒĀăĄćČďĘěğĪıŁńŘşŠťŮűŽ"
COMBINING = [chr(c) for c in list(range(0x300, 0x370)) + list(range(0x1AB0, 0x1ABF)) +
             list(range(0x20D0, 0x20F1))]
CJK = ([chr(c) for c in range(0x4E00, 0x4E00 + 800)] + [chr(c) for c in range(0x3041, 0x3097)] +
       [chr(c) for c in range(0x30A1, 0x30FB)] + [chr(c) for c in range(0xAC00, 0xAC00 + 300)] +
       list("。、，！？「」『』（）：；　"))
EMOJI = ["😀", "😂", "🥲", "👍", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "❤️‍🔥",
         "#️⃣", "1️⃣", "🧑🏿‍🚀", "🐈‍⬛", "✨", "🎉", "\u200d", "\ufe0f", "🫠", "🪿"]
DIGITS = "0123456789"
OTHER_N = "٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３ⅠⅡⅢⅣⅫ²³¹½¼⅞①②⑳"
WS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\t", "\x0b", "\x0c", "\u00a0",
      "\u3000", "\u2028", "\u2029", "\u0085", "\u2003", "\u200b", "   \r\n", " \t \n"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("«»“”‘’…–—¿¡·•§¶†‡※→≠∞√")
CONTRACTIONS = ["'s", "'S", "'t", "'T", "'d", "'D", "'m", "'M", "'ll", "'LL", "'Ll", "'lL",
                "'ve", "'VE", "'Ve", "'vE", "'re", "'RE", "'Re", "'rE", "''", "'x", "’s"]
SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>",
            "<|assistant_end|>", "<|python_start|>", "<|python_end|>", "<|output_start|>",
            "<|output_end|>", "<|endoftext|>", "<|", "|>"]


def all_codepoints():
    return [chr(c) for c in range(0x20, 0x110000) if not 0xD800 <= c <= 0xDFFF]


def check_unicode_classes():
    """\p{L}, \p{N}, \s as tiktoken's regex sees them, probed code point by
    code point: pattern "x<class>|[\s\S]" where "x" + c is a token of its
    own, so c is in the class iff "x" + c encodes to one id. Probes every
    code point in the ranges of src/tokenizer/unicode_extra.h (where PCRE2's
    tables are patched), the White_Space candidates, and every 16th other
    code point (all 1.1M take ~40 s; tools/gen_unicode_extra.py does that)."""
    import re
    import tiktoken
    t0 = time.time()
    with open(os.path.join(ROOT, "src", "tokenizer", "unicode_extra.h")) as f:
        items = re.findall(r"x\{([0-9a-f]+)\}(?:-\\\\x\{([0-9a-f]+)\})?", f.read())
    extra = set()
    for a, b in items:
        extra.update(range(int(a, 16), int(b or a, 16) + 1))
    spaces = {0x85, 0xA0, 0x1680, 0x180E, 0x200B, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF}
    spaces.update(range(0x2000, 0x200C))
    cps = [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF and
           (c % 16 == 0 or c in extra or c in spaces)]
    if len(extra) < 9000:
        fail(f"unicode_extra.h parsed to only {len(extra)} code points")
    ranks = {bytes([i]): i for i in range(256)}
    for c in cps:
        ranks[b"x" + chr(c).encode()] = len(ranks)
    text = "".join("x" + chr(c) for c in cps)
    for prop in (r"\p{L}", r"\p{N}", r"\s", r"\S"):
        enc = tiktoken.Encoding(name="probe", pat_str="x" + prop + r"|[\s\S]", mergeable_ranks=ranks,
                                special_tokens={})
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe.pkl")
            with open(path, "wb") as f:
                pickle.dump(enc, f)
            got = run([NC_BIN, "tokenize", "--tokenizer", path], text.encode()).split()
        want_ids = enc.encode_ordinary(text)
        got_ids = [int(i) for i in got]
        want = set(i for i in want_ids if i >= 256)
        ours = set(i for i in got_ids if i >= 256)
        diff = sorted(cps[i - 256] for i in want ^ ours)
        if diff or got_ids != want_ids:
            fail(f"Unicode class {prop}: {len(diff)} code points differ from tiktoken, e.g. "
                 f"{[hex(c) for c in diff[:8]]}; ids equal: {got_ids == want_ids}")
    print(f"Unicode classes: {len(cps)} code points probed in {time.time() - t0:.1f} s")


def gen_doc(rng, kind, pool):
    n = rng.randint(0, 60)
    parts = []
    for _ in range(n):
        if kind == "ascii":
            w = rng.choice(WORDS)
            parts.append(rng.choice([w, w.upper(), w.capitalize()]) + rng.choice(["", " ", " ", ", ", ". ", "\n"]))
        elif kind == "latin":
            w = "".join(rng.choice(ACCENTED + "abcdefgh") for _ in range(rng.randint(1, 8)))
            parts.append(unicodedata.normalize(rng.choice(["NFC", "NFD"]), w) + " ")
        elif kind == "cjk":
            parts.append("".join(rng.choice(CJK) for _ in range(rng.randint(1, 6))) + rng.choice(["", " ", "\n"]))
        elif kind == "emoji":
            parts.append(rng.choice(EMOJI) * rng.randint(1, 3) + rng.choice(["", " ", "a", "\n"]))
        elif kind == "combining":
            parts.append(rng.choice("aeioun xyzAZ1") + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 3))))
        elif kind == "digits":
            parts.append("".join(rng.choice(DIGITS + OTHER_N if rng.random() < 0.2 else DIGITS)
                                 for _ in range(rng.randint(1, 12))) + rng.choice(["", " ", ".", ",", "x", "\n"]))
        elif kind == "contractions":
            parts.append(rng.choice(WORDS) + rng.choice(CONTRACTIONS) + rng.choice(["", " ", "\n", "'s"]))
        elif kind == "whitespace":
            parts.append(rng.choice(WS) * rng.randint(1, 4) + rng.choice(["", "a", "!", "1", "é", "中"]))
        elif kind == "unicode":
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 5))))
        elif kind == "punct":
            parts.append("".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 6))) +
                         rng.choice(["", " ", "\n", "\r\n", "\r\n\r\n", "a"]))
        elif kind == "specials":
            parts.append(rng.choice(SPECIALS) + rng.choice(["", " ", "hi", "\n"]))
        else:  # mixed
            return "".join(gen_doc(rng, rng.choice(KINDS[:-1]), pool) for _ in range(3))
    return "".join(parts)


KINDS = ["ascii", "latin", "cjk", "emoji", "combining", "digits", "contractions", "whitespace",
         "unicode", "punct", "specials", "mixed"]


# ---- running our binaries ----

def run(args, data):
    p = subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return p.stdout


def ids_lines(out):
    return [[int(x) for x in line.split()] for line in out.decode().split("\n")[:-1]]


def render_chat(enc, messages):
    """nanochat: render_conversation's system merge + chat_web.py's prompt."""
    sp = enc._special_tokens
    if messages[0]["role"] == "system":
        messages = [dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])] + messages[2:]
    ids = [sp["<|bos|>"]]
    for m in messages:
        s, e = ("<|user_start|>", "<|user_end|>") if m["role"] == "user" else ("<|assistant_start|>", "<|assistant_end|>")
        ids += [sp[s]] + enc.encode_ordinary(m["content"]) + [sp[e]]
    return ids + [sp["<|assistant_start|>"]]


def check_tokenizer(label, enc, tok_file, docs, rng):
    t0 = time.time()
    base = [NC_BIN, "tokenize", "--tokenizer", tok_file]
    special_ids = set(enc._special_tokens.values())

    # 1. per document
    want = [enc.encode_ordinary(d) for d in docs]
    got = ids_lines(run(base + ["--jsonl"], "".join(json.dumps(d) + "\n" for d in docs).encode()))
    if len(got) != len(docs):
        fail(f"{label}: {len(got)} output lines for {len(docs)} documents")
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    for i in bad[:5]:
        g, w = got[i], want[i]
        k = next((j for j in range(min(len(g), len(w))) if g[j] != w[j]), min(len(g), len(w)))
        fail(f"{label}: doc {i} {docs[i][:80]!r}: ids differ at {k}: ours {g[k:k+4]} "
             f"({enc.decode(g[k:k+4])!r}) tiktoken {w[k:k+4]} ({enc.decode(w[k:k+4])!r})")
    if bad:
        fail(f"{label}: {len(bad)} of {len(docs)} documents differ")
    for i, g in enumerate(got):
        if special_ids & set(g):
            fail(f"{label}: doc {i} encodes to a special token")
            break

    # 2. the whole corpus at once, raw stdin (also invalid UTF-8)
    whole = "".join(docs)
    if ids_lines(run(base, whole.encode()))[0] != enc.encode_ordinary(whole):
        fail(f"{label}: the whole corpus ({len(whole)} chars) encodes differently")
    for k in range(20):
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        if k % 2:
            raw = docs[k].encode()[:50] + raw + docs[k + 1].encode()
        w = enc.encode_ordinary(raw.decode("utf-8", "replace"))
        g = ids_lines(run(base, raw))
        if (g[0] if g else []) != w:
            fail(f"{label}: invalid UTF-8 {raw[:40]!r}... encodes differently")

    # NUL and other control characters (raw stdin: JSON lines cannot carry NUL)
    for d in ["\x00", "a\x00b", "\x00\x01\x02 \x1f\x7f\n\x00", docs[3] + "\x00" + docs[4]]:
        g = ids_lines(run(base, d.encode()))[0]
        if g != enc.encode_ordinary(d):
            fail(f"{label}: {d[:40]!r} encodes differently")
        b = json.loads(run(base + ["--decode", "--jsonl"], (" ".join(map(str, g)) + "\n").encode()))
        if b != d:
            fail(f"{label}: {d[:40]!r} does not decode back: {b[:40]!r}")

    # 3. decode(encode(x)) == x
    back = run(base + ["--decode", "--jsonl"], "".join(" ".join(map(str, g)) + "\n" for g in got).encode())
    back = [json.loads(line) for line in back.decode().split("\n")[:-1]]
    nback = sum(1 for b, d in zip(back, docs) if b != d)
    if len(back) != len(docs) or nback:
        fail(f"{label}: decode(encode(x)) != x for {nback} documents")

    # 4. chat rendering
    convs = []
    for _ in range(200):
        n = rng.randint(1, 6)
        msgs = [{"role": rng.choice(["user", "assistant"]), "content": rng.choice(docs)} for _ in range(n)]
        if rng.random() < 0.4:
            msgs = [{"role": "system", "content": rng.choice(docs)}, {"role": "user", "content": rng.choice(docs)}] + msgs
        convs.append(msgs)
    got_chat = ids_lines(run(base + ["--chat", "--jsonl"], "".join(json.dumps(c) + "\n" for c in convs).encode()))
    nchat = sum(1 for g, c in zip(got_chat, convs) if g != render_chat(enc, c))
    if len(got_chat) != len(convs) or nchat:
        fail(f"{label}: {nchat} of {len(convs)} chat renderings differ")

    # 5. stream decoding of random token sequences
    seqs = []
    multibyte = [i for i in range(enc.n_vocab) if i not in special_ids and enc.decode_single_token_bytes(i)[-1] >= 0x80]
    for k in range(300):
        pool = multibyte if k % 2 else range(enc.n_vocab)
        seqs.append([rng.choice(pool) for _ in range(rng.randint(0, 30))])
    out = run([os.path.join(NC_BUILD, "tests", "test_tokenizer"), "--stream", tok_file],
              "".join(" ".join(map(str, s)) + "\n" for s in seqs).encode())
    chunks = [json.loads(line) for line in out.decode().split("\n")[:-1]]
    nstream = 0
    for s, c in zip(seqs, chunks):
        want_c = stream_reference([enc.decode_single_token_bytes(i) for i in s])
        full = b"".join(enc.decode_single_token_bytes(i) for i in s).decode("utf-8", "replace")
        if c != want_c or "".join(c) != full:
            nstream += 1
    if len(chunks) != len(seqs) or nstream:
        fail(f"{label}: {nstream} of {len(seqs)} streams decode differently")
    print(f"{label}: {len(docs)} documents ({sum(map(len, docs))} chars), {len(convs)} chats, "
          f"{len(seqs)} streams checked in {time.time() - t0:.1f} s")


def main():
    if not os.access(NC_BIN, os.X_OK):
        print(f"nanochat binary not found at {NC_BIN} (set NC_BIN)", file=sys.stderr)
        return 1
    import tiktoken  # noqa: F401  (pickle.load needs it)
    rng = random.Random(20240611)
    check_unicode_classes()
    pool = all_codepoints()
    docs = [gen_doc(rng, KINDS[i % len(KINDS)], pool) for i in range(3000)]
    docs += ["", " ", "\n", "\r\n", "a" * 5000, " " * 3000, "\n" * 300 + "x", "'S'LL'VE" * 50]

    with open(os.path.join(DATA, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    check_tokenizer("fixture tokenizer.pkl", enc, os.path.join(DATA, "tokenizer.pkl"), docs, rng)
    check_tokenizer("fixture tokenizer.json", enc, os.path.join(DATA, "tokenizer.json"), docs, rng)

    # The bundled default model's tokenizer, through -m (no weights are read).
    picochat = os.path.join(ROOT, "models", "picochat")
    if os.path.exists(os.path.join(picochat, "tokenizer.pkl")):
        with open(os.path.join(picochat, "tokenizer.pkl"), "rb") as f:
            enc_p = pickle.load(f)
        check_tokenizer("models/picochat tokenizer.pkl", enc_p, os.path.join(picochat, "tokenizer.pkl"),
                        docs[::2], rng)
        got = ids_lines(run([NC_BIN, "tokenize", "-m", picochat], docs[7].encode()))
        if (got[0] if got else []) != enc_p.encode_ordinary(docs[7]):
            fail("tokenize -m models/picochat differs from tiktoken")

    # A bigger vocabulary trained on this very corpus: many multi-byte merges.
    t0 = time.time()
    ranks = bpe_train.train_bpe(docs[::3], 3000 - 9)
    enc3k = bpe_train.make_encoding(ranks)
    print(f"trained {len(ranks)} ranks in {time.time() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.pkl")
        with open(path, "wb") as f:
            pickle.dump(enc3k, f)
        check_tokenizer("trained 3k tokenizer.pkl", enc3k, path, docs, rng)

    print(f"{len(FAILURES)} failures")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
