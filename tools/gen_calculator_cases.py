#!/usr/bin/env python3
"""gen_calculator_cases.py: writes tests/data/calculator/cases.tsv, the
committed table build/tests/test_calculator checks: hex(expression) TAB
Python's str(use_calculator(expression)) (or NONE), for the hand-written
edge cases of tools/calculator_reference.py plus a fixed-seed random set.

Usage: python3 tools/gen_calculator_cases.py [out.tsv]
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calculator_reference as ref  # noqa: E402


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "calculator", "cases.tsv")
    rng = random.Random(20240601)
    exprs = list(ref.FIXED_CASES)
    exprs += [ref.arith_expr(rng) for _ in range(700)]
    exprs += [ref.string_expr(rng) for _ in range(250)]
    exprs += [ref.soup_expr(rng) for _ in range(400)]
    with open(out, "w") as f:
        for e in exprs:
            r = ref.calculator_result(e)
            f.write(e.encode("utf-8").hex() + "\t" + ("NONE" if r is None else r) + "\n")
    print(f"wrote {len(exprs)} cases to {out}")


if __name__ == "__main__":
    main()
