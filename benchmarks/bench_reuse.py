"""Reuse across studies: how many new trainings study B needs to reach 0.90 / 0.95 of its exact
front's hypervolume when it starts from study A's results, against from scratch; and that nothing
is reused when the seed policy or an evaluator setting changed.

    python benchmarks/bench_reuse.py --quick                   # one seed, small studies, ~3 min
    nice -n 19 python benchmarks/bench_reuse.py --seeds 10     # the table (results: --results)
    python benchmarks/bench_reuse.py --table-only              # the summary lines of --runs

Through the real engine (`SearchEngine`, the default sampler, `parallel: 1`) on the search-efficiency
landscapes (benchmarks/landscapes.py, `ridge`; benchmarks/bench_search_efficiency.py enumerates the
space and computes each exact front). Per seed:

- study A: the issue's study (xt_t space, objectives [accuracy, params], flops <= 4 GMACs), `--a-trials`
  trained trials;
- study B, changed budget: [accuracy, params] with flops <= 3 GMACs; changed objective:
  [accuracy, flops] with flops <= 4 GMACs; looser budget: [accuracy, params] with flops <= 5 GMACs
  (where A knows nothing above 4). Each run twice: `reuse_from=[A's run directory]` and
  from scratch. B stops once its front reaches 0.95 of the exact hypervolume (or after
  `--b-trials` trainings). Trainings to a target count only new trainings: A's results within
  B's budgets are B's first trials, at zero trainings;
- the same changed-budget B with another study `seed` (the seed policy) and with another evaluator
  setting: the number of results reused must be 0 (`reused` in the results).

Per-run lines go to `--runs` (bench_out/reuse/runs.jsonl; a run already there is not run again);
the summary (median over seeds) to `--results` (benchmarks/results/reuse.jsonl), one line per B.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_search_efficiency as se  # noqa: E402

OUT = REPO / "bench_out" / "reuse"
LANDSCAPE = "ridge"
TARGETS = (0.90, 0.95)
A = se.Scenario("A", "studies/spaces/xt_t.yaml", ("accuracy", "params"), {"flops": 4e9})
B = {
    "changed budget": se.Scenario("B-budget", A.space, ("accuracy", "params"), {"flops": 3e9}),
    "changed objective": se.Scenario("B-objective", A.space, ("accuracy", "flops"), {"flops": 4e9}),
    # a looser budget: A knows nothing of the configs between 4 and 5 GMACs
    "looser budget": se.Scenario("B-looser", A.space, ("accuracy", "params"), {"flops": 5e9}),
}
# B variants where nothing may be reused: (label, study-file change)
NO_REUSE = {
    "changed seed policy": {"seed": 1000},
    "changed evaluator setting": {"evaluator": {"rung_sd": 0.02}},
}


def _spec(scenario: se.Scenario, seed: int, trials: int, out: Path, name: str, change: dict | None = None):
    from nas.study import parse_study

    data = se.study_mapping(scenario, LANDSCAPE, None, seed, trials, out)
    data["name"] = name
    for key, value in (change or {}).items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_study(data, label=name)


def ratios(trials, scenario: se.Scenario, exact: se.ExactFront) -> tuple[list[float], int]:
    """(hypervolume / exact after 0, 1, 2, ... new trainings, results reused from A): reused
    trials are known at zero trainings."""
    from optuna.trial import TrialState

    done = [t for t in sorted(trials, key=lambda t: t.number) if t.state == TrialState.COMPLETE]
    reused = [t for t in done if t.user_attrs.get("reused_from_study") is not None]
    trained = [t for t in done if t.user_attrs.get("reused_from_study") is None
               and t.user_attrs.get("reused_from") is None]
    ordered = reused + trained
    if not ordered:
        return [0.0], 0
    points = se.minimised([t.values for t in ordered], scenario.objectives)
    series = se.hypervolume_series(points, exact.reference) / exact.hypervolume
    start = float(series[len(reused) - 1]) if reused else 0.0
    return [round(start, 5)] + [round(float(r), 5) for r in series[len(reused):]], len(reused)


def trainings_to(series: list[float], target: float) -> int | None:
    return next((k for k, r in enumerate(series) if r >= target), None)


def run_b(spec, exact, scenario, reuse_from, stop_at: float | None) -> dict:
    from nas.engine import SearchEngine

    engine = SearchEngine(spec, reuse_from=reuse_from)
    said = []

    def watch(progress, line):
        if line is not None and line.startswith("reuse:"):
            said.append(line)
        if line is None or stop_at is None or engine.study is None:
            return
        series, _ = ratios(engine.study.get_trials(deepcopy=False), scenario, exact)
        if series[-1] >= stop_at:
            engine.request_stop()

    engine.on_progress = watch
    t0 = time.perf_counter()
    engine.run()
    wall = time.perf_counter() - t0
    series, reused = ratios(engine.study.get_trials(deepcopy=False), scenario, exact)
    return {"series": series, "reused": reused, "trainings": len(series) - 1, "wall_s": round(wall, 1),
            "said": said[0] if said else ""}


def _done(path: Path) -> dict:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["seed"], r["run"]): r for r in rows}


def run_seed(seed: int, args, exacts: dict, done: dict, runs: Path) -> None:
    from nas.engine import SearchEngine

    work = Path(args.workdir) / f"seed{seed}"
    a_dir = work / "a"

    def record(key: str, row: dict) -> None:
        row.update(seed=seed, run=key, date=datetime.datetime.now().isoformat(timespec="seconds"),
                   load=round(os.getloadavg()[0], 2))
        with open(runs, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        done[(seed, key)] = row
        print(f"seed {seed} {key}: {json.dumps({k: v for k, v in row.items() if k != 'series'})}", flush=True)

    pending = [k for k in ["A"] + [f"{b} {m}" for b in B for m in ("with A", "scratch")] + list(NO_REUSE)
               if (seed, k) not in done]
    if not pending:
        return
    if not (a_dir / "study.log").is_file() or "A" in pending:
        shutil.rmtree(a_dir, ignore_errors=True)
        t0 = time.perf_counter()
        SearchEngine(_spec(A, seed, args.a_trials, a_dir, f"a-{seed}")).run()
        if "A" in pending:
            record("A", {"trials": args.a_trials, "wall_s": round(time.perf_counter() - t0, 1)})
    for label, scenario in B.items():
        for mode in ("with A", "scratch"):
            key = f"{label} {mode}"
            if (seed, key) in done:
                continue
            out = work / key.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            spec = _spec(scenario, seed, args.b_trials, out, f"b-{seed}-{key.replace(' ', '-')}")
            r = run_b(spec, exacts[label], scenario, [str(a_dir)] if mode == "with A" else None, max(TARGETS))
            r.update({f"trainings_to_{t:.2f}": trainings_to(r["series"], t) for t in TARGETS})
            record(key, r)
            shutil.rmtree(out, ignore_errors=True)
    for label, change in NO_REUSE.items():
        if (seed, label) in done:
            continue
        out = work / label.replace(" ", "-")
        shutil.rmtree(out, ignore_errors=True)
        scenario = B["changed budget"]
        spec = _spec(scenario, seed, args.check_trials, out, f"b-{seed}-{label.replace(' ', '-')}", change)
        r = run_b(spec, exacts["changed budget"], scenario, [str(a_dir)], None)
        record(label, {"reused": r["reused"], "trainings": r["trainings"], "wall_s": r["wall_s"], "said": r["said"]})
        shutil.rmtree(out, ignore_errors=True)


def summary(done: dict, args) -> list[dict]:
    """One line per B: median trainings to each target with and without A, over the seeds."""
    seeds = sorted({s for s, _ in done})
    # the command that regenerates these seeds (a --table-only run summarises what ran)
    extra = "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k, d in
                    (("a_trials", 200), ("b_trials", 150), ("check_trials", 5)) if getattr(args, k) != d)
    command = f"python benchmarks/bench_reuse.py --seeds {len(seeds)}{extra}"
    dates = sorted(r["date"] for r in done.values())
    loads = [r["load"] for r in done.values()]
    common = {"command": command.strip(), "date": f"{dates[0]} - {dates[-1]}" if dates else "",
              "load": f"{min(loads):g}-{max(loads):g}" if loads else "", "seeds": len(seeds),
              "a_study": f"[accuracy, params], flops <= 4 GMACs, {args.a_trials} trainings",
              "landscape": LANDSCAPE}
    rows = []
    for label in B:
        line = {"b_study": label, **common}
        for t in TARGETS:
            for mode, name in (("with A", "with_a"), ("scratch", "scratch")):
                values = [done[(s, f"{label} {mode}")].get(f"trainings_to_{t:.2f}") for s in seeds
                          if (s, f"{label} {mode}") in done]
                reached = [v for v in values if v is not None]
                line[f"to_{t:.2f}_{name}"] = statistics.median(
                    [v if v is not None else float("inf") for v in values]) if values else None
                line[f"reached_{t:.2f}_{name}"] = f"{len(reached)}/{len(values)}"
            w, s = line[f"to_{t:.2f}_with_a"], line[f"to_{t:.2f}_scratch"]
            line[f"share_{t:.2f}"] = round(w / s, 3) if w is not None and s not in (None, 0, float("inf")) \
                and w != float("inf") else None
        runs = [done[(s, f"{label} with A")] for s in seeds if (s, f"{label} with A") in done]
        starting = [int(m.group(1)) for r in runs
                    for m in [re.search(r"(\d+) within this study's budgets", r.get("said", ""))] if m]
        line["a_results_within_b_median"] = statistics.median(starting) if starting else None
        rows.append({k: v if k.startswith("share") else _number(v) for k, v in line.items()})
    for label in NO_REUSE:
        reused = [done[(s, label)]["reused"] for s in seeds if (s, label) in done]
        rows.append({"b_study": label, **common, "reused_max": max(reused) if reused else None,
                     "runs": len(reused)})
    return rows


def _number(v):
    """A median as the table shows it: None when not reached, an integer when whole."""
    if not isinstance(v, float):
        return v
    if v == float("inf"):
        return None
    return int(v) if v.is_integer() else round(v, 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--a-trials", type=int, default=200)
    ap.add_argument("--b-trials", type=int, default=150, help="the most new trainings of a B")
    ap.add_argument("--check-trials", type=int, default=5, help="trainings of a B where nothing may be reused")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--runs", default=str(OUT / "runs.jsonl"))
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "reuse.jsonl"))
    ap.add_argument("--cache-dir", default=str(se.OUT / "cache"))
    ap.add_argument("--workdir", default=str(OUT / "work"))
    ap.add_argument("--quick", action="store_true", help="1 seed, A 40 trainings, B 40: a smoke run")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.seeds, args.a_trials, args.b_trials = 1, 40, 40
        args.runs, args.results = str(OUT / "quick-runs.jsonl"), str(OUT / "quick-results.jsonl")
    runs = Path(args.runs)
    runs.parent.mkdir(parents=True, exist_ok=True)
    done = _done(runs)
    if not args.table_only:
        from nas.executor import Executor

        table = se.enumerate_space(A.space, [LANDSCAPE], Path(args.cache_dir))
        exacts = {label: se.exact_front(table, s, LANDSCAPE) for label, s in B.items()}
        executor = Executor(num_cpus=args.cpus)
        executor.start()
        try:
            with se.fvcore_check_off():
                for seed in range(args.seeds):
                    run_seed(seed, args, exacts, done, runs)
        finally:
            executor.shutdown()
    rows = summary(done, args)
    Path(args.results).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
