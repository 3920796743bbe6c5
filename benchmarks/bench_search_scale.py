"""The default strategy (`frontier`) at the sizes real studies run: proposal time and driver memory
against the number of trials and objectives, through the real engine with an instant evaluator.

    python benchmarks/bench_search_scale.py                                   # the issue's two goals
    python benchmarks/bench_search_scale.py --objectives accuracy params --trials 100 300 1000
    python benchmarks/bench_search_scale.py --space studies/spaces/wide.yaml --trials 300

Each run is one study on the xt_t space (76,032 architectures; `--space` for another), FLOPs
budget 5 GMACs, an evaluator that returns a synthetic landscape's accuracy at once
(benchmarks/landscapes.py, `ridge`), `parallel: 1`, `trials_count: trained`, the run directory in
/dev/shm. The proposer's `propose` is timed in the driver (every call, start-up draws included);
the driver's peak RSS is read from the kernel (`ru_maxrss`; Ray's processes are not the driver).
Printed per run: trials, proposal time median / 90th percentile / max over the trials after the
start-up draws and in the last 100, the front's size, the driver's peak RSS, and the wall time.
One JSON line per run goes to `--results` (benchmarks/results/search_scale.jsonl by default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

RESULTS = REPO / "benchmarks" / "results" / "search_scale.jsonl"
GOALS = [(("accuracy", "params", "flops"), 1000), (("accuracy", "params", "flops", "memory_mb"), 300)]


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(objectives: tuple, trials: int, space: str, seed: int, landscape: str, flops: float) -> dict:
    """One study in this process; returns its measurements."""
    import optuna

    from nas.engine import SearchEngine, open_storage
    from nas.search import frontier
    from nas.study import parse_study

    times: list[float] = []
    propose = frontier.FrontierProposer.propose

    def timed(self, study):
        t0 = time.perf_counter()
        try:
            return propose(self, study)
        finally:
            times.append(time.perf_counter() - t0)

    frontier.FrontierProposer.propose = timed
    workdir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    out = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=workdir))
    study = {"name": "scale", "space": str(REPO / space), "objectives": list(objectives),
             "constraints": {"flops": flops},
             "evaluator": {"name": "landscapes:LandscapeEvaluator", "landscape": landscape},
             "seed": seed, "trials": trials, "parallel": 1, "trials_count": "trained",
             "resources": {"cpus": 1}, "fvcore_check_every": 0, "output_dir": str(out)}
    try:
        spec = parse_study(study, label="bench")
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        SearchEngine(spec, num_cpus=2).run()
        wall = time.perf_counter() - t0
        stored = optuna.load_study(study_name="scale", storage=open_storage(spec, out))
        done = [t for t in stored.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        front = len(stored.best_trials)
    finally:
        frontier.FrontierProposer.propose = propose
        shutil.rmtree(out, ignore_errors=True)
    model = np.array(times[10:]) if len(times) > 10 else np.array(times)
    last = np.array(times[-100:])
    return {"objectives": list(objectives), "trials": trials, "space": space, "seed": seed,
            "landscape": landscape, "flops_budget": flops, "complete": len(done), "front": front,
            "proposals": len(times), "propose_median_s": round(float(np.median(model)), 4),
            "propose_p90_s": round(float(np.percentile(model, 90)), 4),
            "propose_max_s": round(float(model.max()), 4),
            "propose_last100_median_s": round(float(np.median(last)), 4),
            "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(wall, 1), "load": f"{load:.1f}-{os.getloadavg()[0]:.1f}",
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": _commit(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", nargs="+", default=None,
                    help="one objective list (default: the issue's two goals, each at its trial count)")
    ap.add_argument("--trials", nargs="+", type=int, default=None)
    ap.add_argument("--space", default="studies/spaces/xt_t.yaml")
    ap.add_argument("--flops", type=float, default=5e9, help="FLOPs budget, GMACs (fvcore) x 1e9")
    ap.add_argument("--landscape", default="ridge")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.objectives:
        plan = [(tuple(args.objectives), n) for n in (args.trials or [100, 300, 1000])]
    else:
        plan = [(o, n) for o, n in GOALS if not args.trials or n in args.trials]
    # each run in its own process, so one run's peak memory is not the next one's
    if len(plan) > 1:
        for objectives, n in plan:
            subprocess.run([sys.executable, __file__, "--objectives", *objectives, "--trials", str(n),
                            "--space", args.space, "--flops", str(args.flops), "--landscape", args.landscape,
                            "--seed", str(args.seed), "--results", args.results], check=True)
        return
    (objectives, n), = plan
    row = run(objectives, n, args.space, args.seed, args.landscape, args.flops)
    row["command"] = (f"python benchmarks/bench_search_scale.py --objectives {' '.join(objectives)} --trials {n}"
                      f" --space {args.space} --flops {args.flops:g} --landscape {args.landscape} --seed {args.seed}")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"[{', '.join(objectives)}] {row['complete']} trials on {args.space}: proposal median "
          f"{row['propose_median_s']:.3f} s (p90 {row['propose_p90_s']:.3f}, max {row['propose_max_s']:.3f}, "
          f"last 100 median {row['propose_last100_median_s']:.3f}), front {row['front']}, driver peak RSS "
          f"{row['driver_peak_rss_mib']:.0f} MiB, wall {row['wall_s']:.0f} s, load {row['load']}", flush=True)


if __name__ == "__main__":
    main()
