#!/usr/bin/env python3
"""test_bench_table.py: tools/device/bench_table.py, the device scripts'
summary table, on runs written by hand with the expected cells worked out by
hand: rounds of one label give their best and range, other labels their
ratio to the first, the best PyTorch mode its ratio (read from
bench_pytorch.py's output or its --json-out file alike); a test missing from
a run shows "-"; the JSON line says the same; a log with no JSON line or a
missing file is reported, not a crash.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(ROOT, "tools", "device", "bench_table.py")


def bench_json(rows):
    """A `nanochat bench --json` line for rows of (test, tok/s, % floor)."""
    return json.dumps({"device": "GPU X", "backend": "cuda", "model": "random d34", "results": [
        {"test": t, "tok_s": v, "ms": 1e3 / v, "gb_s": 0, "floor_pct": f, "tflops": 0} for t, v, f in rows]})


def main():
    fails = []
    with tempfile.TemporaryDirectory() as d:
        def write(name, text):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(text)
            return path

        new1 = write("new1.log", "model loading...\n" + bench_json([("decode ctx 1024", 460.0, 68.0),
                                                                   ("batch 8 ctx 512", 2800.0, 60.0)]) + "\n")
        new2 = write("new2.log", bench_json([("decode ctx 1024", 470.0, 69.5)]) + "\n")
        base = write("base.log", bench_json([("decode ctx 1024", 400.0, 59.0),
                                             ("batch 8 ctx 512", 3500.0, 75.0)]) + "\n")
        torch_doc = json.dumps({"device": "GPU X", "torch": "2.11.0", "best": {
            "decode ctx 1024": {"mode": "compile", "tok_s": 385.0, "ms": 2.6},
            "prefill 2048": {"mode": "max-autotune", "tok_s": 130000.0, "ms": 15.7}}})
        # bench_pytorch.py's output (a JSON line among others) and its --json-out file
        torch_log = write("torch.log", "eager ...\nJSON " + torch_doc + "\n")
        torch_json = write("torch.json", torch_doc)
        tables = []
        for torch in torch_log, torch_json:
            out = subprocess.run([sys.executable, TOOL, "--pytorch", torch, "--run", "new", new1,
                                  "--run", "new", new2, "--run", "base", base],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                fails.append(f"exit {out.returncode}: {out.stderr}")
            tables.append(out.stdout)
        if tables[0] != tables[1]:
            fails.append(f"the --json-out file gives another table:\n{tables[1]}")
        lines = tables[0].splitlines()
        cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
                 for ln in lines if ln.startswith("| ") and not ln.startswith("| test")}
        expect = {
            # best of 460 and 470; base 400 / 470 = 0.85; floor of the best run; 470 / 385 = 1.22
            "decode ctx 1024": ["470.0 (460.0-470.0)", "400.0 0.85x", "69.5%", "385.0 (compile)", "1.22x"],
            # one round; base 3500 / 2800 = 1.25; no PyTorch result
            "batch 8 ctx 512": ["2,800", "3,500 1.25x", "60.0%", "-", "-"],
            # PyTorch only
            "prefill 2048": ["-", "-", "-", "130,000 (max-autotune)", "-"],
        }
        for test, want in expect.items():
            if cells.get(test) != want:
                fails.append(f"{test}: got {cells.get(test)}, want {want}")
        table = json.loads(next((ln[6:] for ln in lines if ln.startswith("TABLE ")), "{}") or "{}")
        rows = {r["test"]: r for r in table.get("rows", [])}
        if rows.get("decode ctx 1024", {}).get("ratio") != 1.221 or rows.get("batch 8 ctx 512", {}).get("base") != 3500:
            fails.append(f"TABLE line: {rows}")

        empty = write("empty.log", "nanochat bench: out of memory\n")
        out = subprocess.run([sys.executable, TOOL, "--run", "new", empty, "--run", "new", os.path.join(d, "none")],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or "no `nanochat bench --json` line" not in out.stderr:
            fails.append(f"a log without results: exit {out.returncode}, stderr {out.stderr!r}")

    for f in fails:
        print("FAIL:", f)
    print(f"test_bench_table: {len(expect) + 3} checks, {len(fails)} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
