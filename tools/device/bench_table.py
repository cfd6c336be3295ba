#!/usr/bin/env python3
"""bench_table.py: one table from several `nanochat bench --json` runs and,
optionally, tools/bench_pytorch.py's results, for the device scripts' summary.

    bench_table.py [--pytorch FILE] --run LABEL LOG [--run LABEL LOG ...]

Each LOG holds a run's output; its JSON line (`nanochat bench --json`) is
found wherever it is in the log. Runs with the same LABEL are rounds of one
build or setting: the table shows their best tok/s (the least disturbed
run), with the range when there are several. The first label is the
reference: every other label's column also shows its ratio to it, and
"% floor" is the first label's. With --pytorch (bench_pytorch.py's
--json-out file, or its output with the "JSON" line), the best PyTorch mode
of each test and the first label's ratio to it follow. Tests missing from a
run show "-". The same table is written as a JSON line ("TABLE {...}")
last, for scripts.
"""
import argparse
import json
import os
import sys


def json_line(path, prefix):
    """The last line of the file at `path` that starts with `prefix` (kept as
    part of the JSON when it is "{"), parsed; None if there is none."""
    found = None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    found = line[len(prefix):] if prefix != "{" else line
    except OSError as e:
        print(f"bench_table: {e}", file=sys.stderr)
        return None
    if found is None:
        return None
    try:
        return json.loads(found)
    except json.JSONDecodeError as e:
        print(f"bench_table: {path}: bad JSON ({e})", file=sys.stderr)
        return None


def fmt(v):
    return f"{v:,.0f}" if v >= 1000 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pytorch", help="tools/bench_pytorch.py's output or its --json-out file")
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("LABEL", "LOG"),
                    help="a `nanochat bench --json` run; several with one label are rounds")
    args = ap.parse_args()

    labels, runs, device = [], {}, None   # runs: label -> [results dict test -> row]
    for label, path in args.run:
        if label not in runs:
            labels.append(label)
            runs[label] = []
        doc = json_line(path, "{")
        if doc is None:
            print(f"bench_table: no `nanochat bench --json` line in {path}", file=sys.stderr)
            continue
        device = device or doc.get("device")
        runs[label].append({r["test"]: r for r in doc["results"]})
    torch = None
    if args.pytorch and not os.path.isfile(args.pytorch):
        print(f"bench_table: no file {args.pytorch}", file=sys.stderr)
    elif args.pytorch:   # its --json-out file, or its output with the JSON line
        torch = json_line(args.pytorch, "{") or json_line(args.pytorch, "JSON ")
    best_pt = (torch or {}).get("best", {})

    tests = []
    for label in labels:
        for run in runs[label]:
            tests += [t for t in run if t not in tests]
    tests += [t for t in best_pt if t not in tests]

    head = ["test"] + labels + ["% floor"] + (["best PyTorch (mode)", "ratio"] if args.pytorch else [])
    rows, table = [], []
    for test in tests:
        entry = {"test": test}
        ref = None
        cells = [test]
        for i, label in enumerate(labels):
            vals = [run[test]["tok_s"] for run in runs[label] if test in run]
            if not vals:
                cells.append("-")
                continue
            best = max(vals)
            entry[label] = best
            cell = fmt(best)
            if len(vals) > 1:
                cell += f" ({fmt(min(vals))}-{fmt(best)})"
            if i == 0:
                ref = best
            elif ref:
                cell += f" {best / ref:.2f}x"
            cells.append(cell)
        first = [run[test] for run in runs[labels[0]] if test in run]
        if first:
            r = max(first, key=lambda r: r["tok_s"])
            cells.append(f"{r['tflops']:.0f} TFLOP/s" if r.get("tflops", 0) > 0 else f"{r['floor_pct']:.1f}%")
        else:
            cells.append("-")
        if args.pytorch:
            pt = best_pt.get(test)
            if pt:
                entry["pytorch"] = pt
                cells.append(f"{fmt(pt['tok_s'])} ({pt['mode']})")
                cells.append(f"{ref / pt['tok_s']:.2f}x" if ref else "-")
                if ref:
                    entry["ratio"] = round(ref / pt["tok_s"], 3)
            else:
                cells += ["-", "-"]
        rows.append(cells)
        table.append(entry)

    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    print(f"device: {device}" + (f"; PyTorch: {torch.get('device')}, torch {torch.get('torch')}" if torch else ""))
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if args.pytorch and torch is None:
        print(f"(no PyTorch results in {args.pytorch})")
    print("TABLE " + json.dumps({"device": device, "labels": labels, "rows": table}))


if __name__ == "__main__":
    main()
