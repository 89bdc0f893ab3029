#!/usr/bin/env python3
"""Runs criterion benches several times and prints the median of the per-run medians.

These machines are shared and noisy (a 2-vCPU guest that alternates between a fast and a slow
speed), so one criterion run proves little: BENCHMARKS.md quotes the median over several runs,
with the range, and peers as ratios within each run. This script does the bookkeeping.

    python3 benches/medians.py --runs 5 --bench tunnel --cpu 1 \
        '^tunnel/(encap_ipv4/64|etherparse_encap_ipv4/64)$'

Each run executes the bench binary once (pinned with taskset when --cpu is given) with the
filter, then reads criterion's median for every benchmark it ran
(target/criterion/<id>/new/estimates.json) and divides it by the elements per iteration
(`Throughput::Elements`), giving nanoseconds per element. Prints one line per benchmark:
the per-run values, their median, min and max; with --ratio-to ID also the per-run ratio of each
benchmark to that one (peer time over ours) and its median. --json FILE writes it all.

Beside each run's median it reports the 10th percentile of that run's samples (criterion's
sample.json: each sample's time over its iterations, per element), and the median of those
over the runs. The guest's slow phases come and go within one run, seconds apart (one 30-s
run of `pipeline/access_to_tunnel/64` on 2026-11-30: samples near 52 ns and near 87 ns,
alternating, and values between for samples that straddle a change), so a run's median mixes
the two phases in whatever proportion the run met them, while its 10th percentile is close to
the code's time in the fast phase whenever the run met that phase at all (a run spent wholly
in the slow phase shows it in both figures). It is a second view, not a replacement: the
targets are judged by the medians.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRITERION = os.path.join(ROOT, "target", "criterion")


def bench_binary(name):
    """Builds the bench and returns the path of its executable."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", name, "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == name \
                and "bench" in msg["target"]["kind"] and msg.get("executable"):
            return msg["executable"]
    sys.exit(f"no executable for bench {name}")


def samples_per_element(directory, elements):
    """One run's samples (criterion's sample.json in `directory`): each sample's time over its
    iterations and `elements`, in ns, sorted; empty if there are none."""
    try:
        with open(os.path.join(directory, "sample.json")) as f:
            sample = json.load(f)
    except OSError:
        return []
    return sorted(t / i / elements for t, i in zip(sample["times"], sample["iters"]) if i)


def percentile(sorted_values, fraction):
    """The `fraction` percentile of `sorted_values` (nearest rank below), or None if empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def print_row(bench_id, values):
    """One line of a table: the id, the median, min and max of `values`, then each value."""
    print(f"{bench_id:<48} {statistics.median(values):9.2f} {min(values):9.2f} "
          f"{max(values):9.2f}  " + " ".join(f"{v:.2f}" for v in values))


def results_since(start):
    """Every benchmark whose estimates were written after `start`: id -> (ns per element,
    10th percentile of the samples in ns per element)."""
    found = {}
    for path in glob.glob(os.path.join(CRITERION, "**", "new", "estimates.json"), recursive=True):
        if os.path.getmtime(path) < start:
            continue
        directory = os.path.dirname(path)
        with open(os.path.join(directory, "benchmark.json")) as f:
            meta = json.load(f)
        with open(path) as f:
            median = json.load(f)["median"]["point_estimate"]
        elements = (meta.get("throughput") or {}).get("Elements", 1)
        found[meta["full_id"]] = (median / elements,
                                  percentile(samples_per_element(directory, elements), 0.10))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", required=True, help="bench target name, e.g. tunnel")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", help="pin to this CPU with taskset")
    parser.add_argument("--warm-up", default="2", help="criterion --warm-up-time, seconds")
    parser.add_argument("--measure", default="5", help="criterion --measurement-time, seconds")
    parser.add_argument("--ratio-to", help="benchmark id that ratios are taken against")
    parser.add_argument("--json", help="write the per-run results here")
    parser.add_argument("filter", nargs="?", default="", help="criterion filter (a regex)")
    args = parser.parse_args()

    exe = bench_binary(args.bench)
    runs = []
    samples = []
    for run in range(args.runs):
        start = time.time()
        command = [exe, "--bench", "--warm-up-time", args.warm_up,
                   "--measurement-time", args.measure]
        if args.filter:
            command.append(args.filter)
        if args.cpu is not None:
            command = ["taskset", "-c", args.cpu] + command
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        results = results_since(start)
        if not results:
            sys.exit("the filter matched no benchmark")
        samples.append({k: p10 for k, (_, p10) in results.items() if p10 is not None})
        results = {k: median for k, (median, _) in results.items()}
        runs.append(results)
        print(f"run {run + 1}/{args.runs}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(results.items())), file=sys.stderr)

    ids = sorted(set().union(*runs))
    print(f"{'benchmark':<48} {'median':>9} {'min':>9} {'max':>9}  ns/element per run")
    for bench_id in ids:
        print_row(bench_id, [r[bench_id] for r in runs if bench_id in r])
    print("\n10th percentile of each run's samples (the fast phase; see the top of this file)")
    for bench_id in ids:
        values = [r[bench_id] for r in samples if bench_id in r]
        if values:
            print_row(bench_id, values)
    if args.ratio_to:
        print(f"\ntime over the time of {args.ratio_to}, per run (2.00x: twice as slow)")
        for bench_id in ids:
            if bench_id == args.ratio_to:
                continue
            ratios = [r[bench_id] / r[args.ratio_to] for r in runs
                      if bench_id in r and args.ratio_to in r]
            if ratios:
                print(f"{bench_id:<48} {statistics.median(ratios):8.2f}x  "
                      + " ".join(f"{x:.2f}" for x in ratios))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": args.bench, "filter": args.filter, "runs": runs,
                       "sample_p10": samples}, f, indent=1)


if __name__ == "__main__":
    main()
