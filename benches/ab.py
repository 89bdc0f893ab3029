#!/usr/bin/env python3
"""Compares two builds of one criterion benchmark, A and B, by alternating runs.

    cargo bench --bench pipeline --no-run        # build A, copy its executable aside
    ...change the code, build B the same way...
    python3 benches/ab.py --cpu 1 --rounds 4 /tmp/pipeline-a target/release/deps/pipeline-xxxx \\
        pipeline/access_to_tunnel/64

Each round runs both executables once (A first in odd rounds, B first in even ones) on the
benchmark whose id is given (the filter is the id, anchored), and reads the run's samples
(criterion's sample.json): their 10th percentile and median, per element. The rounds' ratios
A/B of the 10th percentiles and their median come last (above 1: B is faster).

Why the 10th percentile and long runs: on the shared machines these benchmarks run on, the
other hardware thread of the core is busy for seconds at a time and the code then runs up to
1.6x slower (see `benches/contention.rs`). Short alternating runs land in either phase at
random, so their ratios scatter by more than most changes are worth; the 10th percentile of
a run of several seconds is the code's time in the fast phase whenever the run met it. A
round where either run never met the fast phase shows as an outlier in its ratio. Counting
instructions (callgrind) remains the exact measure of a change's size; this is for its time.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from medians import CRITERION, ROOT, percentile, samples_per_element


def run_once(exe, bench_id, args):
    """Runs `exe` on `bench_id`; returns (10th percentile, median) of its samples, ns/element."""
    command = [exe, "--bench", "--warm-up-time", args.warm_up, "--measurement-time",
               args.measure, "--noplot", "^" + re.escape(bench_id) + "$"]
    if args.cpu is not None:
        command = ["taskset", "-c", args.cpu] + command
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    directory = os.path.join(CRITERION, bench_id, "new")
    try:
        with open(os.path.join(directory, "benchmark.json")) as f:
            meta = json.load(f)
        fresh = os.path.getmtime(os.path.join(directory, "sample.json")) >= start
    except OSError:
        fresh = False
    if not fresh:
        sys.exit(f"this run left no criterion results for {bench_id} under {CRITERION}: "
                 "is the id right?")
    elements = (meta.get("throughput") or {}).get("Elements", 1)
    per = samples_per_element(directory, elements)
    if not per:
        sys.exit(f"{bench_id}: no samples")
    return percentile(per, 0.10), statistics.median(per)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="executable of build A (a bench binary)")
    parser.add_argument("b", help="executable of build B")
    parser.add_argument("bench_id", help="one benchmark id, e.g. pipeline/access_to_tunnel/64")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cpu", help="pin to this CPU with taskset")
    parser.add_argument("--warm-up", default="1", help="criterion --warm-up-time, seconds")
    parser.add_argument("--measure", default="8", help="criterion --measurement-time, seconds")
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    for exe in (args.a, args.b):
        if not os.access(exe, os.X_OK):
            sys.exit(f"not an executable: {exe}")

    ratios = []
    print(f"{'round':>5}  {'A p10':>9} {'A median':>9}  {'B p10':>9} {'B median':>9}  A/B p10")
    for round_ in range(1, args.rounds + 1):
        order = [("a", args.a), ("b", args.b)]
        if round_ % 2 == 0:
            order.reverse()
        result = {name: run_once(exe, args.bench_id, args) for name, exe in order}
        (a10, amed), (b10, bmed) = result["a"], result["b"]
        ratios.append(a10 / b10)
        print(f"{round_:>5}  {a10:9.2f} {amed:9.2f}  {b10:9.2f} {bmed:9.2f}  {a10 / b10:7.3f}")
    faster = sum(1 for r in ratios if r > 1)
    print(f"\nA/B of the 10th percentiles: median {statistics.median(ratios):.3f}, "
          f"B faster in {faster} of {len(ratios)} rounds")


if __name__ == "__main__":
    main()
