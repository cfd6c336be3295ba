"""sources.py: the plain-text part of picochat's training data, read from
Debian packages installed on this machine.

picochat (the default model of nanochat-c) may only learn from text we are
allowed to ship a model of. Three Debian packages qualify:

  bible-kjv-text  King James Version (1611, public domain; the BRS packaging
                  says "Users may copy, modify or distribute this file at will")
                  read through the `bible` program of package bible-kjv.
  wordnet-base    WordNet 3.0 glosses (WordNet 3.0 licence: use, copy, modify,
                  distribute for any purpose, keep the copyright notice).
  fortunes-min    the small, inoffensive fortune files of fortune-mod (BSD
                  licence of the collection).

Each source yields "documents" (str). The pretraining stream puts <|bos|>
before every document, like nanochat's base training data loader does.

Install: apt-get install bible-kjv wordnet-base fortunes-min
"""

import os
import re
import subprocess

WORDNET_DIR = "/usr/share/wordnet"
FORTUNE_DIR = "/usr/share/games/fortunes"
FORTUNE_FILES = ("fortunes", "literature", "riddles")
POS_NAMES = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}

# The licences as they are recorded in the model card (and checked here so a
# different packaging of the same data cannot slip in unnoticed).
LICENCES = {
    "bible-kjv-text": ("/usr/share/doc/bible-kjv-text/copyright",
                       "Users may copy, modify or"),
    "wordnet-base": ("/usr/share/doc/wordnet-base/copyright",
                     "Permission to use, copy, modify and distribute"),
    "fortunes-min": ("/usr/share/doc/fortunes-min/copyright",
                     "Redistribution and use in source and binary forms"),
}


def check_licences():
    """Fails unless each package's copyright file holds the expected grant."""
    for pkg, (path, needle) in LICENCES.items():
        if not os.path.exists(path):
            raise SystemExit(f"{pkg} is not installed (apt-get install {pkg}); missing {path}")
        with open(path, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
        if needle not in text:
            raise SystemExit(f"{pkg}: licence text changed, re-check {path}")


def kjv_chapters():
    """The King James Bible, one document per chapter: "Genesis 1\\n\\n" then
    one verse per line, verse numbers dropped."""
    out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], check=True,
                         capture_output=True, text=True).stdout
    docs, title, verses = [], None, []
    for line in out.split("\n"):
        s = line.strip()
        if not s:
            continue
        m = re.match(r"^  (\d+) (.*)$", line)  # verses are indented, titles are not
        if m and title is not None:
            verses.append(m.group(2))
        else:
            if title is not None and verses:
                docs.append(title + "\n\n" + "\n".join(verses))
            title, verses = s, []
    if title is not None and verses:
        docs.append(title + "\n\n" + "\n".join(verses))
    if len(docs) != 1189:  # chapters in the KJV
        raise SystemExit(f"KJV: expected 1189 chapters, got {len(docs)}")
    return docs


def _wordnet_lemma(w):
    return w.replace("_", " ")


def wordnet_synsets():
    """Every WordNet synset as (pos, [lemmas], gloss) where gloss is the
    definition and its quoted examples as WordNet writes them."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(WORDNET_DIR, "data." + pos), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                n = int(fields[3], 16)
                lemmas = [re.sub(r"\(\w+\)$", "", fields[4 + 2 * i]) for i in range(n)]
                out.append((POS_NAMES[pos], [_wordnet_lemma(w) for w in lemmas],
                            gloss.strip(), int(fields[0])))
    return out


def wordnet_documents(per_doc=40):
    """WordNet glosses as dictionary-like text: "ocean (noun): a large body of
    water ...", grouped `per_doc` entries to a document in file order."""
    lines = []
    for pos, lemmas, gloss, _ in wordnet_synsets():
        names = ", ".join(lemmas[:3])
        lines.append(f"{names} ({pos}): {gloss}")
    return ["\n".join(lines[i:i + per_doc]) for i in range(0, len(lines), per_doc)]


def _lemma_frequencies():
    """{lemma: {pos: count}}: how often each lemma was seen in WordNet's
    sense-tagged corpus (cntlist.rev), summed over its senses."""
    pos_of = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}
    freq = {}
    with open(os.path.join(WORDNET_DIR, "cntlist.rev"), encoding="utf-8") as f:
        for line in f:
            key, _, count = line.split()
            lemma, _, rest = key.partition("%")
            per_pos = freq.setdefault(lemma, {})
            pos = pos_of[rest[0]]
            per_pos[pos] = per_pos.get(pos, 0) + int(count)
    return freq


class WordNetDictionary:
    """First-sense definitions of WordNet lemmas."""

    def __init__(self):
        self.gloss = {}  # (pos, offset) -> gloss
        self.first = {}  # (lemma, pos) -> offset of its most frequent sense
        for pos in ("noun", "verb", "adj", "adv"):
            with open(os.path.join(WORDNET_DIR, "data." + pos), encoding="utf-8") as f:
                for line in f:
                    if not line.startswith("  "):
                        head, _, gloss = line.partition(" | ")
                        self.gloss[(pos, int(head.split()[0]))] = gloss.strip()
            with open(os.path.join(WORDNET_DIR, "index." + pos), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("  "):
                        continue
                    fields = line.split()
                    p_cnt = int(fields[3])
                    self.first[(fields[0], pos)] = int(fields[6 + p_cnt])
        self.freq = _lemma_frequencies()

    def define(self, lemma):
        """(lemma, pos name, definition of the first sense) using the part of
        speech seen most often in the tagged corpus (else the first of noun,
        verb, adj, adv that has it); None if WordNet lacks a usable one."""
        per_pos = {p: c for p, c in self.freq.get(lemma, {}).items() if (lemma, p) in self.first}
        if per_pos:
            pos = max(per_pos.items(), key=lambda kv: (kv[1], kv[0]))[0]
        else:
            pos = next((p for p in ("noun", "verb", "adj", "adv") if (lemma, p) in self.first), None)
            if pos is None:
                return None
        gloss = self.gloss[(pos, self.first[(lemma, pos)])]
        definition = gloss.split(";")[0].split('"')[0].strip()
        return (lemma, POS_NAMES[pos], definition) if len(definition) >= 8 else None

    def tagged_ranking(self):
        """Single-word lowercase lemmas (3-12 letters) by how often they were
        seen in WordNet's sense-tagged corpus, most frequent first."""
        ranked = sorted((-sum(pp.values()), lemma) for lemma, pp in self.freq.items()
                        if re.fullmatch(r"[a-z]{3,12}", lemma))
        return [lemma for _, lemma in ranked]


def corpus_ranking(docs):
    """Lowercase words (3-12 letters) of our text documents, most frequent
    first (ties alphabetical)."""
    counts = {}
    for d in docs:
        for w in re.findall(r"(?<![A-Za-z'])[a-z]{3,12}(?![A-Za-z'])", d):
            counts[w] = counts.get(w, 0) + 1
    return [w for _, w in sorted((-c, w) for w, c in counts.items())]


# Everyday words people try on a small model, some rare in our text
# (strawberry, banana): always in the letter-counting and definition sets.
EXTRA_WORDS = """
apple banana cherry grape lemon mango orange peach pear plum strawberry blueberry raspberry
watermelon pineapple tomato potato carrot onion bread cheese butter coffee sugar chocolate
cat dog horse cow sheep goat pig chicken duck lion tiger elephant giraffe zebra monkey rabbit
mouse snake eagle owl penguin dolphin whale shark bear wolf fox frog turtle butterfly spider
computer telephone book table chair house car bicycle train airplane ship window door pencil
paper guitar piano music letter alphabet language program science history school teacher
ocean river mountain forest desert island sun moon star planet cloud rain snow tree flower
garden city country family friend mother father sister brother baby doctor kitchen winter
summer spring autumn morning evening night happy beautiful necessary parallel committee
bookkeeper mississippi occurrence assessment balloon coffee success accommodate embarrass
""".split()


def common_words(docs, n_tagged, n_corpus, extra=EXTRA_WORDS):
    """[(word, pos, definition)]: the n_tagged most frequent words of
    WordNet's tagged corpus, then the n_corpus most frequent words of our
    text, then `extra`; each once, only words WordNet can define."""
    wn = WordNetDictionary()
    out, seen = [], set()
    for ranking, n in ((wn.tagged_ranking(), n_tagged), (corpus_ranking(docs), n_corpus),
                       (list(extra), len(extra))):
        taken = 0
        for w in ranking:
            if taken == n:
                break
            if w in seen:
                continue
            entry = wn.define(w)
            if entry is None:
                continue
            seen.add(w)
            out.append(entry)
            taken += 1
    return out


def _clean_overstrike(s):
    # nroff-style bold/underline: "X\bX" and "_\bX" both mean X
    return re.sub(r".\x08", "", s)


def fortune_documents():
    """Each fortune cookie of fortunes-min as one document."""
    docs = []
    for name in FORTUNE_FILES:
        with open(os.path.join(FORTUNE_DIR, name), encoding="utf-8", errors="replace") as f:
            text = _clean_overstrike(f.read())
        for cookie in text.split("\n%\n"):
            cookie = cookie.strip("%\n")
            if cookie.strip():
                docs.append(cookie.expandtabs(4))
    return docs


def all_documents():
    """[(source_name, [documents])] in a fixed order."""
    check_licences()
    return [("kjv", kjv_chapters()), ("wordnet", wordnet_documents()),
            ("fortunes", fortune_documents())]


if __name__ == "__main__":
    for name, docs in all_documents():
        n = sum(len(d) for d in docs)
        print(f"{name}: {len(docs)} documents, {n} chars; first: {docs[0][:80]!r}")
    words = common_words([d for _, ds in all_documents() for d in ds], 3000, 3000)
    print(len(words), words[:3], words[-3:])
