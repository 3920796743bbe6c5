"""Reading a study (as `docs/storage.md` describes it) into one pandas DataFrame.

One row per trial. Columns:
- `number`, `state` (COMPLETE/PRUNED/FAIL/RUNNING/WAITING), `datetime_start`, `datetime_complete`,
  `duration_s`;
- `category`: how the report draws it: `feasible`, `infeasible` (complete, broke a measured
  budget), `not_trained` (infeasible before training: PRUNED, never trained), `partial` (PRUNED
  at a fidelity < 1), `pruned` (PRUNED otherwise), `failed`, `running`, `waiting`, `preset`
  (an official preset evaluated in the same setting: a reference, never on the front);
- `feasible` (all constraints <= 0 and not flagged `infeasible`), `pareto` (on the feasible
  Pareto front of the study's objectives: COMPLETE, feasible, not a preset);
- one column per objective and per metric (`accuracy`, `flops`, `params`, `latency_ms`, ...):
  the told values for COMPLETE trials, else the user_attrs (a partial-fidelity trial's score
  under its metric's name);
- the other trial user_attrs (`summary`, `config_hash`, `reason`, `fidelity`, `epochs`, `preset`,
  `latency_*`, `weights`, `reused_from`, ...; lists and dicts as JSON text);
- `params_<name>` (Optuna params: the design dimensions the sampler chose), `config_<field>`
  (the OverLoCKConfig fields; tuples as "a-b-c" text), `constraint_<name>` (value - budget).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from pathlib import Path

import pandas as pd

from nas import storage as _storage

from .metrics import COST_METRICS, SCORE_METRICS, maximize_by_default
from .pareto import pareto_mask

JOURNAL_NAME = _storage.JOURNAL_NAME
CATEGORIES = ("feasible", "infeasible", "not_trained", "partial", "pruned", "failed", "running",
              "waiting", "preset")


class ReportError(Exception):
    """A one-line problem with the input (no study, several studies, unreadable storage)."""


@dataclass
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"

    @property
    def sign(self) -> float:
        """Multiply by this to get minimisation form."""
        return -1.0 if self.direction == "maximize" else 1.0


@dataclass
class StudyData:
    """Everything a report shows about one study."""

    study_name: str
    storage_label: str
    run_dir: Path | None
    storage_url: str | None
    user_attrs: dict
    objectives: list[Objective]
    constraints: dict[str, float]
    trials: pd.DataFrame
    param_names: list[str] = field(default_factory=list)
    param_distributions: dict = field(default_factory=dict)
    config_fields: list[str] = field(default_factory=list)  # OverLoCKConfig fields: `config_<field>`
    loaded_at: datetime = field(default_factory=datetime.now)

    @property
    def score_metric(self) -> str | None:
        """The objective the evaluator scores (accuracy or a proxy), if any."""
        for o in self.objectives:
            if o.name in SCORE_METRICS or o.direction == "maximize":
                return o.name
        return None

    def objective(self, name: str) -> Objective:
        for o in self.objectives:
            if o.name == name:
                return o
        return Objective(name, "maximize" if maximize_by_default(name) else "minimize")

    @cached_property
    def resolution(self) -> tuple[int, int]:
        col = self.trials.get("resolution")
        if col is not None:
            counts = col.dropna().value_counts()
            if len(counts):
                h, w = str(counts.index[0]).split("x")
                return int(h), int(w)
        return (224, 224)

    @cached_property
    def latency_setting(self) -> dict:
        out = {}
        for key in ("batch", "device", "dtype"):
            col = self.trials.get(f"latency_{key}")
            if col is not None and col.notna().any():
                value = col.dropna().value_counts().index[0]
                out[key] = value.item() if hasattr(value, "item") else value
        if "device" not in out and self.user_attrs.get("device"):
            out["device"] = self.user_attrs["device"]
        return out


# ----------------------------------------------------------------------------------- storage
def open_storage(run_dir=None, storage=None):
    """(optuna storage, label, run_dir or None, url or None); ReportError on anything unreadable."""
    try:
        return _storage.open_storage(run_dir, storage)
    except _storage.StorageError as e:
        raise ReportError(str(e)) from None


def study_names(storage) -> list[str]:
    try:
        return _storage.study_names(storage)
    except _storage.StorageError as e:
        raise ReportError(str(e)) from None


def resolve_study_name(storage, label: str, study_name: str | None) -> str:
    try:
        return _storage.resolve_study_name(storage, label, study_name)
    except _storage.StorageError as e:
        raise ReportError(str(e)) from None




# ------------------------------------------------------------------------------------ trials
def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rows(trials, objectives: list[Objective]) -> list[dict]:
    names = [o.name for o in objectives]
    metrics = list(dict.fromkeys(names + list(COST_METRICS)))
    rows = []
    for t in trials:
        ua = t.user_attrs
        row = {
            "number": t.number, "state": t.state.name,
            "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
            "duration_s": t.duration.total_seconds() if t.duration is not None else None,
        }
        told = t.values if t.state.name == "COMPLETE" and t.values is not None else None
        for m in metrics:
            value = None
            if told is not None and m in names:
                value = told[names.index(m)]
            if value is None:
                value = ua.get(m)
            if value is None and m in names and (m in SCORE_METRICS or m == _first_max(objectives)):
                value = ua.get("score")  # a PRUNED trial's score at its fidelity
            row[m] = _finite(value)
        for key, value in ua.items():
            if key in row or key == "config":
                continue
            if key == "resolution" and isinstance(value, (list, tuple)) and len(value) == 2:
                row[key] = f"{int(value[0])}x{int(value[1])}"
            elif isinstance(value, (dict, list, tuple)):
                row[key] = json.dumps(value)  # keeps order (stages of latency_stages_ms)
            else:
                row[key] = value
        config = ua.get("config")
        if isinstance(config, dict):
            row["config"] = json.dumps(config, sort_keys=True)
            for k, v in config.items():
                row[f"config_{k}"] = _text(v)
        for k, v in t.params.items():
            row[f"params_{k}"] = v
        constraints = t.constraints
        named = {k: v for k, v in constraints.items() if not k.isdigit()}
        for k, v in named.items():
            row[f"constraint_{k}"] = v
        infeasible = bool(ua.get("infeasible")) or any(v > 0 for v in constraints.values())
        row["feasible"] = not infeasible
        row["category"] = _category(t.state.name, ua, infeasible)
        rows.append(row)
    return rows


def _first_max(objectives: list[Objective]) -> str | None:
    for o in objectives:
        if o.direction == "maximize":
            return o.name
    return None


def _category(state: str, ua: dict, infeasible: bool) -> str:
    if state == "COMPLETE":
        if isinstance(ua.get("preset"), str) and ua["preset"]:
            return "preset"
        return "infeasible" if infeasible else "feasible"
    if state == "PRUNED":
        fidelity = _finite(ua.get("fidelity"))
        if ua.get("infeasible") is True or (infeasible and fidelity is None):
            return "not_trained"
        return "partial" if fidelity is not None and fidelity < 1 else "pruned"
    return {"FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}.get(state, "failed")


def trials_frame(trials, objectives: list[Objective]) -> pd.DataFrame:
    """The report's DataFrame of `trials` (FrozenTrials); see the module docstring."""
    frame = pd.DataFrame(_rows(trials, objectives))
    if frame.empty:
        cols = ["number", "state", "category", "feasible", "pareto"] + [o.name for o in objectives]
        return pd.DataFrame(columns=cols)
    frame["pareto"] = False
    names = [o.name for o in objectives]
    candidates = frame[(frame["category"] == "feasible")]
    if names and len(candidates):
        values = candidates[names].to_numpy(dtype=float)
        ok = ~pd.isna(values).any(axis=1)
        signs = [o.sign for o in objectives]
        mask = pareto_mask(values[ok] * signs)
        frame.loc[candidates.index[ok][mask], "pareto"] = True
    frame = frame.sort_values("number", kind="stable").reset_index(drop=True)
    first = ["number", "state", "category", "feasible", "pareto", "preset", "summary"] + names
    first += [m for m in COST_METRICS if m not in names] + ["score", "fidelity", "reason"]
    first = [c for c in dict.fromkeys(first) if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _objectives(study) -> list[Objective]:
    stored = study.user_attrs.get("objectives")
    directions = [d.name.lower() for d in study.directions]
    if isinstance(stored, list) and len(stored) == len(directions):
        names = [o.get("name") if isinstance(o, dict) else str(o) for o in stored]
    else:
        names = study.metric_names or [f"objective_{i}" if len(directions) > 1 else "objective"
                                       for i in range(len(directions))]
    return [Objective(str(n), d) for n, d in zip(names, directions)]


def load_study_data(run_dir=None, storage=None, study_name=None) -> StudyData:
    """Open a study (a run directory's journal, or `storage` URL + `study_name`) and read it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened, label, run_dir, url = open_storage(run_dir, storage)
    name = resolve_study_name(opened, label, study_name)
    try:
        study = optuna.load_study(study_name=name, storage=opened)
        trials = study.get_trials(deepcopy=False)
    except Exception as exc:  # noqa: BLE001
        raise ReportError(f"cannot read study {name!r} from {label}: {type(exc).__name__}: {exc}") from None
    objectives = _objectives(study)
    budgets = study.user_attrs.get("constraints") or {}
    if not isinstance(budgets, dict):
        budgets = {}
    budgets = {str(k): float(v) for k, v in budgets.items() if _finite(v) is not None}
    frame = trials_frame(trials, objectives)
    distributions = {}
    for t in trials:
        for k, dist in t.distributions.items():
            distributions.setdefault(k, dist)
    params = sorted(distributions)
    config_fields = list(dict.fromkeys(k for t in trials if isinstance(t.user_attrs.get("config"), dict)
                                       for k in t.user_attrs["config"]))
    return StudyData(study_name=name, storage_label=label, run_dir=run_dir, storage_url=url,
                     user_attrs=dict(study.user_attrs), objectives=objectives, constraints=budgets,
                     trials=frame, param_names=params, param_distributions=distributions,
                     config_fields=config_fields)


def load_trials(run_dir=None, storage=None, study_name=None) -> pd.DataFrame:
    """All trials of a study as one DataFrame (one row per trial; see `reports.data`).

    >>> df = load_trials("runs/quickstart")
    >>> df[df.pareto][["number", "accuracy", "flops"]]
    """
    return load_study_data(run_dir, storage, study_name).trials
