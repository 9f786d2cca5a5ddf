#!/usr/bin/env python3
"""Sums a CubeCL per-launch profile (a `profile-*` file of scripts/gpu-check.sh) by kernel.

    scripts/profile-summary.py FILE [RUNS]

Takes the launch lines (`| 1.2ms | KernelName | ...`) after the `run 1` marker the bench child
prints when its first timed run ends, i.e. those of the timed runs after the first (RUNS, 4 for
the bench's children: 5 timed runs), and prints per run: kernel time, launches, and the kernels
by time (element-wise binary ops and reductions split by their second column).
"""
import collections
import re
import sys

LINE = re.compile(r'^\| ([\d.]+)(ms|µs|ns|s)\s+\| ([^|]+)\|(?: ([^|]+)\|)?')
UNIT = {'ms': 1e-3, 'µs': 1e-6, 'ns': 1e-9, 's': 1.0}
SPLIT = ('KernelScalarBinop', 'KernelBinop', 'KernelUnaryOp', 'ReduceKernel')


def main(path, runs):
    lines = open(path, errors='replace').read().split('\n')
    start = next((i for i, line in enumerate(lines) if 'run 1' in line), 0)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for line in lines[start:]:
        m = LINE.match(line)
        if not m:
            continue
        name = m.group(3).strip()
        if name in SPLIT and m.group(4):
            name += ':' + m.group(4).strip()
        totals[name][0] += float(m.group(1)) * UNIT[m.group(2)]
        totals[name][1] += 1
    time = sum(t for t, _ in totals.values())
    count = sum(c for _, c in totals.values())
    print(f'per run (/{runs}): {time * 1e3 / runs:.1f} ms of kernels, {count / runs:.0f} launches')
    for name, (t, c) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f'   {name:<40} {t * 1e3 / runs:8.2f} ms {c / runs:7.0f}')


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
