"""Slot utilisation with and without a latency budget (issue 10 §1).

    python benchmarks/bench_utilization.py                      # this checkout's engine
    git worktree add /tmp/old <commit>                          # the engine before a change
    python benchmarks/bench_utilization.py --repo /tmp/old      # ... measured by the same script
    git worktree remove /tmp/old

A study of 16 trials on the quickstart space (random sampler, seed 1), 4 slots of 1 CPU each,
with a *sleeping* evaluator (`tests/nas/fake_evaluators.py:Sleeping`): each evaluation sleeps
2-8 s in proportion to the config's MACs (6.5-30.6 M in this space; training time grows with
them), so evaluations differ in length and nothing competes for the 2 real cores but the latency
measurements. Two runs:

- `none`: objectives accuracy and FLOPs, no latency;
- `budget`: the same plus a latency budget (`latency_ms <= 1000`, which every config meets, so the
  same configs train): each config's latency is *really measured* before it trains
  (`measure_latency`: deploy model, batch 1, fp32, 1 thread, 5 warm-up + 20 timed forwards at
  64x64), or, with `--latency-sleep S`, by a stand-in that sleeps S seconds (labelled as such);
- `store` (`--runs none,budget,store`): `budget` again, a new study on the same device whose
  latencies the previous run left in the device's store (the engine before the store re-measures).

Slot utilisation = evaluation seconds / (slots x span from the first evaluation start to the last
evaluation end), from the evaluator's own start/end timestamps. The embedded Ray gets
slots + 1 logical CPUs: the measuring worker's core (new engine) or room for the old engine's
exclusive measurement. Every run uses a fresh latency store (`OVERLOCK_NAS_CACHE`), so every
latency is measured, none read from an earlier run (but `store`'s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests" / "nas"      # the sleeping evaluator and the sleeping measurement


def flops_range(repo: Path) -> list[int]:
    """The smallest and largest MACs of the space's architectures (the sleep scales between)."""
    import space

    costs = [space.complexity(c).flops
             for c in space.load_space(repo / "studies/spaces/quickstart.yaml").enumerate()]
    return [min(costs), max(costs)]


def study(out: Path, log: Path, slots: int, trials: int, budget: bool, min_s: float,
          max_s: float, repo: Path, ahead: int | None = None) -> dict:
    data = {"name": "bench-utilization", "space": str(repo / "studies/spaces/quickstart.yaml"),
            "objectives": ["accuracy", "flops"],
            "evaluator": {"name": "fake_evaluators:Sleeping", "min_s": min_s, "max_s": max_s,
                          "flops_range": flops_range(repo), "log": str(log)},
            "sampler": {"name": "random"}, "seed": 1, "trials": trials, "parallel": slots,
            "resources": {"cpus": 1}, "fvcore_check_every": 0, "output_dir": str(out)}
    if budget:
        data["constraints"] = {"latency_ms": 1000.0}
        data["latency"] = {"threads": 1, "warmup": 5, "repeats": 20}
        if ahead is not None:
            data["latency"]["ahead"] = ahead
    return data


def run(kind: str, args, repo: Path) -> dict:
    import nas.engine
    from nas.engine import SearchEngine
    from nas.study import parse_study

    budget = kind in ("budget", "store")
    work = Path(tempfile.mkdtemp(prefix="bench-util-"))
    if kind != "store" or "OVERLOCK_NAS_CACHE" not in os.environ:
        os.environ["OVERLOCK_NAS_CACHE"] = str(work / "cache")     # every latency measured afresh
    log = work / "evals.jsonl"
    if args.latency_sleep:
        nas.engine.LATENCY_TARGET = "fake_evaluators:sleeping_latency"
        os.environ["FAKE_LATENCY_S"] = str(args.latency_sleep)
    spec = parse_study(study(work / "run", log, args.slots, args.trials, budget, args.min_s,
                             args.max_s, repo, args.ahead), label="bench")
    t0 = time.monotonic()
    result = SearchEngine(spec, num_cpus=args.slots + 1).run()
    wall = time.monotonic() - t0
    evals = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    start = min(e["start"] for e in evals)
    span = max(e["end"] for e in evals) - start
    busy = sum(e["end"] - e["start"] for e in evals)
    import optuna

    from nas.engine import open_storage

    trials = optuna.load_study(study_name=spec.name, storage=open_storage(spec, work / "run")).trials
    measured = sum(1 for t in trials if "latency_ms" in t.user_attrs
                   and t.user_attrs.get("reused_from") is None
                   and t.user_attrs.get("latency_source", "measured") == "measured")
    return {"latency": kind, "trials": len(trials),
            "evaluations": len(evals), "latencies_measured": measured,
            "eval_s": round(busy, 1), "span_s": round(span, 1), "wall_s": round(wall, 1),
            "utilisation": round(busy / (args.slots * span), 3),
            "done": result.progress.done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=HERE.parent,
                    help="checkout whose engine to measure (e.g. a git worktree of an old commit)")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--min-s", type=float, default=2.0)
    ap.add_argument("--max-s", type=float, default=8.0)
    ap.add_argument("--latency-sleep", type=float, default=None,
                    help="a stand-in measurement that sleeps this long instead of measuring")
    ap.add_argument("--ahead", type=int, default=None,
                    help="latency.ahead: configs priced ahead of training (default: slots)")
    ap.add_argument("--runs", default="none,budget")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    repo = args.repo.resolve()
    path = os.environ.get("PYTHONPATH", "")
    if not path.startswith(f"{repo}{os.pathsep}") or Path.cwd() != repo:
        # Ray's workers unpickle `nas.executor` before any path the driver hands them applies, and
        # put the driver's working directory first: re-run from the checkout, with it on PYTHONPATH
        os.environ["PYTHONPATH"] = os.pathsep.join([str(repo), str(TESTS), path])
        os.chdir(repo)
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])
    import nas

    engine_file = Path(nas.__file__).resolve().parent / "engine.py"
    assert engine_file.is_relative_to(repo), f"nas imported from {engine_file}, not {repo}"
    commit = os.popen(f"git -C {repo} rev-parse --short HEAD").read().strip()
    load = os.getloadavg()
    print(f"# engine: {repo} ({commit}); {args.slots} slots, {args.trials} trials, evaluations "
          f"{args.min_s:g}-{args.max_s:g} s; latency: "
          + (f"sleeping stand-in {args.latency_sleep:g} s" if args.latency_sleep else
             "measured (measure_latency, 1 thread, 5+20 forwards, 64x64)")
          + f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = [run(kind, args, repo) for kind in args.runs.split(",")]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"commit": commit, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
