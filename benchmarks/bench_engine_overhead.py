"""The driver's own overhead: trials per second with an instant evaluator, through the real engine.

    python benchmarks/bench_engine_overhead.py                       # random, 150 trained trials
    python benchmarks/bench_engine_overhead.py --sampler frontier --trials 100

A study of the xt_t space (76,032 architectures), objectives [accuracy, params], FLOPs budget
4 GMACs, `trials_count: trained`, an evaluator that returns at once (`bench_search:SleepEvaluator`,
`sleep_s: 0`), `parallel: 2` on an embedded Ray with 2 CPUs, the run directory on disk. Prints the
stored and trained trials, the steady rate (10th to last completion, Optuna's timestamps: leaves
out Ray's start and the fvcore cross-check of trial 0) and the wall time with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampler", default="random")
    ap.add_argument("--trials", type=int, default=150)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import optuna

    from nas.engine import SearchEngine, open_storage
    from nas.study import parse_study

    out = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    study = {"name": "overhead", "space": str(REPO / "studies/spaces/xt_t.yaml"),
             "objectives": ["accuracy", "params"], "constraints": {"flops": "4G"},
             "evaluator": {"name": "bench_search:SleepEvaluator", "sleep_s": 0.0},
             "sampler": {"name": args.sampler}, "seed": 0, "trials": args.trials, "parallel": 2,
             "trials_count": "trained", "resources": {"cpus": 1}, "fvcore_check_every": 0,
             "output_dir": str(out)}
    try:
        spec = parse_study(study, label="bench")
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        SearchEngine(spec, num_cpus=2).run()
        wall = time.perf_counter() - t0
        trials = optuna.load_study(study_name="overhead", storage=open_storage(spec, out)).get_trials()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ends = sorted(t.datetime_complete for t in trials if t.datetime_complete)
    trained = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("reused_from") is None]
    steady = (ends[-1] - ends[9]).total_seconds()
    print(f"{args.sampler}: {len(trials)} trials stored ({len(trained)} trained), steady "
          f"{(len(ends) - 10) / steady:.1f} trials/s (10th..last completion), wall {wall:.1f} s incl. "
          f"Ray start; load average {load:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
