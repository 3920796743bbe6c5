"""The search with a zero-cost score (issue 26, item 5): studies/zero_cost_cpu.yaml's study
(`[naswot, flops]` on xt_t, 4 GMACs and 20M params, the `naswot` evaluator at batch 16 and 64x64)
through the real engine, per strategy: where the driver's time goes and the front it finds.

    python benchmarks/bench_zero_cost_search.py --quick          # smoke run: the 72-config space, 1-2 min
    taskset -c 1 python benchmarks/bench_zero_cost_search.py     # 3 strategies x 3 seeds x 50 trials, ~25 min
    python benchmarks/bench_zero_cost_search.py --strategies default random --seeds 5 --trials 100

Each strategy is a study-file `sampler:` setting (`default` = no `sampler` key, which for
`[naswot, flops]` is `frontier`: nas.study.default_sampler); each runs for `--seeds` seeds,
`parallel: 1`, `trials_count: trained`, one local Ray for the whole process, the run directory in
/dev/shm, the engine's fvcore cross-check of trial 0 off (bench_search_efficiency's helpers).

Where the driver's time goes, per run: `wall_s` (SearchEngine.run), `propose_s` (the proposer's
`propose`, every call, timed in the driver as bench_search_scale.py does, whatever the strategy),
`observe_s` (the proposer told of a finished trial: a shadow Optuna study's tell, frontier's
bookkeeping), `wait_s` (the driver blocked on Ray for a worker: model build, the batch, the
proxy, the round trip), `eval_s` (the sum of the trials' `eval_wall_s`: the proxy's computation
alone, as the evaluator times it) and `other_s` (wall less propose, observe and wait: pricing,
storage, Ray's dispatch). With `parallel: 1` nothing overlaps, so these add up to the wall time.

The front: there is no exact one (scoring the 76k configs with the proxy would take days), so the
hypervolume of a run's first 25 / 50 / 100 trained trials (`hv_25` ...) is relative to the union
front of all runs of the invocation (every strategy and seed), with the reference point the worst
naswot and the largest flops any run trained. A ratio of 1.0 is that union front, not the optimum.

Raw runs go to bench_out/zero_cost_search/ (an interrupted benchmark continues where it stopped:
a run already there is not run again); when all are done, one line per (strategy, seed) is appended
to `--results` (benchmarks/results/zero_cost_search.jsonl; `--quick`: bench_out only), all of them
with the same `batch` (the invocation's start), which a doc's table selects by.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_search_efficiency as bse  # noqa: E402

STUDY = "studies/zero_cost_cpu.yaml"
QUICK_SPACE = "studies/spaces/quickstart.yaml"       # 72 configs, 7-31 MMACs
QUICK_CONSTRAINTS = {"flops": 20e6, "params": 1.2e6}
CHECKPOINTS = (25, 50, 100)
OUT = REPO / "bench_out" / "zero_cost_search"
RESULTS = REPO / "benchmarks" / "results" / "zero_cost_search.jsonl"
STRATEGIES = ["default", "random", "{name: tpe, multivariate: true}"]


# ----------------------------------------------------------------------------------- timers
class Timers:
    """Seconds the driver spends in the proposer's `propose` / `observe` (frontier's and the
    Optuna samplers' shadow proposer alike) and blocked in `Executor.wait`, while installed."""

    def __init__(self):
        self.propose: list[float] = []
        self.observe = 0.0
        self.wait = 0.0
        self._saved: list[tuple] = []

    def _wrap(self, cls, name: str, record) -> None:
        original = getattr(cls, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record(time.perf_counter() - t0)

        self._saved.append((cls, name, original))
        setattr(cls, name, timed)

    def __enter__(self) -> "Timers":
        from nas.executor import Executor
        from nas.search import frontier, proposals

        for cls in (frontier.FrontierProposer, proposals.ShadowProposer):
            self._wrap(cls, "propose", self.propose.append)
            self._wrap(cls, "observe", lambda s: setattr(self, "observe", self.observe + s))
        self._wrap(Executor, "wait", lambda s: setattr(self, "wait", self.wait + s))
        return self

    def __exit__(self, *exc) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved.clear()


# ----------------------------------------------------------------------------------- one run
def study_mapping(sampler: dict | None, seed: int, trials: int, out: Path, quick: bool) -> dict:
    """studies/zero_cost_cpu.yaml with the strategy, seed and trial count, one trial at a time."""
    import yaml

    data = yaml.safe_load((REPO / STUDY).read_text())
    data.pop("sampler", None)
    data["space"] = str(REPO / QUICK_SPACE) if quick else str((REPO / STUDY).parent / data["space"])
    if quick:
        data["constraints"] = dict(QUICK_CONSTRAINTS)
    data.update(name=re.sub(r"[^A-Za-z0-9_.-]", ".", f"zc-{bse.strategy_label(sampler)}-{seed}"),
                seed=seed, trials=trials, trials_count="trained", parallel=1, resources={"cpus": 1},
                fvcore_check_every=0, output_dir=str(out))
    if sampler is not None:
        data["sampler"] = dict(sampler)
    return data


def run_study(sampler: dict | None, seed: int, trials: int, quick: bool, workdir: str | None) -> dict:
    """One study through the engine: its trained trials' objective values and its time split."""
    import optuna
    from optuna.trial import TrialState

    from nas.engine import open_storage
    from nas.study import parse_study

    out = Path(tempfile.mkdtemp(prefix="bench-zc-", dir=workdir))
    try:
        spec = parse_study(study_mapping(sampler, seed, trials, out, quick), label="bench")
        load = os.getloadavg()[0]
        with Timers() as timers:
            t0 = time.perf_counter()
            bse._search_engine()(spec).run()
            wall = time.perf_counter() - t0
        stored = optuna.load_study(study_name=spec.name, storage=open_storage(spec, out)).get_trials()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stored = sorted(stored, key=lambda t: t.number)
    trained = [t for t in stored if t.state == TrialState.COMPLETE and t.user_attrs.get("reused_from") is None]
    eval_s = sum(float(t.user_attrs.get("eval_wall_s") or 0.0) for t in trained)
    propose = np.asarray(timers.propose or [0.0])
    return {"sampler": spec.sampler_name, "objectives": list(spec.objectives),
            "directions": list(spec.directions),
            "values": [[float(v) for v in t.values] for t in trained],
            "trained": len(trained), "trials": len(stored),
            "failed": sum(t.state == TrialState.FAIL for t in stored),
            "wall_s": round(wall, 2), "trials_per_s": round(len(stored) / wall, 3),
            "trained_per_s": round(len(trained) / wall, 3),
            "proposals": len(timers.propose), "propose_s": round(float(propose.sum()), 2),
            "propose_median_s": round(float(np.median(propose)), 4),
            "propose_max_s": round(float(propose.max()), 4),
            "observe_s": round(timers.observe, 2), "wait_s": round(timers.wait, 2),
            "eval_s": round(eval_s, 2),
            "other_s": round(wall - float(propose.sum()) - timers.observe - timers.wait, 2),
            "propose_share": round(float(propose.sum()) / wall, 3),
            "load": f"{load:.2f}-{os.getloadavg()[0]:.2f}",
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": bse._commit()}


# --------------------------------------------------------------------------------- the front
def minimised(values, directions) -> np.ndarray:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=float).reshape(-1, len(directions)) * signs


def union_front(runs: list[dict]) -> tuple[np.ndarray, float]:
    """(reference point, hypervolume of the union front) over every run's trained trials, in
    minimisation form: the reference is the worst value of each objective any run trained."""
    from reports.pareto import hypervolume, pareto_mask

    points = np.concatenate([minimised(r["values"], r["directions"]) for r in runs if r["values"]])
    reference = points.max(axis=0)
    return reference, hypervolume(points[pareto_mask(points)], reference)


def hv_at(run: dict, reference: np.ndarray, union_hv: float, checkpoints=CHECKPOINTS) -> dict:
    """{hv_k: hypervolume of the first k trained trials / the union front's} (None past the run's
    trained trials), and `hv_final`, that of all of them."""
    series = bse.hypervolume_series(minimised(run["values"], run["directions"]), reference) / union_hv
    out = {f"hv_{k}": round(float(series[k - 1]), 3) if len(series) >= k else None
           for k in checkpoints if k <= run["target_trials"]}
    out["hv_final"] = round(float(series[-1]), 3) if len(series) else 0.0
    return out


# -------------------------------------------------------------------------------------- main
def _done(raw: Path) -> dict[tuple, dict]:
    done = {}
    if raw.exists():
        for line in raw.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["strategy"], r["seed"], r["target_trials"], r["quick"])] = r
    return done


def table(lines: list[dict]) -> str:
    head = ["strategy", "seed", "wall_s", "trials_per_s", "propose_s", "wait_s", "eval_s", "other_s",
            "propose_share"] + [k for k in (f"hv_{c}" for c in CHECKPOINTS) if any(k in r for r in lines)] + \
        ["hv_final"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in lines:
        out.append("| " + " | ".join("-" if r.get(k) is None else str(r[k]) for k in head) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES,
                    help="`default` (no sampler key), a sampler name, or a YAML sampler mapping")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=50,
                    help="trained trials per run (a naswot trial of xt_t takes about 1 s on the idle "
                         "2-core machine: 3 x 3 x 100 took 14 minutes alone)")
    ap.add_argument("--results", default=None,
                    help=f"where the lines go (default {RESULTS.relative_to(REPO)}; --quick: bench_out)")
    ap.add_argument("--raw", default=None, help="the runs as they finish (default under bench_out/)")
    ap.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the studies' run directories go")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: the 72-config quickstart space (20 MMACs, 1.2M params), 1 seed, 12 trials")
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.seeds, args.trials = 1, 12
    tag = "quick" if args.quick else "runs"
    results = Path(args.results or (OUT / "quick-results.jsonl" if args.quick else RESULTS))
    raw = Path(args.raw or OUT / f"{tag}.jsonl")
    raw.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    batch = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"zero-cost search: {batch}, commit {bse._commit()}, {os.cpu_count()} CPUs, affinity "
          f"{sorted(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}", flush=True)
    strategies = [bse.parse_strategy(s) for s in args.strategies]
    done = _done(raw)
    runs = []
    executor = None
    try:
        with bse.fvcore_check_off():
            for seed in range(args.seeds):                # seed-major: every strategy per seed
                for sampler in strategies:
                    key = (bse.strategy_label(sampler), seed, args.trials, args.quick)
                    if key in done:
                        runs.append(done[key])
                        continue
                    if executor is None:                   # one local Ray for every study
                        from nas.executor import Executor

                        executor = Executor(num_cpus=1)
                        executor.start()
                    r = run_study(sampler, seed, args.trials, args.quick, args.workdir)
                    r.update(strategy=key[0], seed=seed, target_trials=args.trials, quick=args.quick)
                    with open(raw, "a") as fh:
                        fh.write(json.dumps(r) + "\n")
                    runs.append(r)
                    print(f"  {key[0]:<28} seed {seed}: {r['trained']} trained in {r['wall_s']:.1f} s "
                          f"({r['trials_per_s']:.2f} trials/s): propose {r['propose_s']:.1f} s, wait "
                          f"{r['wait_s']:.1f} s (proxy {r['eval_s']:.1f} s), other {r['other_s']:.1f} s, "
                          f"load {r['load']}", flush=True)
    finally:
        if executor is not None:
            executor.shutdown()
    reference, union_hv = union_front(runs)
    command = "python benchmarks/bench_zero_cost_search.py" + (" " + " ".join(
        a if re.fullmatch(r"[\w./:=-]+", a) else repr(a) for a in argv) if argv else "")
    lines = []
    for r in runs:
        line = {k: r[k] for k in ("strategy", "seed", "sampler", "trained", "trials", "failed", "wall_s",
                                  "trials_per_s", "proposals", "propose_s", "propose_median_s",
                                  "propose_max_s", "observe_s", "wait_s", "eval_s", "other_s",
                                  "propose_share")}
        line.update(hv_at(r, reference, union_hv))
        line.update(study=STUDY, space=QUICK_SPACE if args.quick else "studies/spaces/xt_t.yaml",
                    objectives=r["objectives"], reference=[round(float(x), 4) for x in reference],
                    union_hv=float(f"{union_hv:.6g}"), hv_of="union front of the batch's runs",
                    batch=batch, command=command, date=r["date"], load=r["load"], commit=r["commit"],
                    cpus=os.cpu_count(), affinity=len(os.sched_getaffinity(0)))
        lines.append(line)
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    print(table(lines))
    print(f"{len(lines)} lines to {results} (batch {batch}); load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
