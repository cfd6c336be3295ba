#!/usr/bin/env python3
"""ncu_step_table.py: where one decode step's GPU time goes, from an ncu run
that read gpu__time_duration.sum and dram__bytes_read.sum of every kernel
(`ncu --csv --metrics ... nanochat bench ...`, as tools/device/switches_check.sh
runs it).

    ncu_step_table.py LOG [KERNELS_PER_STEP]

Takes the last KERNELS_PER_STEP kernels of the log (default: one d34 batch-1
step, 34 layers x 5 kernels + embedding, logits and sampling = 173), groups
them by kernel and grid, and prints count, total and mean time, bytes read
and the bandwidth each group reached. ncu runs kernels one at a time, so
the times exclude the overlap that programmatic dependent launch gives in a
real step: read them per kernel, not as the step's total.
"""
import collections
import csv
import re
import sys


def kernels(path):
    """Each profiled kernel of the log in order: a dict of its name, grid
    and metric values."""
    with open(path, errors="replace") as f:
        lines = [line for line in f if line.startswith('"')]
    found = collections.OrderedDict()
    for row in csv.DictReader(lines):
        k = found.setdefault(row["ID"], {"name": row["Kernel Name"], "grid": row.get("Grid Size", "")})
        value = row["Metric Value"].replace(",", "")
        try:
            k[row["Metric Name"]] = float(value)
        except ValueError:
            k[row["Metric Name"]] = 0.0
    return list(found.values())


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    per_step = int(sys.argv[2]) if len(sys.argv) == 3 else 173
    ks = kernels(sys.argv[1])
    if not ks:
        sys.exit(f"{sys.argv[1]}: no kernels in the log")
    last = ks[-per_step:]
    groups = collections.OrderedDict()
    for k in last:
        name = re.sub(r"\(.*", "", k["name"])[:60] + " " + k["grid"]
        g = groups.setdefault(name, [0, 0.0, 0.0])
        g[0] += 1
        g[1] += k.get("gpu__time_duration.sum", 0.0)
        g[2] += k.get("dram__bytes_read.sum", 0.0)
    total = sum(g[1] for g in groups.values())
    print(f"{len(ks)} kernels profiled; the last {len(last)}: {total / 1e3:.1f} us one after the other")
    for name, (n, ns, b) in sorted(groups.items(), key=lambda item: -item[1][1]):
        bw = b / ns if ns else 0.0
        print(f"{n:4d} x {name:<80s} {ns / 1e3:9.1f} us {ns / n / 1e3:8.2f} us each {b / 1e6:9.1f} MB {bw:7.1f} GB/s")


if __name__ == "__main__":
    main()
