"""Search throughput: trials per minute with 1 and 2 parallel workers.

    python benchmarks/bench_search.py                    # real proxy training (short), 1 and 2 workers
    python benchmarks/bench_search.py --evaluator sleep  # a 1 s no-op trial: the engine's own overhead

Each run is a fresh study (random sampler, no constraints, so every trial is evaluated) on an
embedded local Ray. Reported per run: wall time including Ray start-up, and the steady rate
from the W-th to the last trial's completion with W workers (Optuna's timestamps; this leaves out
Ray's start and each worker's cold first trial), counting trials that were really evaluated (a
repeated architecture reuses its result and is not counted).
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
sys.path.insert(0, str(REPO))


class SleepEvaluator:
    """A trial that only sleeps: measures scheduling, storage and transfer overhead."""

    metric = "accuracy"
    rungs: list = []

    def __init__(self, settings: dict):
        self.settings = dict(settings)

    def evaluate(self, config, *, budget_epochs, device, seed, workdir, resume_from, weights_name=None):
        time.sleep(float(self.settings.get("sleep_s", 1.0)))
        return {"score": 0.5, "epochs": 1, "history": [0.5], "weights": None, "fidelity": 1.0}


def study(kind: str, workers: int, trials: int, out: Path) -> dict:
    if kind == "sleep":
        evaluator = {"name": "bench_search:SleepEvaluator", "sleep_s": 1.0}
    else:
        evaluator = {"name": "train", "epochs": 1,
                     "dataset": {"kind": "procedural", "num_classes": 4, "train_size": 256,
                                 "val_size": 128},
                     "batch_size": 32, "augment": False, "save_weights": True}
    return {"name": f"bench-{kind}-{workers}", "space": str(REPO / "studies/spaces/quickstart.yaml"),
            "objectives": ["accuracy", "flops"], "evaluator": evaluator,
            "sampler": {"name": "random"}, "seed": 1, "trials": trials, "parallel": workers,
            "resources": {"cpus": 1}, "fvcore_check_every": 0, "output_dir": str(out)}


def run(kind: str, workers: int, trials: int) -> dict:
    from optuna.trial import TrialState

    from nas.engine import SearchEngine
    from nas.study import parse_study

    out = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        spec = parse_study(study(kind, workers, trials, out), label="bench")
        t0 = time.perf_counter()
        result = SearchEngine(spec, num_cpus=max(workers, 2)).run()
        wall = time.perf_counter() - t0
        import optuna

        from nas.engine import open_storage

        done = optuna.load_study(study_name=spec.name, storage=open_storage(spec, out)).get_trials()
        evaluated = [t for t in done if t.state == TrialState.COMPLETE
                     and t.user_attrs.get("reused_from") is None]
        # from the `workers`-th completion on: every worker is warm (leaves out Ray's start and
        # the workers' cold first trial)
        ends = sorted(t.datetime_complete for t in evaluated)
        steady = (ends[-1] - ends[workers - 1]).total_seconds()
        eval_s = [t.user_attrs.get("eval_wall_s", 0.0) for t in evaluated]
        return {"workers": workers, "trials": len(done), "evaluated": len(evaluated), "wall_s": wall,
                "steady_s": steady, "per_min": 60 * (len(evaluated) - workers) / steady,
                "mean_eval_s": sum(eval_s) / len(eval_s), "pareto": len(result.pareto)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluator", choices=("train", "sleep"), default="train")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"overlock-nas search throughput, evaluator={args.evaluator}, {args.trials} trials per run, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    for w in args.workers:
        r = run(args.evaluator, w, args.trials)
        rows.append(r)
        print(f"workers={w}: {r['evaluated']}/{r['trials']} trials evaluated, wall {r['wall_s']:.1f} s "
              f"(incl. Ray start), steady {r['steady_s']:.1f} s -> {r['per_min']:.1f} trials/min; "
              f"mean evaluation {r['mean_eval_s']:.2f} s", flush=True)
    if len(rows) > 1:
        print(f"speed-up {rows[-1]['workers']} vs {rows[0]['workers']} workers: "
              f"{rows[-1]['per_min'] / rows[0]['per_min']:.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
