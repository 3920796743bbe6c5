"""The table of real trainings behind landscape (b) (issue 17): read the two studies that
benchmarks/run_surrogate_trainings.py ran and write one JSON line per architecture trained under
both seeds, in study A's trial order:

    {"config_hash", "config" (OverLoCKConfig dict), "summary", "trial" ([A's, B's] trial number),
     "seed" ([A's, B's] training seed), "accuracy" ([A, B] final top-1), "val_loss" ([A, B] final),
     "history" ([A's, B's] accuracy per epoch), "epochs", "gmacs" (fvcore; the paper's FLOPs, at
     1x3x32x32), "params" (deploy model), "train_s" ([A, B] evaluator wall seconds)}

An architecture trained under one seed only (a run still in progress) is left out.
"""

from __future__ import annotations

import json
from pathlib import Path


def _trials(study_log: Path, name: str) -> dict[str, object]:
    """config hash -> the COMPLETE, trained (not reused) trial of that hash."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not study_log.exists():
        return {}
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(study_log))))
    out = {}
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        if t.user_attrs.get("reused_from") is None:
            out.setdefault(t.user_attrs["config_hash"], t)
    return out


def table_rows(work: Path) -> list[dict]:
    a = _trials(work / "seed0" / "study.log", "surrogate-seed0")
    b = _trials(work / "seed1" / "study.log", "surrogate-seed1")
    rows = []
    for chash, ta in sorted(a.items(), key=lambda kv: kv[1].number):
        tb = b.get(chash)
        if tb is None:
            continue
        ua, ub = ta.user_attrs, tb.user_attrs
        rows.append({
            "config_hash": chash,
            "config": json.loads(ua["config"]) if isinstance(ua["config"], str) else ua["config"],
            "summary": ua["summary"],
            "trial": [ta.number, tb.number],
            "seed": [ua["seed"], ub["seed"]],
            "accuracy": [ua["score"], ub["score"]],
            "val_loss": [ua["val_loss"][-1], ub["val_loss"][-1]],
            "history": [ua["history"], ub["history"]],
            "epochs": ua["epochs"],
            "gmacs": ua["flops"] / 1e9,
            "params": ua["params"],
            "train_s": [ua["eval_wall_s"], ub["eval_wall_s"]],
        })
    return rows


def write_table(work: Path, out: Path) -> list[dict]:
    rows = table_rows(work)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    print(f"wrote {out}: {len(rows)} architectures trained under both seeds")
    return rows


def read_table(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
