"""Slot utilisation with and without a latency budget (issue 10 §1; at 4, 16 and 32 slots: issue 26).

    python benchmarks/bench_utilization.py                      # 4 slots, this checkout's engine
    python benchmarks/bench_utilization.py --slots 4,16,32 --runs budget \
        --jsonl benchmarks/results/utilization.jsonl            # issue 26's rows, appended
    git clone -q --no-checkout . bench_out/old && git -C bench_out/old checkout -q <commit>
    python benchmarks/bench_utilization.py --repo bench_out/old ...   # the engine before a change

A study on the quickstart space (`--space`; random sampler, seed 1), N slots of 1 CPU each (`--slots`, a
list), with a *sleeping* evaluator (`tests/nas/fake_evaluators.py:Sleeping`), so slots need not
be real cores: each evaluation sleeps in proportion to the config's MACs (6.5-30.6 M in this
space; training time grows with them), 2-8 s at 4 slots and 20-60 s from 16 slots (issue 26's
goals; `--min-s` / `--max-s` to choose), 4 trials per slot (`--trials`), so evaluations differ
in length and nothing competes for the real cores but the latency measurements. Runs:

- `none`: objectives accuracy and FLOPs, no latency;
- `budget`: the same plus a latency budget (`latency_ms <= 1000`, which every config meets, so the
  same configs train): each config's latency is *really measured* before it trains (deploy
  model, batch 1, fp32, 1 thread, 5 warm-up + 20 timed forwards at the space's resolution
  (64x64 in quickstart), on the measuring worker: one config at a time before issue 26, then
  the configs queued for it together, up to 8), or, with `--latency-sleep S`, by a stand-in that sleeps S seconds per call (labelled);
- `store` (`--runs none,budget,store`): `budget` again, a new study on the same device whose
  latencies the previous run left in the device's store (the engine before the store re-measures).

Slot utilisation = evaluation seconds / (slots x span from the first evaluation start to the last
evaluation end), from the evaluator's own start/end timestamps. The embedded Ray gets
slots + 1 logical CPUs: the measuring worker's core (new engine) or room for the old engine's
exclusive measurement. Every run uses a fresh latency store (`OVERLOCK_NAS_CACHE`), so every
latency is measured, none read from an earlier run (but `store`'s). `mean_set` is the mean
number of configs measured together (from each reading's `latency_protocol`). The machine's load
average is printed and stored with every row (`--jsonl`); the last line is a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests" / "nas"      # the sleeping evaluator and the sleeping measurement


SETS = [False]   # the engine measures sets of configs (nas.worker:run_latencies), read once


def flops_range(path: Path) -> list[int]:
    """The smallest and largest MACs of the space's architectures (the sleep scales between):
    every one of a space of up to 5,000, else of 1,000 uniform draws (seed 0)."""
    import itertools
    import random

    import space

    sp = space.load_space(path)
    configs = list(itertools.islice(sp.enumerate(), 5001))
    if len(configs) > 5000:
        rng = random.Random(0)
        configs = [sp.sample(rng) for _ in range(1000)]
    costs = [space.complexity(c).flops for c in configs]
    return [min(costs), max(costs)]


def study(out: Path, log: Path, slots: int, trials: int, budget: bool, min_s: float,
          max_s: float, repo: Path, ahead: int | None = None, space_name: str = "quickstart") -> dict:
    path = repo / (space_name if space_name.endswith(".yaml") else f"studies/spaces/{space_name}.yaml")
    data = {"name": "bench-utilization", "space": str(path),
            "objectives": ["accuracy", "flops"],
            "evaluator": {"name": "fake_evaluators:Sleeping", "min_s": min_s, "max_s": max_s,
                          "flops_range": flops_range(path), "log": str(log)},
            "sampler": {"name": "random"}, "seed": 1, "trials": trials, "parallel": slots,
            "resources": {"cpus": 1}, "fvcore_check_every": 0, "output_dir": str(out)}
    if budget:
        data["constraints"] = {"latency_ms": 1000.0}
        data["latency"] = {"threads": 1, "warmup": 5, "repeats": 20}
        if ahead is not None:
            data["latency"]["ahead"] = ahead
    return data


def run(kind: str, args, repo: Path, slots: int, trials: int, min_s: float, max_s: float) -> dict:
    import nas.engine
    from nas.engine import SearchEngine
    from nas.study import parse_study

    budget = kind in ("budget", "store")
    work = Path(tempfile.mkdtemp(prefix="bench-util-"))
    if kind != "store" or "OVERLOCK_NAS_CACHE" not in os.environ:
        os.environ["OVERLOCK_NAS_CACHE"] = str(work / "cache")     # every latency measured afresh
    log = work / "evals.jsonl"
    if args.latency_sleep:      # the stand-in the engine's measuring call takes: one config, or a set
        nas.engine.LATENCY_TARGET = "fake_evaluators:sleeping_latenc" + ("ies" if SETS[0] else "y")
        os.environ["FAKE_LATENCY_S"] = str(args.latency_sleep)
    spec = parse_study(study(work / "run", log, slots, trials, budget, min_s, max_s, repo, args.ahead,
                             args.space), label="bench")
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    result = SearchEngine(spec, num_cpus=slots + 1).run()
    wall = time.monotonic() - t0
    load1 = os.getloadavg()[0]
    evals = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    start = min(e["start"] for e in evals)
    span = max(e["end"] for e in evals) - start
    busy = sum(e["end"] - e["start"] for e in evals)
    import optuna

    from nas.engine import open_storage

    trials_ = optuna.load_study(study_name=spec.name, storage=open_storage(spec, work / "run")).trials
    own = [t.user_attrs for t in trials_ if "latency_ms" in t.user_attrs
           and t.user_attrs.get("reused_from") is None
           and t.user_attrs.get("latency_source", "measured") == "measured"]
    together = [_set_size(ua.get("latency_protocol", "")) for ua in own]
    return {"latency": kind, "slots": slots, "trials": len(trials_), "eval_range_s": f"{min_s:g}-{max_s:g}",
            "evaluations": len(evals), "latencies_measured": len(own),
            "mean_set": round(sum(together) / len(together), 1) if together else None,
            "eval_s": round(busy, 1), "span_s": round(span, 1), "wall_s": round(wall, 1),
            "utilisation": round(busy / (slots * span), 3),
            "done": result.progress.done, "load": f"{load0:.1f}-{load1:.1f}"}


def _set_size(protocol: str) -> int:
    """Configs measured together, from a reading's `latency_protocol` ("... rounds interleaved
    over 8 configs ..."; one config says nothing)."""
    m = re.search(r"interleaved over (\d+) configs", protocol)
    return int(m.group(1)) if m else 1


def defaults(slots: int, args) -> tuple[int, float, float]:
    """(trials, min_s, max_s) at this many slots: 4 trials a slot (`--trials-per-slot`); 2-8 s evaluations up to 4
    slots, 20-60 s beyond (issue 26's goals), unless given."""
    trials = args.trials or args.trials_per_slot * slots
    low, high = (2.0, 8.0) if slots <= 4 else (20.0, 60.0)
    return trials, args.min_s if args.min_s is not None else low, args.max_s if args.max_s is not None else high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=HERE.parent,
                    help="checkout whose engine to measure (e.g. a clone at an old commit)")
    ap.add_argument("--slots", default="4", help="slot counts, comma-separated (e.g. 4,16,32)")
    ap.add_argument("--trials", type=int, default=None, help="trials per run (default: --trials-per-slot)")
    ap.add_argument("--trials-per-slot", type=int, default=4)
    ap.add_argument("--min-s", type=float, default=None, help="shortest evaluation (default 2 s, 20 s beyond 4 slots)")
    ap.add_argument("--max-s", type=float, default=None, help="longest evaluation (default 8 s, 60 s beyond 4 slots)")
    ap.add_argument("--latency-sleep", type=float, default=None,
                    help="a stand-in measurement that sleeps this long per call instead of measuring")
    ap.add_argument("--ahead", type=int, default=None,
                    help="latency.ahead: configs priced ahead of training (default: slots)")
    ap.add_argument("--space", default="quickstart",
                    help="studies/spaces/NAME.yaml (quickstart: 72 architectures; xt_t: 76k, so a "
                         "long run keeps drawing new ones), or a space file's path in the checkout "
                         "(benchmarks/spaces/latency.yaml: 1,920 at 64x64, cheap to measure)")
    ap.add_argument("--runs", default="none,budget")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--jsonl", type=Path, default=None,
                    help="append one results line per row (benchmarks/results/utilization.jsonl)")
    ap.add_argument("--label", default=None, help="what the engine is, in the results (default: its commit)")
    args = ap.parse_args()
    repo = args.repo.resolve()
    path = os.environ.get("PYTHONPATH", "")
    if not path.startswith(f"{repo}{os.pathsep}") or Path.cwd() != repo:
        # Ray's workers unpickle `nas.executor` before any path the driver hands them applies, and
        # put the driver's working directory first: re-run from the checkout, with it on PYTHONPATH
        os.environ["PYTHONPATH"] = os.pathsep.join([str(repo), str(TESTS), path])
        os.environ.setdefault("BENCH_UTIL_CWD", os.getcwd())
        os.chdir(repo)
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])
    import nas
    import nas.engine

    engine_file = Path(nas.__file__).resolve().parent / "engine.py"
    assert engine_file.is_relative_to(repo), f"nas imported from {engine_file}, not {repo}"
    commit = os.popen(f"git -C {repo} rev-parse --short HEAD").read().strip()
    sets = SETS[0] = nas.engine.LATENCY_TARGET.endswith("run_latencies")
    label = args.label or f"{commit}: " + ("queued configs measured together, up to 8" if sets
                                           else "one config at a time")
    load = os.getloadavg()
    print(f"# engine: {repo} ({label}); slots {args.slots}; latency: "
          + (f"sleeping stand-in {args.latency_sleep:g} s" if args.latency_sleep else
             f"measured (1 thread, 5+20 forwards, space {args.space})")
          + f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    rows = []
    for slots in (int(x) for x in args.slots.split(",")):
        trials, min_s, max_s = defaults(slots, args)
        for kind in args.runs.split(","):
            row = run(kind, args, repo, slots, trials, min_s, max_s)
            rows.append(row)
            print("# " + json.dumps(row), flush=True)
            if args.jsonl:
                _append(args, row, label, slots, kind)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# summary ({label}): " + "; ".join(
        f"{r['slots']} slots {r['latency']} {r['utilisation']:.2f} (load {r['load']})" for r in rows))
    if args.json:
        args.json.write_text(json.dumps({"commit": commit, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))


def _device() -> str:
    """The CPU the benchmark ran on, and the cores it was pinned to (`taskset`), if not all."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == os.cpu_count():
        return f"cpu ({os.cpu_count()} cores)"
    pinned = ", ".join(map(str, cores))
    return (f"cpu (the {os.cpu_count()}-core development machine; the driver and every worker on "
            f"core{'s' if len(cores) > 1 else ''} {pinned})")


def _append(args, row: dict, label: str, slots: int, kind: str) -> None:
    """One results line (benchmarks/results/README.md): the row, the command that regenerates
    it, the date and the load it ran under."""
    import datetime

    command = f"python benchmarks/bench_utilization.py --slots {slots} --runs {kind}"
    if args.space != "quickstart":
        command += f" --space {args.space}"
    for flag in ("trials", "trials_per_slot", "min_s", "max_s", "latency_sleep", "ahead"):
        value = getattr(args, flag)
        if value is not None and not (flag == "trials_per_slot" and value == 4):
            command += f" --{flag.replace('_', '-')} {value:g}"
    if args.repo.resolve() != HERE.parent:
        command += " --repo <a clone at " + label.split(":")[0] + ">"
    line = {"engine": label, **row, "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": _device(),
            "metric": "slot utilisation: evaluation seconds / (slots x span)"}
    path = args.jsonl if args.jsonl.is_absolute() else Path(os.environ.get("BENCH_UTIL_CWD", ".")) / args.jsonl
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
