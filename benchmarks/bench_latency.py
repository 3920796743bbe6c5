"""Latency repeatability (issue 4): how much repeated measurements of one config disagree.

    python benchmarks/bench_latency.py                 # CPU; CUDA too when present
    python benchmarks/bench_latency.py --rounds 8 --threads 1 2

For each config and thread count, `nas.measure.measure_latency` is called `--rounds` times in
this one process (each call exactly as a study measures: warm-up, `--repeats` timed forwards in 5
rounds, `latency_ms` the median of round minima, one more set of rounds pooled when the round
minima spread over 10 %). Reported: the median of the calls' readings, the spread between calls
(max - min, and the coefficient of variation), the within-call IQR, and how often the re-measure
fired. Calls in one process do not see what differs between processes; for that, see
`bench_latency_model.py --profile N` (the same config read by two `overlock-nas profile`
processes). The load average is printed because other processes on a shared machine are the
main source of spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import overlock  # noqa: E402
from nas.measure import REPEATS, WARMUP, device_string, measure_latency  # noqa: E402

TINY = overlock.OverLoCKConfig(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1),
                               widths=(16, 32, 64, 64), focus_heads=(1, 1), head_width=128,
                               reparam_kernels=(5, 5, 5, 5), dynamic_kernels=(5, 5), small_kernel=3,
                               region_count=3, resolution=(64, 64), num_classes=10)


def rounds(config, *, device, threads, n, repeats, warmup, dtype="fp32", batch=1):
    results = []
    for _ in range(n):
        results.append(measure_latency(config, device=device, threads=threads, repeats=repeats,
                                       warmup=warmup, dtype=dtype, batch=batch))
    medians = [r["latency_ms"] for r in results]
    mid = statistics.median(medians)
    return {
        "median_ms": mid,
        "range_ms": max(medians) - min(medians),
        "range_pct": 100 * (max(medians) - min(medians)) / mid,
        "cv_pct": 100 * statistics.pstdev(medians) / statistics.mean(medians),
        "iqr_pct": 100 * statistics.median(r["latency_spread_ms"] for r in results) / mid,
        "remeasured": sum(r["latency_remeasured"] for r in results),
        "medians": medians,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--configs", nargs="+", default=["tiny@64", "overlock_xt@224"],
                        help="NAME@RES with NAME a preset or 'tiny'")
    args = parser.parse_args()

    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} at start")
    print(f"{args.rounds} rounds x ({args.warmup} warm-up + {args.repeats} timed forwards), batch 1, fp32\n")
    header = (f"{'config':18s} {'device':44s} {'latency ms':>10s} {'between calls':>16s} {'CV':>6s} "
              f"{'IQR in call':>13s} {'re-measured':>12s}")
    print(header)
    print("-" * len(header))
    jobs = [("cpu", t) for t in args.threads]
    if torch.cuda.is_available():
        jobs.append(("cuda", None))
    for spec in args.configs:
        name, _, res = spec.partition("@")
        config = TINY if name == "tiny" else overlock.PRESETS[name]
        if res:
            config = config.replace(resolution=(int(res), int(res)))
        for device, threads in jobs:
            t0 = time.perf_counter()
            r = rounds(config, device=device, threads=threads, n=args.rounds, repeats=args.repeats,
                       warmup=args.warmup)
            dev = device_string(device, threads).split(", na2d_av")[0]
            print(f"{spec:18s} {dev:44s} {r['median_ms']:10.3f} "
                  f"{r['range_ms']:8.3f} ({r['range_pct']:4.1f}%) {r['cv_pct']:5.1f}% "
                  f"{r['iqr_pct']:12.1f}% {r['remeasured']:>5d}/{args.rounds:<6d}"
                  f"  [{time.perf_counter() - t0:.0f} s; rounds: "
                  f"{' '.join(f'{m:.2f}' for m in r['medians'])}]", flush=True)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at end")


if __name__ == "__main__":
    main()
