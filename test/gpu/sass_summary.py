#!/usr/bin/env python3
"""sass_summary.py - where one kernel's time goes, from Nsight Compute's per-instruction page.

  ncu --kernel-name-base mangled --kernel-name regex:NAME --launch-count 1 --set full \
      --import-source no -o rep PROGRAM ARGS
  ncu -i rep.ncu-rep --page source --csv --print-source sass > sass.csv
  python3 test/gpu/sass_summary.py sass.csv [--segments 0.4]

Prints the share of executed warp instructions and of warp-state samples per
opcode, then the straight-line segments (consecutive instructions executed
equally often: once per block, per tile, ...) holding at least the given
percentage of the samples, with how often they run and their first
instruction.  The segment view is how cuda/NOTES.md v13 found the
assignment's prologue (executed once per warp, 18% of the samples).
Standard library only (runs on the GPU machine's python3 or here).
"""
import csv
import sys
from collections import Counter


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    path = argv[1]
    min_share = float(argv[argv.index("--segments") + 1]) if "--segments" in argv else 0.4
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # the header is the first row naming both columns (a kernel-name line may precede it)
    hi = next(i for i, r in enumerate(rows) if "Address" in r and "Source" in r)
    hdr, data = rows[hi], [r for r in rows[hi + 1:] if len(r) == len(rows[hi])]
    col = {name: hdr.index(name) for name in ("Source", "Warp Stall Sampling (All Samples)", "Instructions Executed")}

    def num(r, name):
        v = r[col[name]].replace(",", "")
        return float(v) if v else 0.0

    samples = [num(r, "Warp Stall Sampling (All Samples)") for r in data]
    execs = [num(r, "Instructions Executed") for r in data]
    tot_s, tot_e = sum(samples) or 1.0, sum(execs) or 1.0
    print(f"{len(data)} instructions, {tot_e:.0f} warp instructions executed, {tot_s:.0f} samples")

    by_e, by_s = Counter(), Counter()
    for r, e, s in zip(data, execs, samples):
        words = r[col["Source"]].split()
        op = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words[0] if words else "")
        op = op.split(".")[0]
        by_e[op] += e
        by_s[op] += s
    print("\nopcode      executed  samples")
    for op, e in by_e.most_common(20):
        print(f"{op:10s} {100 * e / tot_e:8.1f}% {100 * by_s[op] / tot_s:7.1f}%")

    print(f"\nsegments with >= {min_share}% of the samples (first-last index, length, executions each)")
    seg = []
    for i, (e, s) in enumerate(zip(execs, samples)):
        if seg and seg[-1][2] == e:
            seg[-1][1] = i
            seg[-1][3] += s
        else:
            seg.append([i, i, e, s])
    for a, b, e, s in seg:
        if 100 * s / tot_s >= min_share:
            print(f"{a:6d}-{b:6d} n={b - a + 1:5d} exec={e:12.0f} samples={100 * s / tot_s:5.1f}%  {data[a][col['Source']][:60]}")


if __name__ == "__main__":
    main(sys.argv)
