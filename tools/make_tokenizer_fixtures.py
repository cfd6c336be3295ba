#!/usr/bin/env python3
"""make_tokenizer_fixtures.py: the tokenizer fixtures under tests/data/tokenizer/.

Writes, from a small deterministic corpus (Python stdlib sources plus a few
paragraphs in other scripts, see CORPUS_EXTRA):
  tokenizer.pkl    a real tiktoken.Encoding pickled exactly as nanochat does
                   (pickle.dump(enc, f)): nanochat's split pattern, ranks from
                   tools/bpe_train.py, the 9 specials at the last 9 ids
                   (vocab 2048: ranks 0..2038, specials 2039..2047)
  tokenizer.json   the same tokenizer converted by transformers'
                   TikTokenConverter (what transformers' nanochat converter
                   writes into a Hugging Face copy), built and saved by the
                   `tokenizers` library
  cases.json       reference outputs for tests/c/test_tokenizer.c, all made
                   by tiktoken / Python:
                     encode: text -> tiktoken encode_ordinary ids
                     decode: ids -> bytes.decode("utf-8", "replace")
                     stream: ids -> the chunks a streaming decoder must
                             emit, one per token plus the final flush (see
                             stream_reference)
                     chat:   messages -> nanochat's rendering (reimplemented
                             below from nanochat/tokenizer.py + chat_web.py)
Run: python3 tools/make_tokenizer_fixtures.py [--out tests/data/tokenizer]
"""
import argparse
import importlib
import inspect
import json
import os
import pickle
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe_train  # noqa: E402

VOCAB_SIZE = 2048
STDLIB_MODULES = ["os", "re", "json", "collections", "argparse", "subprocess", "typing",
                  "email.message", "http.client", "unittest.case", "textwrap", "string",
                  "calendar", "difflib", "fractions", "decimal"]
CORPUS_EXTRA = [
    "Le cœur a ses raisons que la raison ne connaît point. Où est la bibliothèque ? "
    "Élève, très, déjà, français, garçon, naïve, Noël.",
    "Über allen Gipfeln ist Ruh. Straße, Mädchen, schön, größer, Fußgänger.",
    "¿Dónde está el baño? El niño comió una piña. Mañana, corazón, canción.",
    "Привет, как дела? Москва — столица России. Я люблю читать книги.",
    "Καλημέρα κόσμε. Η γλώσσα είναι ελληνική.",
    "你好，世界。我们今天去公园散步吧。中文分词是一个有趣的问题。",
    "こんにちは世界。今日はいい天気ですね。ひらがなとカタカナと漢字。",
    "안녕하세요 세계. 오늘 날씨가 좋네요. 한국어 문장입니다.",
    "مرحبا بالعالم. اللغة العربية جميلة.",
    "नमस्ते दुनिया। हिन्दी एक सुंदर भाषा है।",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🎉🎉🎉 ✨",
    "Numbers: 3.14159 2,718 1234567890 ١٢٣ ४५६ ⅧⅨ ²³",
    "Contractions: I'm, you're, he's, we've, they'll, she'd, DON'T, I'M, WE'VE, THEY'LL.",
]

NL = "\n"


def corpus():
    texts = []
    for m in STDLIB_MODULES:
        texts.append(inspect.getsource(importlib.import_module(m)))
    for para in CORPUS_EXTRA:
        texts.append((para + NL) * 40)
    return texts


# ---- nanochat's chat rendering (nanochat/tokenizer.py render_conversation's
# system merge + the prompt chat_web.py / chat_cli.py build) ----

def render_chat(enc, messages):
    sp = enc._special_tokens
    if messages and messages[0]["role"] == "system":
        assert len(messages) > 1 and messages[1]["role"] == "user"
        merged = dict(messages[1])
        merged["content"] = messages[0]["content"] + "\n\n" + messages[1]["content"]
        messages = [merged] + messages[2:]
    ids = [sp["<|bos|>"]]
    for m in messages:
        if m["role"] == "user":
            ids += [sp["<|user_start|>"]] + enc.encode_ordinary(m["content"]) + [sp["<|user_end|>"]]
        else:
            ids += ([sp["<|assistant_start|>"]] + enc.encode_ordinary(m["content"]) +
                    [sp["<|assistant_end|>"]])
    return ids + [sp["<|assistant_start|>"]]


def token_bytes(enc, i):
    return enc.decode_single_token_bytes(i)


def stream_reference(token_bytes_list):
    """Chunks a streaming decoder must emit, one per token plus the flush.

    After each token the text shown is the replace-decoding of all bytes so
    far minus a trailing incomplete character: the longest suffix (<= 3
    bytes) that CPython's strict decoder calls "unexpected end of data".
    (CPython's incremental decoder also holds back ED A0..BF, a surrogate
    prefix that can never complete; its strict decoder calls that an
    "invalid continuation byte", and so do we: U+FFFD comes at once. The
    joined text is the same either way.)"""
    def held(b):
        for n in (3, 2, 1):
            if len(b) >= n:
                try:
                    b[-n:].decode("utf-8")
                except UnicodeDecodeError as e:
                    if e.reason == "unexpected end of data" and e.start == 0 and e.end == n:
                        return n
        return 0
    chunks, raw, shown = [], b"", ""
    for tb in token_bytes_list:
        raw += tb
        text = raw[:len(raw) - held(raw)].decode("utf-8", "replace")
        chunks.append(text[len(shown):])
        shown = text
    chunks.append(raw.decode("utf-8", "replace")[len(shown):])
    return chunks


ENCODE_CASES = [
    "", "a", " ", "  ", "\n", "\r\n", "hello world", "Hello, World!", " leading space",
    "trailing spaces   ", "tabs\tand\ttabs", "mixed \t \r\n \n\n  end", "\r\n\r\n  \r\n",
    "line one\nline two\n\n\nline five", "   \n   ", "a  b   c    d",
    "I'm you're he's we've they'll she'd I'M YOU'RE HE'S WE'VE THEY'LL SHE'D 'S 'LL 'Ve 'rE",
    "don't won't can't shouldn't DON'T", "'hello' \"quoted\" ''double''",
    "1 12 123 1234 12345 3.14159 1,000,000 -42 +7", "٣٤٥ ४५६७ ⅧⅨⅩ ²³ ½",
    "x=1;y=2;print(x+y)", "def f(a, b):\n    return a ** b  # comment\n",
    "<|bos|> <|user_start|>hi<|user_end|><|assistant_start|>", "<|endoftext|>",
    "café naïve résumé Ångström façade", "Straße größer Fußgänger",
    "你好，世界！", "こんにちは、世界。", "안녕하세요", "Привет, мир!", "مرحبا", "नमस्ते",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "❤️‍🔥", "e\u0301 a\u0308 n\u0303", "Z\u0351\u0352\u0353",
    "\u00a0nbsp\u00a0", "\u2028line sep\u2029para sep", "\u3000ideographic space", "\u0085nel",
    "\x0b\x0c vertical tab form feed", "\x00nul\x00", "\u200bzero width\u200b",
    "𝓗𝓮𝓵𝓵𝓸 𝔀𝓸𝓻𝓵𝓭", "𐍈 𒀀 𓀀", "\U0010fffd\U000e0001",
    # code points whose class PCRE2 10.42 (Unicode 14) and tiktoken disagree on
    "a\u180eb \u180e \u180e\n", "\U0002ebf0\U0002ebf1 x\U0002ebf2", "\U00011f04abc \U0001e4f0\U0001e4f1\U0001e4f2",
    "1\U00010d40\U00010d41 \ua7cb\ua7cc", "\U00031350 \U000323af!",
    "!!!???...,,,;;;", "--- === *** ###", "(((nested)))", "a!b@c#d$e%f^g&h*i",
    "   !!!   ", "\n!!!\n", "x\n\n\ny", " \n \n", "word\r\nword\rword\n",
]


def random_text(rng, n):
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABC0123456789") + list(" \t\n\r.,!?'\"-") +
                list("éüñçœßЖж你好世界こんにちはكلمة😀👍🏽‍❤\u0301\u00a0\u3000"))
    return "".join(rng.choice(alphabet) for _ in range(n))


def write_fuzz_seeds(out, rng):
    """Seeds for tests/fuzz/fuzz_tokenizer.c: first byte = mode (0 pkl,
    1 json, 2 text, 3 ids as uint16 LE), then the payload."""
    out = os.path.normpath(out)
    os.makedirs(out, exist_ok=True)
    ranks = bpe_train.train_bpe(CORPUS_EXTRA, 256 + 40)
    enc = bpe_train.make_encoding(ranks, name="tiny")
    from transformers.convert_slow_tokenizer import TikTokenConverter
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = os.path.join(tmp, "ranks.tiktoken")
        bpe_train.write_tiktoken(ranks, vocab_file)
        hf = TikTokenConverter(vocab_file=vocab_file, pattern=enc._pat_str,
                               extra_special_tokens=enc._special_tokens).converted()
        hf.save(os.path.join(tmp, "t.json"))
        with open(os.path.join(tmp, "t.json"), "rb") as f:
            hf_json = f.read()
    seeds = {"pkl_tiny": b"\0" + pickle.dumps(enc), "json_tiny": b"\1" + hf_json}
    for k, t in enumerate(ENCODE_CASES[::6]):
        seeds[f"text_{k}"] = b"\2" + t.encode()
    seeds["text_invalid"] = b"\2abc\xe2\x82 \xff\xf0\x9f\x98 z"
    seeds["ids_random"] = b"\3" + bytes(rng.randrange(256) for _ in range(64))
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tokenizer")))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    ranks = bpe_train.train_bpe(corpus(), VOCAB_SIZE - len(bpe_train.SPECIAL_TOKENS))
    assert len(ranks) == VOCAB_SIZE - 9, len(ranks)
    enc = bpe_train.make_encoding(ranks, name="nanochat-c-fixture")
    with open(os.path.join(args.out, "tokenizer.pkl"), "wb") as f:
        pickle.dump(enc, f)

    # Hugging Face tokenizer.json through transformers' TikTokenConverter.
    from transformers.convert_slow_tokenizer import TikTokenConverter
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = os.path.join(tmp, "ranks.tiktoken")
        bpe_train.write_tiktoken(ranks, vocab_file)
        hf = TikTokenConverter(vocab_file=vocab_file, pattern=enc._pat_str,
                               extra_special_tokens=enc._special_tokens).converted()
    hf.save(os.path.join(args.out, "tokenizer.json"))
    hf.encode_special_tokens = True  # like encode_ordinary: specials in text are text

    rng = random.Random(1234)
    texts = ENCODE_CASES + [random_text(rng, rng.randint(1, 200)) for _ in range(60)]
    # Long pieces (> 256 bytes) take the heap-based merge loop.
    texts += ["".join(rng.choice("abcdefghij") for _ in range(3000)),
              "x" * 1000, "ab" * 700, " " * 600 + "z", "\n" * 500 + "\t" * 500,
              "".join(rng.choice("你好世界中文分词问题") for _ in range(400)),
              "!" * 800, "éü" * 300]
    encode = []
    for t in [t for t in texts if "\0" not in t]:  # C reads these as NUL-terminated strings
        ids = enc.encode_ordinary(t)
        hf_ids = hf.encode(t, add_special_tokens=False).ids
        assert hf_ids == ids, f"HF tokenizer.json disagrees with tiktoken on {t!r}"
        encode.append({"text": t, "ids": ids})

    # Invalid UTF-8 is read as Python's decode(errors="replace") reads it.
    encode_bytes = []
    for raw in [b"\xff", b"abc\x80def", b"\xe2\x82", b"\xe2\x82abc", b"\xf0\x9f\x98",
                b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xf0\x90\x80 x",
                bytes(rng.randrange(256) for _ in range(300)),
                "\x00nul\x00 and more".encode()]:
        text = raw.decode("utf-8", "replace")
        encode_bytes.append({"hex": raw.hex(), "ids": enc.encode_ordinary(text)})

    n = enc.n_vocab
    decode, stream = [], []
    for k in range(80):
        ids = [rng.randrange(n) for _ in range(rng.randint(0, 12))]
        if k % 3 == 0:  # mostly multi-byte tokens: more split characters
            multi = [i for i in range(256, n - 9) if token_bytes(enc, i)[0] >= 0x80]
            ids = [rng.choice(multi + list(range(0x80, 0x100))) for _ in range(rng.randint(1, 12))]
        raw = b"".join(token_bytes(enc, i) for i in ids)
        decode.append({"ids": ids, "text": raw.decode("utf-8", "replace")})
        stream.append({"ids": ids, "chunks": stream_reference([token_bytes(enc, i) for i in ids])})

    chats = [
        [{"role": "user", "content": "Hello!"}],
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
         {"role": "user", "content": "And 3+3?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
        [{"role": "system", "content": "You end with a space "}, {"role": "user", "content": " and I start with one"},
         {"role": "assistant", "content": "ok"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "assistant", "content": "I speak first."}],
        [{"role": "user", "content": "<|assistant_end|> is text here <|bos|>"}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "日本語のテキスト 😀\n\nwith\r\nlines"}],
    ]
    chat = [{"messages": m, "ids": render_chat(enc, m)} for m in chats]

    # Class probes: "x" + c is a token for each sampled code point c, so
    # with the pattern "x<class>|[\s\S]" a c inside the class encodes to one
    # id. Samples where PCRE2 10.42's tables differ from tiktoken's, and
    # some where they agree.
    import tiktoken
    probe_cps = [0x180E, 0x85, 0xA0, 0x2028, 0x200B, 0x3000, 0x1C89, 0xA7CB, 0x105C0, 0x10D40,
                 0x10D4A, 0x11F04, 0x11F50, 0x13460, 0x143FA, 0x16D40, 0x1E4D0, 0x1E4F0, 0x1E5F1,
                 0x2B739, 0x2EBF0, 0x2EE5D, 0x31350, 0x323AF, 0x323B0, 0xE9, 0x4E00, 0x661, 0x2167]
    probe_cps += [rng.randrange(0x80, 0x30000) for _ in range(200)]
    probe_cps = sorted(set(c for c in probe_cps if not 0xD800 <= c <= 0xDFFF))
    probe_ranks = {bytes([i]): i for i in range(256)}
    for c in probe_cps:
        probe_ranks[b"x" + chr(c).encode()] = len(probe_ranks)
    probe_text = "".join("x" + chr(c) for c in probe_cps)
    class_probe = {"codepoints": probe_cps, "ids": {}}
    for prop in (r"\p{L}", r"\p{N}", r"\s"):
        penc = tiktoken.Encoding(name="probe", pat_str="x" + prop + r"|[\s\S]",
                                 mergeable_ranks=probe_ranks, special_tokens={})
        class_probe["ids"][prop] = penc.encode_ordinary(probe_text)

    cases = {
        "class_probe": class_probe,
        "pattern": enc._pat_str,
        "vocab_size": n,
        "special_tokens": enc._special_tokens,
        "encode": encode,
        "encode_bytes": encode_bytes,
        "decode": decode,
        "stream": stream,
        "chat": chat,
    }
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=True, indent=0)
    write_fuzz_seeds(os.path.join(os.path.dirname(args.out), "..", "fuzz", "corpus", "tokenizer"), rng)
    print(f"wrote {args.out}: {len(ranks)} ranks, {len(encode)} encode, {len(decode)} decode, "
          f"{len(chat)} chat cases")


if __name__ == "__main__":
    main()
