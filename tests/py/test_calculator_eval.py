#!/usr/bin/env python3
"""test_calculator_eval.py: the C calculator tool (src/tool/calculator.c) against
Python itself, on a fresh random table every run.

Python's answer comes from tools/calculator_reference.py (nanochat's
use_calculator logic: eval with no builtins under a timeout, then str()).
Ours comes from build/tests/test_calculator --stdin. Also compares our
Python-style float printing (repr) with Python's repr on random doubles.
Set CALC_SEED to replay a run; the seed is printed.
"""
import os
import random
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import calculator_reference as ref  # noqa: E402


def main():
    build = os.environ.get("NC_BUILD", os.path.join(ROOT, "build"))
    driver = os.path.join(build, "tests", "test_calculator")
    if not os.access(driver, os.X_OK):
        print(f"missing {driver}: build it first (make tests)")
        return 1
    seed = int(os.environ.get("CALC_SEED", time.time_ns() % 1000000007))
    print(f"CALC_SEED={seed}")
    rng = random.Random(seed)
    exprs = list(ref.FIXED_CASES)
    exprs += [ref.arith_expr(rng) for _ in range(4000)]
    exprs += [ref.string_expr(rng) for _ in range(1000)]
    exprs += [ref.soup_expr(rng) for _ in range(4000)]
    doubles = [ref.random_double_bits(rng) for _ in range(20000)]
    doubles += [0x0000000000000001, 0x8000000000000000, 0x7ff0000000000000, 0xfff0000000000000,
                0x7ff8000000000000, 0x7fefffffffffffff, 0x0010000000000000, 0x000fffffffffffff,
                0x4340000000000000, 0x3ff0000000000000]

    lines = ["E " + e.encode("utf-8").hex() for e in exprs] + ["F %016x" % b for b in doubles]
    t0 = time.time()
    proc = subprocess.run([driver, "--stdin"], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, timeout=120)
    took = time.time() - t0
    if proc.returncode != 0:
        print("driver failed:", proc.stderr)
        return 1
    got = proc.stdout.split("\n")[:-1]
    if len(got) != len(lines):
        print(f"driver answered {len(got)} lines for {len(lines)}")
        return 1

    bad = 0
    n_results = 0
    for e, g in zip(exprs, got[:len(exprs)]):
        want = ref.calculator_result(e)
        want = "NONE" if want is None else want
        n_results += want != "NONE"
        if g != want:
            bad += 1
            if bad <= 20:
                print(f"MISMATCH {e[:80]!r}: C {g[:60]!r} Python {want[:60]!r}")
    for b, g in zip(doubles, got[len(exprs):]):
        want = ref.float_repr(b)
        if g != want:
            bad += 1
            if bad <= 40:
                print(f"MISMATCH repr bits {b:016x}: C {g!r} Python {want!r}")
    print(f"{len(exprs)} expressions ({n_results} with a result), {len(doubles)} doubles, "
          f"C driver {took:.2f}s, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
