#!/usr/bin/env python3
"""spec_bench.py: decode speed with and without speculative decoding, through
the real CLI (docs/speculative.md, Measurements).

    python3 tools/spec_bench.py [--bin build/nanochat] [--rounds 5] [--device cpu]
                                [--model models/picochat] [--draft PATH] [--threads N]

Scenarios, each run with --no-spec and with the given modes (default:
--spec, prompt lookup priced by the engine, the CPU's default and on a GPU
only when asked for; --spec-always; and with --draft, that draft model), in
interleaved rounds (the machine's noise hits every mode alike), greedy:
  nothing  a random model (the chat model's shape, a 65,536-token vocabulary)
           continuing three ids: its tokens almost never repeat, so prompt
           lookup has nothing to propose (what it costs when it cannot help)
  chat     the golden single-turn questions of tests/data/picochat, each in
           a fresh conversation (/clear between them)
  quote    the same questions asked twice in a row: the second reply repeats
           the first, which is in the prompt (a reply quoting the context)
Reports per scenario and mode the decode tokens per second (the sum of
tokens over the sum of decode time): the best round (noise only ever slows
a run down, so the best is the steadiest estimate on a shared machine),
the median and range, the best's ratio to --no-spec and the median of the
ratios of runs side by side in the same round; the CPU seconds of the
whole run (user + system, best round; with --threads 1 barely touched by
other processes' load); and the engine's tokens per verifying step and
acceptance (from --verbose). --json writes the table as JSON too.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DECODE = re.compile(r"^decode: (\d+) tokens in ([0-9.]+) s")
SPEC = re.compile(r"^speculation: ([0-9.]+) tokens per verifying step")


def questions(limit):
    with open(os.path.join(ROOT, "tests", "data", "picochat", "golden.json")) as f:
        cases = json.load(f)["cases"]
    single = [c["messages"][0]["content"] for c in cases if len(c["messages"]) == 1]
    return single[:limit]


def run(args, cmd, stdin=None, only_odd=False):
    """(decode tokens, decode seconds, CPU seconds, last speculation line) of
    one CLI run; only_odd: count only the 2nd, 4th, ... exchange (the
    repeated questions)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=args.timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr[-400:]}")
    tokens, seconds, spec, k = 0, 0.0, "", 0
    for line in p.stderr.splitlines():
        m = DECODE.match(line)
        if m:
            if not only_odd or k % 2 == 1:
                tokens += int(m.group(1))
                seconds += float(m.group(2))
            k += 1
        elif line.startswith("speculation:"):
            spec = line[len("speculation: "):]
    return tokens, seconds, cpu, spec


def scenario_cmds(args, name):
    """The command and stdin of a scenario."""
    common = ["--temperature", "0", "--verbose", "--device", args.device]
    if args.threads:
        common += ["--threads", str(args.threads)]
    if name == "nothing":
        rnd = args.random or "6,256,2,2,65536"
        return [args.bin, "generate", "--random", rnd, "--ids", "1 2 3", "--max-tokens", str(args.nothing_tokens),
                "--json"] + common, None, False
    qs = questions(args.questions)
    base = [args.bin, "chat", "-m", args.model, "--max-tokens", "96"] + common
    if name == "chat":
        return base, "\n/clear\n".join(qs) + "\n", False
    return base, "\n/clear\n".join(q + "\n" + q for q in qs) + "\n", True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("NC_BIN", os.path.join(ROOT, "build", "nanochat")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "picochat"))
    ap.add_argument("--draft", default="", help="also run with --draft-model DRAFT")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--random", default="", help="the 'nothing' model's shape (default 6,256,2,2,65536)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--nothing-tokens", type=int, default=300)
    ap.add_argument("--scenarios", default="nothing,chat,quote")
    ap.add_argument("--modes", default="", help="only these modes (no-spec is always run)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args()

    modes = [("no-spec", ["--no-spec"]), ("lookup", ["--spec"]), ("lookup-always", ["--spec-always"])]
    if args.draft:
        modes += [("draft", ["--draft-model", args.draft, "--spec-ngram", "0"]),
                  ("draft+lookup", ["--draft-model", args.draft])]
    if args.modes:
        keep = set(args.modes.split(",")) | {"no-spec"}
        modes = [m for m in modes if m[0] in keep]
    results = []
    for name in args.scenarios.split(","):
        cmd, stdin, only_odd = scenario_cmds(args, name)
        rates = {m: [] for m, _ in modes}
        cpus = {m: [] for m, _ in modes}
        specs = {}
        for _ in range(args.rounds):
            for m, extra in modes:
                if name == "nothing" and m.startswith("draft"):
                    continue  # a random model has no draft model
                tokens, seconds, cpu, spec = run(args, cmd + extra, stdin, only_odd)
                rates[m].append(tokens / seconds if seconds > 0 else 0.0)
                cpus[m].append(cpu)
                specs[m] = spec
        base, cpu_base = max(rates["no-spec"]), min(cpus["no-spec"])
        print(f"==== {name} ({args.device}, {args.rounds} rounds) decode tok/s: best, median [min, max], best's "
              f"ratio, median paired ratio; CPU s of the run: best, ratio")
        for m, _ in modes:
            if not rates[m]:
                continue
            best, cpu = max(rates[m]), min(cpus[m])
            paired = statistics.median(r / b for r, b in zip(rates[m], rates["no-spec"]))
            print(f"  {m:14s} {best:8.1f} {statistics.median(rates[m]):8.1f} [{min(rates[m]):.1f}, "
                  f"{max(rates[m]):.1f}] x{best / base:5.3f} x{paired:5.3f}   {cpu:6.2f} s x{cpu / cpu_base:5.3f}   "
                  f"{specs.get(m, '')}")
            results.append({"scenario": name, "mode": m, "tok_s": rates[m], "best": best, "ratio": best / base,
                            "paired_ratio": paired, "cpu_s": cpus[m], "cpu_ratio": cpu / cpu_base,
                            "speculation": specs.get(m, "")})
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "model": args.model, "draft": args.draft, "results": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
