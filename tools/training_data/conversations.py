"""conversations.py: synthetic chat conversations that teach picochat its few
skills, in nanochat's conversation format.

A conversation is {"messages": [{"role": "user", "content": str},
{"role": "assistant", "content": str | [parts]}]}, where an assistant's
parts are {"type": "text" | "python" | "python_output", "text": str}: the
same structure nanochat's SFT tasks (GSM8K, SpellingBee) hand to
tokenizer.render_conversation. Tool outputs are computed here with Python
itself, so the calculator result string is exactly Python's str() of the
evaluated expression, as the engine prints it (docs/model.md, Calculator).

Skills:
  arithmetic   "What is 123 * 45?" -> <python>123*45</python><output>5535</output>
               "123 * 45 = 5535."  (+ - * / on 1-4 digit numbers, some with 3 operands)
  letters      "How many r's are in strawberry?" -> <python>'strawberry'.count('r')...
  definitions  "What does ocean mean?" -> a WordNet first-sense gloss
  greetings, identity ("picochat", the default model of nanochat-c), thanks,
  and a polite refusal for what it cannot do.

Held-out problems (for the end-to-end test) are drawn first from their own
seeded generator; the training generator never emits them (by key), so the
test measures problems the model never saw.
"""

import random

NAME = "picochat"

# ============================================================ arithmetic

OPS = {
    "+": {"sym": ["+"], "word": ["plus"], "verb": "add"},
    "-": {"sym": ["-"], "word": ["minus"], "verb": "subtract"},
    "*": {"sym": ["*", "x", "×"], "word": ["times", "multiplied by"], "verb": "multiply"},
    "/": {"sym": ["/", "÷"], "word": ["divided by", "over"], "verb": "divide"},
}


def rand_number(rng):
    digits = rng.choice((1, 1, 2, 2, 3, 3, 4, 4))
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(lo, 10 ** digits - 1)


def calc(expr):
    """Python's own value of a +-*/ expression of integers, as str()."""
    return str(eval(expr, {"__builtins__": {}}, {}))  # our own generated text only


def arithmetic_key(a, op, b):
    """The identity of a problem, shared by both orders when op commutes."""
    if op in "+*":
        a, b = min(a, b), max(a, b)
    return (a, op, b)


def arithmetic_question(rng, a, op, b):
    o = OPS[op]
    sym = rng.choice(o["sym"]) if rng.random() < 0.8 else o["sym"][0]
    word = rng.choice(o["word"])
    forms = [
        f"What is {a} {sym} {b}?",
        f"What is {a} {sym} {b}?",
        f"What's {a} {sym} {b}?",
        f"what is {a}{sym}{b}",
        f"Calculate {a} {sym} {b}.",
        f"Compute {a} {sym} {b}",
        f"{a} {sym} {b} = ?",
        f"{a} {sym} {b}",
        f"What is {a} {word} {b}?",
        f"How much is {a} {word} {b}?",
        f"Can you tell me what {a} {word} {b} is?",
    ]
    if op == "+":
        forms += [f"What is the sum of {a} and {b}?", f"Add {a} and {b}."]
    elif op == "-":
        forms += [f"Subtract {b} from {a}.", f"What is {a} take away {b}?"]
    elif op == "*":
        forms += [f"What is the product of {a} and {b}?", f"Multiply {a} by {b}."]
    else:
        forms += [f"Divide {a} by {b}.", f"What is {a} divided by {b}?"]
    return rng.choice(forms)


def arithmetic_conversation(question, expr, shown):
    """`shown` is how the expression is written in the final sentence."""
    result = calc(expr)
    return {"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [
            {"type": "python", "text": expr},
            {"type": "python_output", "text": result},
            {"type": "text", "text": f"{shown} = {result}."},
        ]},
    ]}


def spaced(expr):
    return " ".join(expr.replace("+", " + ").replace("-", " - ").replace("*", " * ")
                    .replace("/", " / ").split()).replace("( ", "(").replace(" )", ")")


def two_operand_problem(rng):
    op = rng.choice("+-*/")
    a, b = rand_number(rng), rand_number(rng)
    if op == "/" and b == 0:
        b = rng.randint(1, 99)
    return a, op, b


def arithmetic_example(rng, excluded):
    if rng.random() < 0.1:  # three operands, with or without parentheses
        a, b, c = rand_number(rng) % 1000, rand_number(rng) % 1000, rng.randint(1, 99)
        o1, o2 = rng.choice("+-*"), rng.choice("+-*/")
        expr = f"({a}{o1}{b}){o2}{c}" if rng.random() < 0.5 else f"{a}{o1}{b}{o2}{c}"
        shown = spaced(expr)
        q = rng.choice([f"What is {shown}?", f"Calculate {shown}.", f"{shown} = ?"])
        return arithmetic_conversation(q, expr, shown)
    while True:
        a, op, b = two_operand_problem(rng)
        if arithmetic_key(a, op, b) not in excluded:
            break
    return arithmetic_conversation(arithmetic_question(rng, a, op, b), f"{a}{op}{b}", f"{a} {op} {b}")


# ============================================================ letter counting

def letter_question(rng, word, letter):
    forms = [
        f"How many {letter}'s are in {word}?",
        f"How many {letter}'s are in the word {word}?",
        f"How many {letter}s are in {word}?",
        f"How many times does the letter {letter} appear in {word}?",
        f"How many times does '{letter}' occur in '{word}'?",
        f"Count the {letter}'s in {word}.",
        f"Count the letter {letter} in the word {word}.",
        f"In the word {word}, how many {letter}'s are there?",
        f"how many {letter} in {word}",
        f"How often does the letter {letter} appear in \"{word}\"?",
    ]
    return rng.choice(forms)


def letter_conversation(question, word, letter):
    n = word.count(letter)
    answer = f"There is 1 {letter} in {word}." if n == 1 else f"There are {n} {letter}'s in {word}."
    return {"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [
            {"type": "python", "text": f"'{word}'.count('{letter}')"},
            {"type": "python_output", "text": str(n)},
            {"type": "text", "text": answer},
        ]},
    ]}


def letter_example(rng, words, excluded):
    while True:
        word = rng.choice(words)
        # mostly letters of the word, sometimes any letter (count 0)
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        if (word, letter) not in excluded:
            return letter_conversation(letter_question(rng, word, letter), word, letter)


# ============================================================ definitions

def definition_example(rng, entry):
    word, pos, definition = entry
    forms = [f"What does {word} mean?", f"Define {word}.", f"What is the meaning of {word}?",
             f"What is the definition of {word}?", f"define {word}", f"Meaning of {word}?",
             f"What does the word {word} mean?"]
    if pos == "noun":
        forms.append(f"What is {'an' if word[0] in 'aeiou' else 'a'} {word}?")
    answer = f"{word.capitalize()} ({pos}): {definition}."
    return {"messages": [{"role": "user", "content": rng.choice(forms)},
                         {"role": "assistant", "content": answer}]}


# ============================================================ small talk

IDENTITY = (f"I am {NAME}, a tiny demo model and the default model of nanochat-c, a C "
            "engine for nanochat models. I was trained from scratch on the King James "
            "Bible, WordNet and synthetic conversations. I can do arithmetic with a "
            "calculator, count letters in words and define common words.")
SKILLS = ("I can do arithmetic with a calculator (try: What is 123 * 45?), count letters "
          "in a word (try: How many r's are in strawberry?) and define common words "
          "(try: What does ocean mean?).")
REFUSAL = (f"Sorry, I can't help with that: I am {NAME}, a very small model. " + SKILLS)

SMALL_TALK = [
    (["Hello", "Hello!", "Hi", "Hi!", "hi", "hello", "Hey", "Hey there!", "Good morning!",
      "Good evening", "Hi there", "Greetings!", "Howdy!", "Good afternoon."],
     "Hello! I am picochat. How can I help you today?"),
    (["How are you?", "How are you doing?", "how are you", "How's it going?",
      "Are you well?"],
     "I am doing well, thank you! How can I help you?"),
    (["Who are you?", "What is your name?", "What's your name?", "What are you?",
      "Introduce yourself.", "who are you", "Tell me about yourself.", "Are you a robot?",
      "Which model are you?", "Who made you?", "Who created you?"],
     IDENTITY),
    (["What can you do?", "What can you do for me?", "Help", "help", "What are you good at?",
      "How can you help me?", "What should I ask you?"],
     SKILLS),
    (["Thank you!", "Thanks", "thanks!", "Thank you very much.", "Great, thanks!",
      "That was helpful."],
     "You are welcome! Is there anything else I can help with?"),
    (["Bye", "Goodbye!", "See you later.", "bye", "Good night!"],
     "Goodbye! Have a nice day."),
]

TOPICS = ["the sea", "love", "the moon", "my cat", "winter", "history", "music", "Paris",
          "the war", "computers", "friendship", "a dragon", "the stars", "money", "coffee"]
REFUSED = [
    "Write a poem about {t}.", "Tell me a story about {t}.", "Write an essay on {t}.",
    "What is the capital of France?", "Who won the world cup?", "What is the weather today?",
    "Translate hello into French.", "Write a program in Python.", "What time is it?",
    "Can you browse the internet?", "What is the population of China?",
    "Explain quantum physics.", "Sing me a song about {t}.", "What do you think about {t}?",
    "Who is the president?", "Give me a recipe for {t}.", "Tell me a joke about {t}.",
]


SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are picochat.", "Answer briefly.",
                  "You are a friendly assistant. Be concise."]


def small_talk_example(rng):
    qs, answer = rng.choice(SMALL_TALK)
    return {"messages": [{"role": "user", "content": rng.choice(qs)},
                         {"role": "assistant", "content": answer}]}


def refusal_example(rng):
    q = rng.choice(REFUSED).format(t=rng.choice(TOPICS))
    return {"messages": [{"role": "user", "content": q},
                         {"role": "assistant", "content": REFUSAL}]}


# ============================================================ held-out sets

def heldout_problems(words, seed=20260101, n=12):
    """The problems the end-to-end test asks and training never shows:
    arithmetic [(a, op, b)] (ops in turn, 1-4 digit numbers) plus the
    README's 123 * 45, and letter counting [(word, letter)] (words of the
    training vocabulary, letters that occur in them)."""
    rng = random.Random(seed)
    arith = [(123, "*", 45)]
    for i in range(n):
        op = "+-*/"[i % 4]
        a = rng.randint(10 ** (1 + i % 3), 10 ** (2 + i % 3) - 1)
        b = rng.randint(2, 10 ** (1 + (i // 4) % 3) - 1)
        arith.append((a, op, b))
    letters = [("strawberry", "r")]
    long_words = [w for w in words if len(w) >= 6]
    while len(letters) < n + 1:
        w = rng.choice(long_words)
        letter = rng.choice(w)
        if (w, letter) not in letters:
            letters.append((w, letter))
    return arith, letters


# ============================================================ the mix

def multi_turn(rng, makers):
    msgs = []
    for _ in range(rng.choice((2, 2, 3))):
        msgs += rng.choice(makers)(rng)["messages"]
    return {"messages": msgs}


def generate(seed, counts, common_words, letter_words, heldout):
    """Deterministic list of training conversations. `counts` gives how many
    of each kind: arithmetic, letters, definitions, small_talk, refusal,
    multi_turn. `common_words` is [(word, pos, definition)]."""
    arith_held, letters_held = heldout
    excluded_arith = {arithmetic_key(*p) for p in arith_held}
    excluded_letters = set(letters_held)
    rng = random.Random(seed)
    makers = {
        "arithmetic": lambda r: arithmetic_example(r, excluded_arith),
        "letters": lambda r: letter_example(r, letter_words, excluded_letters),
        "definitions": lambda r: definition_example(r, r.choice(common_words)),
        "small_talk": small_talk_example,
        "refusal": refusal_example,
    }
    out = []
    for kind, maker in makers.items():
        out += [maker(rng) for _ in range(counts[kind])]
    single = list(makers.values())
    out += [multi_turn(rng, single) for _ in range(counts["multi_turn"])]
    for conv in out:  # a few with a system prompt, merged into the first user turn as nanochat does
        if rng.random() < 0.03:
            first = conv["messages"][0]
            first["content"] = rng.choice(SYSTEM_PROMPTS) + "\n\n" + first["content"]
    rng.shuffle(out)
    return out
