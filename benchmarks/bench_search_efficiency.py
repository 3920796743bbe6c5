"""Search efficiency: how much of the exact Pareto front's hypervolume each sampling strategy finds
after 25, 50, 100, 200 and 300 trained trials, through the real engine.

    python benchmarks/bench_search_efficiency.py --quick                  # smoke run, ~1 min
    nice -n 19 python benchmarks/bench_search_efficiency.py               # the full tables
    python benchmarks/bench_search_efficiency.py --strategies default random "{name: tpe, multivariate: true}"
    python benchmarks/bench_search_efficiency.py --table-only             # print tables from the results file

For each scenario (space, objectives, budgets) and accuracy landscape (benchmarks/landscapes.py, or
`module:attribute`), the space is enumerated once (cached under bench_out/), every config within the
budgets is scored, and the exact feasible front and its hypervolume are computed. The reference
point is the worst feasible accuracy and the largest feasible value of each cost objective.

Each strategy is a study-file `sampler:` setting (`default` = no `sampler` key); each is run for
`--seeds` seeds through `SearchEngine` (one local Ray for the whole process, studies sequential,
`parallel: 1` so a seed's run is reproducible; `--parallel N`: N trials at once), with an evaluator that returns the landscape's
accuracy at once. A study's hypervolume after k trials is that of its first k trained (counted)
trials' feasible results, against the exact one. Random search is always run beside the others.

`--noise` adds seeded Gaussian noise to every trained value, its variance a given share of the
variance of the feasible accuracies (`0.25`, `1`), or `real`: the seed-to-seed noise of the real
trainings behind the surrogate (two seeds per architecture in benchmarks/data/surrogate_trainings.jsonl).
A noisy run is scored as a user would see it: the configs on its *observed* front, at their
*true* (noise-free) accuracies, against the exact front (`hv_ratio_true`).

One JSON line per run goes to `--results` (default bench_out/search_efficiency/results.jsonl); a run
already there is not run again, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):     # `landscapes` must import here and in Ray workers
    if _p not in sys.path:
        sys.path.insert(0, _p)

import landscapes  # noqa: E402

CHECKPOINTS = (25, 50, 100, 200, 300)
TARGETS = (0.90, 0.95, 0.99)
OUT = REPO / "bench_out" / "search_efficiency"
EVALUATOR = "landscapes:LandscapeEvaluator"
COST_KEYS = ("flops", "flops_paper", "params", "memory_mb")


@dataclass(frozen=True)
class Scenario:
    name: str
    space: str                      # a space file, relative to the repository
    objectives: tuple               # accuracy first, then cost-model metrics
    constraints: dict = field(default_factory=dict)


SCENARIOS = {
    # the study: xt_t, [accuracy, params], FLOPs budget 4 GMACs
    "params-flops4G": Scenario("params-flops4G", "studies/spaces/xt_t.yaml", ("accuracy", "params"),
                               {"flops": 4e9}),
    "flops-params25M": Scenario("flops-params25M", "studies/spaces/xt_t.yaml", ("accuracy", "flops"),
                                {"params": 25e6}),
    "3obj-flops5G": Scenario("3obj-flops5G", "studies/spaces/xt_t.yaml",
                             ("accuracy", "params", "flops"), {"flops": 5e9}),
    # a space no landscape or default was tuned on: studies/spaces/wide.yaml, 1,283,040 configs
    # from OverLoCK-XT to -B at 224x224; 8 GMACs leaves XT and T and 662,832 configs (52 %)
    "wide-params-flops8G": Scenario("wide-params-flops8G", "studies/spaces/wide.yaml",
                                    ("accuracy", "params"), {"flops": 8e9}),
    # landscape (b): the surrogate of real trainings (benchmarks/landscape_real.py) on its own space
    # (8,640 configs at 32x32); 4 MMACs leaves about half of it
    "surrogate-params-flops4M": Scenario("surrogate-params-flops4M", "benchmarks/spaces/surrogate.yaml",
                                         ("accuracy", "params"), {"flops": 4e6}),
    # 72 configs: the smoke run and the test
    "quickstart": Scenario("quickstart", "studies/spaces/quickstart.yaml", ("accuracy", "flops"),
                           {"flops": 20e6, "params": 1.2e6}),
}


# ------------------------------------------------------------------------------ exact front
def _file_digest(*paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def _landscape_digest(name: str) -> str:
    """Changes when the landscape changes, so a cache is not stale: its module's source and every
    file a module-level `Path` names (a fitted surrogate's model file)."""
    fn = landscapes.get_landscape(name)
    module = sys.modules[fn.__module__]
    data = sorted(str(v) for v in vars(module).values() if isinstance(v, Path) and v.is_file())
    return _file_digest(inspect.getsourcefile(fn), *data)


def enumerate_space(space_path: str, landscape_names: list[str], cache_dir: Path = OUT / "cache") -> dict:
    """Every config of the space: its cost metrics and its accuracy on each landscape, as arrays.

    Cached on disk, keyed by the space file, the cost model's source and each landscape's source.
    """
    import space as space_pkg

    cost_key = _file_digest(REPO / space_path, inspect.getsourcefile(space_pkg.complexity))
    cache_dir.mkdir(parents=True, exist_ok=True)
    cost_file = cache_dir / f"{Path(space_path).stem}-cost-{cost_key}.npz"
    acc_files = {n: cache_dir / f"{Path(space_path).stem}-{n.replace(':', '.')}-{cost_key}-"
                 f"{_landscape_digest(n)}.npy" for n in landscape_names}
    todo = [n for n, f in acc_files.items() if not f.exists()]
    if cost_file.exists() and not todo:
        data = dict(np.load(cost_file))
        data.update({f"acc:{n}": np.load(f) for n, f in acc_files.items()})
        return data
    space = space_pkg.load_space(REPO / space_path)
    fns = {n: landscapes.get_landscape(n) for n in landscape_names}
    metrics = {k: [] for k in COST_KEYS}
    accs = {n: [] for n in landscape_names}
    for config in space.enumerate():
        cost = space_pkg.complexity(config)
        for k, v in cost.as_metrics().items():
            metrics[k].append(v)
        for n in landscape_names:
            accs[n].append(landscapes.score(fns[n], config, cost))
    data = {k: np.asarray(v, dtype=float) for k, v in metrics.items()}
    np.savez(cost_file, **data)
    for n in landscape_names:
        np.save(acc_files[n], np.asarray(accs[n], dtype=float))
        data[f"acc:{n}"] = np.asarray(accs[n], dtype=float)
    return data


def minimised(values: np.ndarray, objectives) -> np.ndarray:
    """(n, k) objective values in minimisation form: accuracy negated, costs as they are."""
    signs = np.array([-1.0 if o == "accuracy" else 1.0 for o in objectives])
    return np.asarray(values, dtype=float).reshape(-1, len(objectives)) * signs


@dataclass
class ExactFront:
    reference: np.ndarray           # minimisation form
    front: np.ndarray               # (m, k) minimisation form, the exact feasible front
    hypervolume: float
    feasible: int
    size: int


def exact_front(table: dict, scenario: Scenario, landscape: str) -> ExactFront:
    """The exact feasible Pareto front of a scenario on one landscape, and its hypervolume."""
    from reports.pareto import hypervolume, pareto_mask

    ok = np.ones(len(table["flops"]), dtype=bool)
    for name, budget in scenario.constraints.items():
        ok &= table[name] <= budget
    columns = [table[f"acc:{landscape}"] if o == "accuracy" else table[o] for o in scenario.objectives]
    points = minimised(np.stack(columns, axis=1)[ok], scenario.objectives)
    reference = points.max(axis=0)  # worst feasible accuracy, largest feasible cost
    front = points[pareto_mask(points)]
    return ExactFront(reference, front, hypervolume(front, reference), int(ok.sum()), len(ok))


def hypervolume_series(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Hypervolume of the first k points (minimisation form), k = 1..n."""
    from reports.pareto import hypervolume_history

    if not len(points):
        return np.zeros(0)
    return hypervolume_history(np.minimum(points, reference), reference)


# ------------------------------------------------------------------------------- strategies
def parse_strategy(text: str) -> dict | None:
    """`default` (no sampler key), a sampler name, or a YAML mapping such as
    `{name: tpe, multivariate: true}`."""
    import yaml

    if text == "default":
        return None
    value = yaml.safe_load(text)
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise SystemExit(f"--strategies: {text!r} is not `default`, a sampler name or a mapping with `name`")
    return value


def strategy_label(sampler: dict | None) -> str:
    if sampler is None:
        return "default"
    options = ",".join(f"{k}={v}" for k, v in sampler.items() if k != "name")
    return f"{sampler['name']}({options})" if options else sampler["name"]


# ----------------------------------------------------------------------------------- one run
def study_mapping(scenario: Scenario, landscape: str, sampler: dict | None, seed: int, trials: int,
                  out: Path, noise_sd: float = 0.0, parallel: int = 1, cpus: float = 2.0,
                  rungs: list | None = None) -> dict:
    name = re.sub(r"[^A-Za-z0-9_.-]", ".", f"se-{scenario.name}-{landscape}-{seed}")
    evaluator = {"name": EVALUATOR, "landscape": landscape}
    if noise_sd:
        evaluator["noise_sd"] = noise_sd
    if rungs:
        evaluator["rungs"] = list(rungs)
    data = {"name": name, "space": str(REPO / scenario.space),
            "objectives": list(scenario.objectives), "constraints": dict(scenario.constraints),
            "evaluator": evaluator, "seed": seed,
            "trials": trials, "trials_count": "trained", "parallel": parallel,
            "resources": {"cpus": 1 if parallel == 1 else cpus / parallel},
            "fvcore_check_every": 0, "output_dir": str(out)}
    if sampler is not None:
        data["sampler"] = dict(sampler)
    return data


def _search_engine():
    try:
        from nas.engine import SearchEngine
    except ImportError:                 # after the driver split
        from nas.search import SearchEngine
    return SearchEngine


@contextlib.contextmanager
def fvcore_check_off(off: bool = True):
    """Turn off the engine's fvcore cross-check of trial 0 while the block runs (it builds and
    traces a full model: seconds per study at 224x224, minutes on a loaded machine, and changes no
    search decision). Yields whether it is off: the engine must expose `wants_check` (it does
    after the driver split); otherwise the check stays on."""
    import nas.engine

    original = getattr(nas.engine, "wants_check", None)
    if not off or original is None:
        yield False
        return
    nas.engine.wants_check = lambda number, every: False
    try:
        yield True
    finally:
        nas.engine.wants_check = original


def run_study(scenario: Scenario, landscape: str, sampler: dict | None, seed: int, trials: int,
              exact: ExactFront, workdir: str | None = None, noise_sd: float = 0.0, parallel: int = 1,
              cpus: float = 2.0, rungs: list | None = None) -> dict:
    """Run one study through the engine and measure it against the exact front."""
    import optuna

    from nas.engine import open_storage
    from nas.study import parse_study

    out = Path(tempfile.mkdtemp(prefix="bench-se-", dir=workdir))
    try:
        spec = parse_study(study_mapping(scenario, landscape, sampler, seed, trials, out, noise_sd,
                                         parallel, cpus, rungs),
                           label="bench")
        t0 = time.perf_counter()
        _search_engine()(spec).run()
        wall = time.perf_counter() - t0
        stored = optuna.load_study(study_name=spec.name, storage=open_storage(spec, out)).get_trials()
        return summarise(stored, scenario, exact, wall, landscape if noise_sd else None)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def draw_reasons(trials, budgets: dict) -> dict:
    """{reason: count} of the draws not trained for a budget: the proposer's `rejected_draws`
    (draws rejected before a trial was created) plus the PRUNED `infeasible` trials, by each
    budget they broke."""
    from nas.storage import named_constraints

    reasons: dict[str, int] = {}
    for t in trials:
        for reason, count in (t.user_attrs.get("rejected_draws") or {}).items():
            reasons[f"rejected:{reason}"] = reasons.get(f"rejected:{reason}", 0) + int(count)
        if t.user_attrs.get("infeasible"):     # one reason per draw: the first budget it breaks
            broken = [k for k, v in named_constraints(t, budgets).items() if v > 0] or ["other"]
            reasons[f"trial:{broken[0]}"] = reasons.get(f"trial:{broken[0]}", 0) + 1
    return reasons


def summarise(trials, scenario: Scenario, exact: ExactFront, wall_s: float,
              true_landscape: str | None = None) -> dict:
    """Hypervolume ratio after each trained trial, draws and their fate, engine speed; with
    `true_landscape` (a noisy run) also `hv_ratio_true`, that of the observed front's configs at
    their noise-free accuracies."""
    from optuna.trial import TrialState

    trials = sorted(trials, key=lambda t: t.number)
    trained = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("reused_from") is None]
    points = minimised([t.values for t in trained], scenario.objectives) if trained else np.zeros((0, 2))
    ratio = hypervolume_series(points, exact.reference) / exact.hypervolume
    # a repeat of an over-budget config is a draw over budget too (it reuses the PRUNED record)
    infeasible = sum(bool(t.user_attrs.get("infeasible")) for t in trials)
    repeats = sum(t.user_attrs.get("reused_from") is not None for t in trials)
    repeats_over = sum(t.user_attrs.get("reused_from") is not None and bool(t.user_attrs.get("infeasible"))
                       for t in trials)
    rejected = sum(sum((t.user_attrs.get("rejected_draws") or {}).values()) for t in trials)
    draws = len(trials) + rejected
    return {"trained": len(trained), "trials": len(trials), "draws": draws,
            "over_budget": infeasible + rejected, "infeasible_trials": infeasible,
            "rejected_draws": rejected, "repeats": repeats, "repeats_over_budget": repeats_over,
            "reasons": draw_reasons(trials, scenario.constraints),
            "hv_ratio": [round(float(r), 5) for r in ratio], "wall_s": round(wall_s, 2),
            **({"hv_ratio_true": [round(float(r), 5) for r in true_front_ratio(
                trained, scenario, exact, true_landscape)]} if true_landscape else {}),
            "trials_per_s": round(len(trials) / wall_s, 2), "trained_per_s": round(len(trained) / wall_s, 2)}


def true_front_ratio(trained, scenario: Scenario, exact: ExactFront, landscape: str) -> np.ndarray:
    """After each of the first k trained trials: the hypervolume of the configs on the front of the
    values observed so far, taken at their true (noise-free) accuracies, over the exact one."""
    from overlock.config import OverLoCKConfig
    from reports.pareto import hypervolume, pareto_mask

    fn = landscapes.get_landscape(landscape)
    observed = minimised([t.values for t in trained], scenario.objectives)
    true = observed.copy()
    column = list(scenario.objectives).index("accuracy")
    for i, t in enumerate(trained):
        true[i, column] = -landscapes.score(fn, OverLoCKConfig.from_dict(t.user_attrs["config"]))
    out = np.zeros(len(trained))
    for k in range(1, len(trained) + 1):
        on_front = pareto_mask(observed[:k])
        out[k - 1] = hypervolume(np.minimum(true[:k][on_front], exact.reference), exact.reference)
    return out / exact.hypervolume


def noise_sd(table: dict, scenario: Scenario, landscape: str, level: str) -> float:
    """The noise's standard deviation: `level` x the variance of the feasible accuracies, or
    `real`, the seed-to-seed standard deviation of the real trainings (two seeds each)."""
    if level == "real":
        pairs = [json.loads(line)["accuracy"] for line in
                 (HERE / "data" / "surrogate_trainings.jsonl").read_text().splitlines() if line.strip()]
        diffs = np.array([a[0] - a[1] for a in pairs if len(a) >= 2])
        return float(diffs.std() / np.sqrt(2))
    ok = np.ones(len(table["flops"]), dtype=bool)
    for name, budget in scenario.constraints.items():
        ok &= table[name] <= budget
    return float(np.sqrt(float(level) * table[f"acc:{landscape}"][ok].var()))


def variant(landscape: str, level: str) -> str:
    """A landscape's label in the results: `ridge`, or `ridge~0.25` with noise."""
    return landscape if level in ("0", "0.0") else f"{landscape}~{level}"


# ------------------------------------------------------------------------------------ tables
def trials_to_reach(ratio: list[float], target: float) -> float:
    for k, r in enumerate(ratio, start=1):
        if r >= target - 1e-12:
            return float(k)
    return float("inf")


def ratio_at(ratio: list[float], k: int) -> float:
    """The ratio after k trained trials (NaN when the run trained fewer: the space ran out)."""
    if not ratio:
        return 0.0
    return ratio[k - 1] if len(ratio) >= k else float("nan")


def _median_iqr(values) -> str:
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if not len(v):
        return "-"
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"{med:.3f} [{q1:.3f}-{q3:.3f}]"


def _median_trials(values, limit: int) -> str:
    v = np.asarray(values, dtype=float)
    med = np.median(v)      # inf (not reached) sorts last, so the median is exact while < half are
    reached = int(np.isfinite(v).sum())
    return (f"{med:.0f}" if np.isfinite(med) else f">{limit}") + f" ({reached}/{len(v)})"


def table(rows: list[dict], trials: int) -> str:
    """A markdown table per (scenario, landscape): one row per strategy."""
    lines = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["landscape"]), []).append(r)
    for (scenario, landscape), group in groups.items():
        first = group[0]
        lines += ["", f"### {scenario} on `{landscape}`: exact front {first['front_size']} configs of "
                      f"{first['feasible']} feasible ({first['space_size']} in the space)", ""]
        marks = [k for k in CHECKPOINTS if k <= trials]
        head = ["strategy", "seeds"] + [f"HV@{k}" for k in marks] + [f"to {t:.2f}" for t in TARGETS] + \
            ["trials over budget", "draws rejected", "repeats", "trials/s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        by_strategy: dict[str, list[dict]] = {}
        for r in group:
            by_strategy.setdefault(r["strategy"], []).append(r)
        for strategy in sorted(by_strategy, key=lambda s: (s == "random", s)):
            runs = by_strategy[strategy]
            cells = [strategy, str(len(runs))]
            scored = [r.get("hv_ratio_true", r["hv_ratio"]) for r in runs]
            cells += [_median_iqr([ratio_at(ratio, k) for ratio in scored]) for k in marks]
            cells += [_median_trials([trials_to_reach(ratio[:trials], t) for ratio in scored], trials)
                      for t in TARGETS]
            # trials PRUNED over a budget (of the study's trials); draws the proposer rejected
            # before a trial was created (of all draws)
            over = sum(r["infeasible_trials"] for r in runs) / max(1, sum(r["trials"] for r in runs))
            rejected = sum(r["rejected_draws"] for r in runs) / max(1, sum(r["draws"] for r in runs))
            cells += [f"{over:.1%}", f"{rejected:.1%}", f"{np.median([r['repeats'] for r in runs]):.0f}",
                      f"{np.median([r['trials_per_s'] for r in runs]):.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        reasons = {}
        for r in group:
            for k, v in r["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        if reasons:
            lines.append("")
            lines.append("draws over budget by reason (all runs): " +
                         ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    return "\n".join(lines)


def _rounded(value) -> float | None:
    return None if value is None else round(float(value), 3)


def write_summary(rows: list[dict], args, path: Path) -> None:
    """One line per (scenario, landscape, strategy) of `rows`: what the docs quote."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["landscape"], r["strategy"]), []).append(r)
    argv = [a for a in (args.argv or []) if a != "--table-only"]
    labels = ("--summary", "--study")        # where the lines go and what they are called
    command = "python benchmarks/bench_search_efficiency.py " + " ".join(
        a for i, a in enumerate(argv) if a not in labels and (i == 0 or argv[i - 1] not in labels))
    with open(path, "a") as fh:
        for (scenario, landscape, strategy), runs in groups.items():
            scored = [r.get("hv_ratio_true", r["hv_ratio"]) for r in runs]
            at = [ratio_at(ratio, args.trials) for ratio in scored]
            line = {"scenario": scenario, "landscape": landscape, "strategy": summary_label(scenario, strategy),
                    "noise_sd": round(float(runs[0].get("noise_sd", 0.0)), 5), "seeds": len(runs),
                    f"hv_{args.trials}": _rounded(np.nanmedian(at) if not np.all(np.isnan(at)) else None),
                    f"hv_{args.trials}_min": _rounded(np.nanmin(at) if not np.all(np.isnan(at)) else None),
                    "hv_final": _rounded(np.median([x[-1] for x in scored if x])),
                    "trained": int(np.median([r["trained"] for r in runs])),
                    "trials_to_0.90": _median_trials([trials_to_reach(x, 0.90) for x in scored], args.trials).split()[0],
                    "trials_to_0.95": _median_trials([trials_to_reach(x, 0.95) for x in scored], args.trials).split()[0],
                    "scored_by": "true accuracy of the observed front" if "hv_ratio_true" in runs[0] else "observed values",
                    "command": command, "date": f"{min(r['date'] for r in runs)} - {max(r['date'] for r in runs)}",
                    "load": f"{min(r['load'] for r in runs)}-{max(r['load'] for r in runs)}",
                    "commit": sorted({r['commit'] for r in runs})}
            # the median at each earlier count, for "ahead at every count", and at 10: the end of
            # frontier's uniform start-up, where every strategy has drawn uniformly
            for k in (10,) + CHECKPOINTS:
                if k < args.trials:
                    at_k = [ratio_at(x, k) for x in scored]
                    line[f"hv_{k}"] = None if np.all(np.isnan(at_k)) else _rounded(np.nanmedian(at_k))
            _, bar, how = strategy.partition("|")       # random search run the same way (|parallel=16)
            line.update(paired_gaps(runs, groups.get((scenario, landscape, "random" + bar + how), []), args.trials))
            if args.study:
                line["study"] = args.study
            fh.write(json.dumps(line) + "\n")


def summary_label(scenario: str, strategy: str) -> str:
    """A strategy's name in a summary line: `default` (a study file with no `sampler` key) named
    by the sampler the study gets, without the run's `|parallel=16` / `|rungs=...` suffix (a `|`
    breaks a markdown table; the line's `study` says how it ran)."""
    name = strategy.partition("|")[0]
    if name != "default":
        return name
    from nas.study import default_sampler

    return default_sampler(list(SCENARIOS[scenario].objectives))[0]


def paired_gaps(runs: list[dict], random_runs: list[dict], trials: int) -> dict:
    """`gap_k` / `gap_k_se`: the mean over the seeds both ran of (this strategy's hypervolume ratio
    - random search's) after k trained trials, and its standard error. `frontier` starts from
    random search's draws on the same seed, so the pairs share their first trials and the gap is
    what the strategy added to them. None for random search itself and without two common seeds."""
    mine = bool(runs) and runs[0]["strategy"].partition("|")[0] != "random"
    by_seed = {r["seed"]: r.get("hv_ratio_true", r["hv_ratio"]) for r in random_runs}
    pairs = [(r.get("hv_ratio_true", r["hv_ratio"]), by_seed[r["seed"]])
             for r in runs if mine and r["seed"] in by_seed]
    out = {}
    for k in (10,) + CHECKPOINTS:
        if k > trials:
            break
        d = np.array([ratio_at(a, k) - ratio_at(b, k) for a, b in pairs])
        d = d[~np.isnan(d)]
        two = len(d) >= 2
        out[f"gap_{k}"] = _rounded(d.mean()) if two else None
        out[f"gap_{k}_se"] = _rounded(d.std(ddof=1) / np.sqrt(len(d))) if two else None
    return out


# -------------------------------------------------------------------------------------- main
def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        # a copy of the tree run away from its repository names its commit in this file
        stamp = REPO / "SNAPSHOT-STATUS.txt"
        lines = stamp.read_text().split() if stamp.exists() else []
        return f"snapshot of {lines[-1][:12]}" if lines else "unknown"


def _done(results: Path) -> dict[tuple, dict]:
    done = {}
    if results.exists():
        for line in results.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["scenario"], r["landscape"], r["strategy"], r["seed"], r["target_trials"])] = r
    return done


def run_all(args) -> list[dict]:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = _done(results)
    strategies = [parse_strategy(s) for s in args.strategies]
    if not any(s is not None and s["name"] == "random" and len(s) == 1 for s in strategies):
        strategies.append({"name": "random"})      # random search beside every strategy
    with fvcore_check_off(not args.fvcore_check) as fvcore_off:
        return _run_studies(args, results, done, strategies, fvcore_off)


def _run_studies(args, results: Path, done: dict, strategies: list, fvcore_off: bool) -> list[dict]:
    from nas.executor import Executor

    executor = None
    rows = []
    try:
        for scenario in (SCENARIOS[s] for s in args.scenarios):
            table_data = enumerate_space(scenario.space, args.landscapes, Path(args.cache_dir))
            fronts = {n: exact_front(table_data, scenario, n) for n in args.landscapes}
            for landscape, exact in fronts.items():
                print(f"{scenario.name} / {landscape}: {exact.size} configs, {exact.feasible} feasible, exact "
                      f"front {len(exact.front)} configs, HV {exact.hypervolume:.6g}", flush=True)
            variants = [(variant(n, level), n, noise_sd(table_data, scenario, n, level) if level != "0" else 0.0)
                        for n in args.landscapes for level in args.noise]
            # seed-major, so an interrupted benchmark has every strategy and landscape for its seeds
            for seed in range(args.seeds):
                for label, landscape, sd in variants:
                    exact = fronts[landscape]
                    for sampler in strategies:
                        key = (scenario.name, label, strategy_label(sampler) + (
                            f"|parallel={args.parallel}" if args.parallel > 1 else "") + (
                            f"|rungs={','.join(map(str, args.rungs))}" if args.rungs else ""), seed, args.trials)
                        if key in done:
                            rows.append(done[key])
                            continue
                        if executor is None:            # one local Ray for every study of the process
                            executor = Executor(num_cpus=args.cpus)
                            executor.start()
                        r = run_study(scenario, landscape, sampler, seed, args.trials, exact, args.workdir, sd,
                                      args.parallel, args.cpus, args.rungs)
                        r.update(fvcore_check=not fvcore_off, workdir=args.workdir or tempfile.gettempdir(),
                                 scenario=scenario.name, landscape=label, noise_sd=sd, strategy=key[2], seed=seed,
                                 target_trials=args.trials, exact_hv=exact.hypervolume,
                                 front_size=len(exact.front), feasible=exact.feasible,
                                 space_size=exact.size, commit=_commit(),
                                 date=datetime.datetime.now().isoformat(timespec="seconds"),
                                 load=round(os.getloadavg()[0], 2))
                        with open(results, "a") as fh:
                            fh.write(json.dumps(r) + "\n")
                        rows.append(r)
                        final = r.get("hv_ratio_true", r["hv_ratio"])
                        print(f"  {label} {key[2]:<28} seed {seed}: HV {final[-1] if final else 0:.3f} "
                              f"after {r['trained']} trained / {r['draws']} draws ({r['over_budget']} over "
                              f"budget), {r['wall_s']:.1f} s, {r['trials_per_s']:.1f} trials/s", flush=True)
    finally:
        if executor is not None:
            executor.shutdown()
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=["params-flops4G", "flops-params25M"],
                    choices=sorted(SCENARIOS))
    ap.add_argument("--landscapes", nargs="+", default=list(landscapes.LANDSCAPES),
                    help="names in benchmarks/landscapes.py or module:attribute")
    ap.add_argument("--strategies", nargs="+",
                    default=["default", "{name: tpe, multivariate: true}", "random"],
                    help="`default` (no sampler key), a sampler name, or a YAML sampler mapping")
    ap.add_argument("--noise", nargs="+", default=["0"],
                    help="noise levels: a share of the feasible accuracies' variance (0, 0.25, 1) or `real`")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rungs", nargs="+", type=int, default=None,
                    help="successive halving at these epoch budgets (the landscape's rungs read lower and "
                         "noisier than the last; benchmarks/landscapes.py)")
    ap.add_argument("--parallel", type=int, default=1,
                    help="trials running at once (each holds --cpus / --parallel CPUs of the local Ray)")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--results", default=str(OUT / "results.jsonl"))
    ap.add_argument("--cache-dir", default=str(OUT / "cache"), help="enumerated spaces (arrays)")
    ap.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the studies' run directories go (default /dev/shm: the journal's "
                         "fsync per write costs more than the whole trial on a disk)")
    ap.add_argument("--fvcore-check", action="store_true",
                    help="keep the engine's fvcore cross-check of trial 0 (off by default)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: the 72-config quickstart space, 3 seeds, 20 trials")
    ap.add_argument("--table-only", action="store_true", help="print the tables of --results, run nothing")
    ap.add_argument("--summary", default=None,
                    help="append one line per scenario, landscape and strategy (median hypervolume after "
                         "--trials, trials to 0.90 / 0.95, seeds, the command, dates and loads) to this "
                         "file, e.g. benchmarks/results/search_efficiency.jsonl")
    ap.add_argument("--study", default=None,
                    help="with --summary: a label for these lines (`study`), which a doc's table selects by")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.scenarios, args.seeds, args.trials = ["quickstart"], 3, 20
        if args.results == str(OUT / "results.jsonl"):
            args.results = str(OUT / "quick.jsonl")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"search efficiency: {datetime.datetime.now().isoformat(timespec='seconds')}, commit {_commit()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    if args.table_only:
        rows = [r for r in _done(Path(args.results)).values()
                if r["target_trials"] == args.trials and r["scenario"] in args.scenarios
                and r["landscape"] in [variant(n, level) for n in args.landscapes for level in args.noise]]
    else:
        rows = run_all(args)
    print(table(rows, args.trials))
    if args.summary:
        write_summary(rows, args, Path(args.summary))
    print(f"\nwall {time.perf_counter() - t0:.0f} s, load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
