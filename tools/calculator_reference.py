"""calculator_reference.py: nanochat's calculator tool in Python, the
reference our C calculator (src/tool/calculator.c) is compared with.

`use_calculator` follows nanochat's engine.py (docs/model.md, Calculator): drop
commas; pure arithmetic characters -> refuse "**", else eval; otherwise the
restricted `.count(` string path; eval with no builtins under a 3 s alarm,
any exception -> None. `calculator_result` adds what the engine does next,
str(result) (which raises past 4300 digits in Python >= 3.11 -> None).

Also the generator of the expression table shared by
tools/gen_calculator_cases.py (committed table) and
tests/py/test_calculator_eval.py (fresh random table every run).
This file evaluates with Python's eval: it is test tooling, never shipped.
"""
import random
import signal
import struct
import warnings

ARITH_CHARS = set("0123456789*+-/.() ")
STRING_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"()._ ")
DANGEROUS = ['__', 'import', 'exec', 'eval', 'compile', 'open', 'file', 'input', 'raw_input',
             'globals', 'locals', 'vars', 'dir', 'getattr', 'setattr', 'delattr', 'hasattr']


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def eval_with_timeout(formula, max_time=3):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max_time)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return eval(formula, {"__builtins__": {}}, {})
    except BaseException:  # incl. RecursionError, MemoryError, the alarm
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def use_calculator(expr):
    expr = expr.replace(",", "")
    if all(x in ARITH_CHARS for x in expr):
        if "**" in expr:
            return None
        return eval_with_timeout(expr)
    if not all(x in STRING_CHARS for x in expr):
        return None
    lower = expr.lower()
    if any(p in lower for p in DANGEROUS):
        return None
    if '.count(' not in expr:
        return None
    return eval_with_timeout(expr)


def calculator_result(expr):
    """str(use_calculator(expr)), or None where nanochat forces nothing."""
    r = use_calculator(expr)
    if r is None:
        return None
    try:
        return str(r)
    except ValueError:  # int too large to print (4300-digit limit)
        return None


# ==== expression generators (all inside what the C calculator implements) ====

def _int_lit(rng):
    k = rng.random()
    if k < 0.5:
        return str(rng.randint(0, 100))
    if k < 0.8:
        return str(rng.randint(0, 10 ** rng.randint(3, 20)))
    if k < 0.9:
        return str(rng.randint(1, 10 ** rng.randint(20, 120)))
    return rng.choice(["0", "00", "000", "1", "2", "7", "10", "9007199254740993", "18446744073709551617"])


def _float_lit(rng):
    a = str(rng.randint(0, 10 ** rng.randint(0, 8)))
    b = str(rng.randint(0, 10 ** rng.randint(0, 8)))
    return rng.choice([a + "." + b, "." + b, a + ".", "0." + b, a + "." + "0" * rng.randint(0, 3) + b])


def _commas(s, rng):
    """Insert thousands separators into digit runs sometimes (they are dropped)."""
    if rng.random() < 0.85 or not s.isdigit() or len(s) < 4:
        return s
    out = []
    for i, ch in enumerate(s):
        if i and (len(s) - i) % 3 == 0:
            out.append(",")
        out.append(ch)
    return "".join(out)


def arith_expr(rng, depth=0):
    k = rng.random()
    if depth > 4 or k < 0.3:
        lit = _int_lit(rng) if rng.random() < 0.7 else _float_lit(rng)
        return _commas(lit, rng)
    if k < 0.4:
        return rng.choice(["-", "+", "- ", "--"]) + arith_expr(rng, depth + 1)
    if k < 0.5:
        return "(" + arith_expr(rng, depth + 1) + ")"
    op = rng.choice(["+", "-", "*", "/", "//", "*", "/"])
    sp = rng.choice(["", " ", ""])
    return arith_expr(rng, depth + 1) + sp + op + sp + arith_expr(rng, depth + 1)


_WORDS = ["strawberry", "banana", "mississippi", "hello world", "aaaa", "abcabc", "r", "", "xyz",
          "Programming", "the quick brown fox", "a.b.c", "x_y_z", "1122333", "(paren)"]


def _str_lit(rng, text):
    q = rng.choice(["'", '"', "'", "'''", '"""'])
    if q in ("'", "'''") and "'" in text:
        q = '"'
    prefix = rng.choice(["", "", "", "r", "u", "f", "R", "F", "rf"])
    return prefix + q + text + q


def string_expr(rng):
    text = rng.choice(_WORDS)
    if rng.random() < 0.5:
        sub = rng.choice([text[i:j] for i in range(len(text) + 1) for j in range(i, len(text) + 1)] or [""])
    else:
        sub = rng.choice(["a", "r", "s", "ss", "an", "z", "", " ", "o"])
    s = _str_lit(rng, text)
    if rng.random() < 0.15:
        s = s + rng.choice(["", " "]) + _str_lit(rng, rng.choice(_WORDS))
    if rng.random() < 0.15:
        s = "(" + s + ")"
    e = s + ".count(" + _str_lit(rng, sub) + ")"
    if rng.random() < 0.1:
        e = "(" + e + ")"
    if rng.random() < 0.1:
        e = " " + e + " "
    return e


def soup_expr(rng):
    """Random character soup: mostly syntax errors, some surprising valid
    Python (".5", "...", "()", "1--1"), to compare how both sides parse."""
    if rng.random() < 0.7:
        alphabet = "0123456789*+-/.() " + "0()./ "
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
    pieces = ["'ab'", '"b"', "'", '"', "(", ")", ".count(", "count", " ", "b", "r", "f", "u", "x",
              "''", "'" * 3, "a", ".", "_", "1"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))


def random_double_bits(rng):
    k = rng.random()
    if k < 0.4:
        x = rng.uniform(-1e6, 1e6)
    elif k < 0.6:
        x = rng.random() * 10 ** rng.randint(-30, 30)
    elif k < 0.7:
        x = float(rng.randint(-10 ** 17, 10 ** 17))
    elif k < 0.8:
        x = 2.0 ** rng.randint(-1074, 1023) * rng.choice([1, -1])
    else:
        return rng.getrandbits(64)
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def float_repr(bits):
    return repr(struct.unpack("<d", struct.pack("<Q", bits))[0])


# ==== hand-written cases: edge semantics, refusals, injection attempts ====

FIXED_CASES = [
    "1+1", "2*3", "7/2", "1/3", "10/1", "2/3*3", "0.1+0.2", "1/8", "3/1.5", "1.0*3",
    "37*41", "1,234*5", "1,000,000/3", "12,345,678,901,234,567,890*98,765,432,109,876,543,210",
    "7//2", "-7//2", "7//-2", "-7.5//2", "7//-2.5", "7.0//0.5", "1e3", "-0", "-0.0", "0.0*-1",
    "5.", ".5", "00", "00.5", "01.", "0001.5", "01", "007", "1 .5", "1.5.5", "1..5",
    "2**3", "2 ** 3", "2* *3", "2**-1", "1/0", "1//0", "1.0/0", "0.0/0.0", "5//0.0", "0/-5",
    "()", "(())", "()+()", "()*3", "3*()", "()*-5", "-()", "+()", "()//1", "() + 1",
    "()*99999999999999999999", "...", "(...)", "...+1", "1...", "....", "(1)(2)", "()()", "2(3)",
    "", " ", "  1  ", "(", ")", "(1", "1)", "1 2", "+", "1+", "*2", "--1", "- - 1", "+-+-1", "1--1",
    "3*-2", "(((((1+2)))))", "100000000000000000.0", "1e16", "0.0001", "0.00001", "1/3*1e10",
    "10000000000000000.0", "1234567890123456.0", "123456789012345678.0", "0.1*3", "2/7",
    "9007199254740993/1", "18446744073709551617/3", "1" + "0" * 400 + "/3", "1" + "0" * 310 + "/1",
    "1" + "0" * 309 + ".0", "1" + "0" * 309 + ".0-1" + "0" * 309 + ".0", "1" + "0" * 309 + ".0*0",
    "1" + "0" * 400 + "*1.0", "1" * 4300, "1" * 4301, "0" * 4400, "-" + "1" * 4300, "1" * 4301 + ".0",
    "1" * 3000 + "*" + "1" * 2000, "(" + "1" * 3000 + "*" + "1" * 2000 + ")//" + "1" * 2000,
    "1" * 30 + "//" + "7" * 15, "-" + "1" * 30 + "//" + "7" * 15, "1" * 30 + "//-" + "7" * 15,
    "3" * 25 + "/" + "7" * 25, "1/" + "3" * 400, "-1/" + "3" * 400, "2" * 300 + "/" + "3" * 300,
    "(" * 200 + "1" + ")" * 200, "(" * 201 + "1" + ")" * 201, "-" * 500 + "1", "1" + "+1" * 900,
    "'strawberry'.count('r')", "\"strawberry\".count(\"r\")", "'abc'.count('')", "''.count('')",
    "'aaaa'.count('aa')", "'mississippi'.count('ss')", "'Hello'.count('h')", "b'abc'.count(b'a')",
    "b'abc'.count('a')", "'abc'.count(b'a')", "'''abc'''.count('a')", "('a' 'b').count('a')",
    "'a' 'b'.count('b')", "f'aa'.count('a')", "rb'aa'.count(b'a')", "Rb'aa'.count(B'a')",
    "ur'a'.count('a')", "x'a'.count('a')", "'abc'.count('a' 'b')", "'a,b,c'.count(',')",
    "'abc' .count('a')", "'abc'. count('a')", "'abc'.count ('a')", "'abc'.count()", "'abc'.count('a', 1)",
    "'abc'.count('a')(1)", "('abc'.count('a'))", "'a'.count('a').count('a')", "().count('a')",
    "'abc'.count", "'abc'.find('a')", "'directory'.count('r')", "'Import'.count('i')",
    "'a__b'.count('_')", "'open'.count('o')", "'filex'.count('x')", "__import__('os').system('ls')",
    "exec('print(1)')", "eval('1+1')", "open('/etc/passwd').read()", "globals()", "vars()",
    "().__class__.__bases__[0].__subclasses__()", "[x for x in ()]", "lambda: 1", "1; 2",
    "1\n+1", "1\t+1", "2 % 3", "2 ^ 3", "2 & 3", "~1", "1 < 2", "a.count('a')", "'a'.count('a'",
    "'abc.count('", "b'a.count(\"'", "b'it.count(s'", "'unterminated.count(", "'x'.count('x') ", " 'x'.count('x')", "\x00", "1\x00",
    "'caf\u00e9'.count('e')", "12\u00b73", "\u0661+1", "3\u00d74",
]
