"""Train the table behind landscape (b) of the search-efficiency benchmark (issue 17) with the
project's own engine: study A (`benchmarks/studies/surrogate_seed0.yaml`, `sampler: random`,
seed 0) draws and trains architectures; study B (`surrogate_seed1.yaml`, seed 1) is given A's
trained configs, enqueued in A's order, and trains them again. The engine seeds trial N's training
with derived_seed(study seed, N, 7), so B's trainings use other seeds than A's.

The two studies advance in chunks (A to 20 trained, B to the same 20, A to 40, ...) so that an
interrupted or stopped run leaves as many complete pairs as possible; rerunning resumes both
(the engine resumes a study from its journal).

    OMP_NUM_THREADS=1 nohup nice -n 19 python3 benchmarks/run_surrogate_trainings.py \\
        --work bench_out/surrogate --n 160 > bench_out/surrogate-trainings.log 2>&1 &
    python3 benchmarks/run_surrogate_trainings.py --work bench_out/surrogate --table-only

Then `--table-only` writes benchmarks/data/surrogate_trainings.jsonl (one row per architecture:
config, hash, accuracy per seed, validation loss, epochs, GMACs, params, training seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

STUDIES = (HERE / "studies" / "surrogate_seed0.yaml", HERE / "studies" / "surrogate_seed1.yaml")
TABLE = HERE / "data" / "surrogate_trainings.jsonl"


def prepare_study(template: Path, work: Path, digits: Path):
    """The study file with the digits' path filled in, written to `work` and loaded."""
    from nas.study import load_study_file

    data = yaml.safe_load(template.read_text())
    data["evaluator"]["dataset"]["path"] = str(digits)
    data["space"] = str((template.parent / data["space"]).resolve())
    path = work / template.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_study_file(path)


def trained_trials(spec, run_dir: Path) -> list:
    """COMPLETE trials that were trained (not reused from a duplicate), in trial order."""
    import optuna

    from nas.engine import open_storage

    if not (run_dir / "study.log").exists():
        return []
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec, run_dir))
    return [t for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
            if t.user_attrs.get("reused_from") is None]


def enqueue(spec, run_dir: Path, params_list: list[dict]) -> None:
    """Create study B's storage if needed and enqueue the configs it has not been given yet."""
    import optuna

    from nas.engine import open_storage

    run_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=spec.name, storage=open_storage(spec, run_dir),
                                directions=spec.directions, load_if_exists=True)
    if not study.metric_names:
        study.set_metric_names(list(spec.objectives))
    # by params, not by count: an interrupted trial is re-queued by the engine as a new trial
    given = {json.dumps(t.params, sort_keys=True) for t in study.get_trials(deepcopy=False)}
    for params in params_list:
        if json.dumps(params, sort_keys=True) not in given:
            study.enqueue_trial(params, skip_if_exists=False)


def run_to(spec, run_dir: Path, target: int) -> None:
    from nas.engine import SearchEngine

    t0 = time.monotonic()
    result = SearchEngine(spec, run_dir, trials=target, num_cpus=spec.parallel).run()
    print(f"{time.strftime('%H:%M:%S')} {spec.name}: {target} trained "
          f"({time.monotonic() - t0:.0f} s, load {os.getloadavg()[0]:.1f}) {result!r:.200}", flush=True)
    if getattr(result, "interrupted", False):   # Ctrl-C / SIGINT stops the engine, then the driver
        raise SystemExit(f"{spec.name}: interrupted; rerun the same command to resume both studies")


def train(work: Path, n: int, chunk: int) -> None:
    from nas.sample_sets import write_digits

    digits = work / "digits"
    if not (digits / "val").is_dir():
        write_digits(digits)
    spec_a, spec_b = (prepare_study(t, work, digits) for t in STUDIES)
    dir_a, dir_b = work / "seed0", work / "seed1"
    for target in range(chunk, n + chunk, chunk):
        target = min(target, n)
        run_to(spec_a, dir_a, target)
        configs = [dict(t.params) for t in trained_trials(spec_a, dir_a)][:target]
        enqueue(spec_b, dir_b, configs)
        run_to(spec_b, dir_b, len(configs))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/surrogate-trainings"),
                    help="run directories of both studies and the digits")
    ap.add_argument("--n", type=int, default=160, help="architectures, each trained twice")
    ap.add_argument("--chunk", type=int, default=20, help="trained trials per study per step")
    ap.add_argument("--table-only", action="store_true", help="only write the table")
    ap.add_argument("--out", type=Path, default=TABLE)
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        train(args.work, args.n, args.chunk)
    from benchmarks.surrogate_table import write_table

    write_table(args.work, args.out)


if __name__ == "__main__":
    main()
