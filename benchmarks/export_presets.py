"""Export the official presets through `nas.export` at full size: time per phase, file sizes,
the export-time check differences (tolerance 1e-4) and the measured GMACs.

    python benchmarks/export_presets.py                       # overlock_xt at 224
    python benchmarks/export_presets.py overlock_xt overlock_t --no-onnx --threads 2

Each preset becomes a one-trial study (journal storage, docs/reference/storage.md) whose trial has no
weights, so the export initialises them (seed 0); the checks compare the reloaded, deploy,
torch.export and ONNX models against the eager train-structure model on random inputs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch

import overlock
from nas.export import export_trial, open_study


def one_trial_study(run_dir: Path, config: overlock.OverLoCKConfig) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from space import complexity

    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.log")))
    study = optuna.create_study(study_name="bench", storage=storage, directions=["minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.set_metric_names(["flops"])
    study.set_user_attr("objectives", [{"name": "flops", "direction": "minimize"}])
    study.set_user_attr("constraints", {})
    trial = study.ask()
    cost = complexity(config)
    for k, v in {"config": config.to_dict(), "config_hash": config.config_hash(),
                 "summary": config.summary(), **cost.as_metrics(),
                 "resolution": list(config.resolution)}.items():
        trial.set_user_attr(k, v)
    study.tell(trial, [cost.flops])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=["overlock_xt"])
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"torch {torch.__version__}, {args.threads} threads")
    for name in args.presets:
        config = overlock.PRESETS[name]
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            run_dir.mkdir()
            one_trial_study(run_dir, config)
            study, label = open_study(run_dir)
            marks = [("start", time.perf_counter())]
            result = export_trial(study, study.trials[0], run_dir / "export", run_dir=run_dir,
                                  storage_label=label, onnx=not args.no_onnx,
                                  log=lambda line: marks.append((line, time.perf_counter())))
            marks.append(("done", time.perf_counter()))
            print(f"\n{name}: {config.summary()}")
            for (what, t), (_, t_next) in zip(marks, marks[1:]):
                print(f"  {t_next - t:7.1f} s  {what[:70]}")
            for f in sorted((run_dir / "export").iterdir()):
                print(f"  {f.stat().st_size / 2 ** 20:9.1f} MiB  {f.name}")
            for check in result.checks:
                diff = check.get("max_abs_diff")
                print(f"  {check['check']}: " + (f"max abs diff {diff:.3g} ({'pass' if check['passed'] else 'FAIL'})"
                                                  if diff is not None else f"not written: {check['error']}"))
            m = result.meta["measured"]
            H, W = config.resolution
            print(f"  params {m['params'] / 1e6:.2f} M (deploy, no aux head); "
                  f"{m['flops'] / 1e9:.3f} GMACs (fvcore; the paper's FLOPs), "
                  f"{m['flops_paper'] / 1e9:.3f} GMACs (paper convention), input 1x3x{H}x{W}, batch 1")
            print("  " + json.dumps({"export_s": result.meta["export_s"], "ok": result.ok}))


if __name__ == "__main__":
    main()
