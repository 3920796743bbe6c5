"""Reading a study (as `docs/reference/storage.md` describes it) into one pandas DataFrame.

One row per trial. Columns:
- `number`, `state` (COMPLETE/PRUNED/FAIL/RUNNING/WAITING), `datetime_start`, `datetime_complete`,
  `duration_s`;
- `category`: how the report draws it: `feasible`, `infeasible` (complete, broke a measured
  budget), `not_trained` (infeasible before training: PRUNED, never trained), `partial` (PRUNED
  at a fidelity < 1), `pruned` (PRUNED otherwise), `failed`, `running`, `waiting`, `preset`
  (an official preset evaluated in the same setting: a reference, never on the front);
- `feasible` and `pareto`: the stored-study contract's answers (`nas.storage.feasibility`: no
  constraint > 0, not flagged `infeasible`, every budget recorded and met; `nas.storage.pareto_front`:
  COMPLETE, full fidelity, feasible, not a preset, every objective recorded, non-dominated), the
  same rules `overlock-nas export --best/--knee/--top` uses;
- `pick`: what export would choose: `best`, `top 2` ... `top 5` (by the study's score, as
  `export --top`), `knee` (`export --knee`), joined by ", " when one trial is several;
- one column per objective and per metric (`accuracy`, `flops`, `params`, `latency_ms`, ...):
  the told values for COMPLETE trials, else the user_attrs (a partial-fidelity trial's score
  under its metric's name);
- the other trial user_attrs (`summary`, `config_hash`, `reason`, `fidelity`, `epochs`, `preset`,
  `latency_*`, `weights`, `reused_from`, ...; lists and dicts as JSON text);
- `origin`: where its result came from: "" (evaluated here), `reused #N` (an architecture of
  this study's trial N), `study NAME #N` (reused from an earlier study's trial N, never trained
  here: `reused_from_study`);
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
from nas.storage import Objective
from nas.util import one_line

from .metrics import SCORE_METRICS

# the columns a report shows for every trial: the metrics a budget can bound
COST_COLUMNS = _storage.CONSTRAINT_METRICS

JOURNAL_NAME = _storage.JOURNAL_NAME
CATEGORIES = ("feasible", "infeasible", "not_trained", "partial", "pruned", "failed", "running",
              "waiting", "preset")


TOP_K = 5   # the report marks the top K trials by the study's score (as `export --top K`)


class ReportError(Exception):
    """A one-line problem with the input (no study, several studies, unreadable storage)."""


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
        return Objective(name, _storage.DIRECTIONS.get(name, "minimize"))

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
    def dataset(self) -> str | None:
        """The data set accuracies come from: the trials' own `dataset` record (most common), else
        the study evaluator's `dataset` setting; None when neither is stored."""
        col = self.trials.get("dataset")
        if col is not None and col.notna().any():
            value = col.dropna().value_counts().index[0]
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass
            return _storage.dataset_text(value)
        evaluator = self.user_attrs.get("evaluator")
        if isinstance(evaluator, dict) and evaluator.get("dataset"):
            return _storage.dataset_text(evaluator["dataset"]) + " (the study's evaluator setting)"
        return None

    @property
    def accuracy_from(self) -> str:
        """How the study's accuracies were measured, for labels: the `supernet` evaluator's are
        inherited-weight accuracies, not trained ones."""
        evaluator = self.user_attrs.get("evaluator")
        if isinstance(evaluator, dict) and evaluator.get("name") == "supernet":
            return "weights inherited from a supernet, no training"
        return "proxy training"

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


def _rows(trials, objectives: list[Objective], budgets: dict[str, float]) -> list[dict]:
    names = [o.name for o in objectives]
    metrics = list(dict.fromkeys(names + list(COST_COLUMNS)))
    rows = []
    for t in trials:
        ua = t.user_attrs
        row = {
            "number": t.number, "state": t.state.name,
            "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
            "duration_s": t.duration.total_seconds() if t.duration is not None else None,
        }
        for m in metrics:
            value = _storage.metric_value(t, m, objectives)
            if value is None and m in names and (m in SCORE_METRICS or m == _first_max(objectives)):
                value = _finite(ua.get("score"))  # a PRUNED trial's score at its fidelity
            row[m] = value
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
        for k, v in _storage.named_constraints(t, budgets).items():
            row[f"constraint_{k}"] = v
        infeasible = not _storage.is_feasible(t, budgets, objectives)
        row["feasible"] = not infeasible
        row["category"] = _category(t.state.name, ua, infeasible)
        row["origin"] = origin(ua)
        rows.append(row)
    return rows


def origin(ua: dict) -> str:
    """Where a trial's result came from, in words (the `origin` column)."""
    earlier = ua.get("reused_from_study")
    if isinstance(earlier, dict):
        return f"study {earlier.get('study')} #{earlier.get('trial')}"
    if ua.get("reused_from") is not None:
        return f"reused #{ua['reused_from']}"
    return ""


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


def trials_frame(trials, objectives: list[Objective], budgets: dict[str, float] | None = None,
                 picks: dict | None = None) -> pd.DataFrame:
    """The report's DataFrame of `trials` (FrozenTrials); see the module docstring. `budgets`:
    the study's; `picks`: `nas.selection.picks` (best / top K / knee trial numbers)."""
    budgets = budgets or {}
    frame = pd.DataFrame(_rows(trials, objectives, budgets))
    if frame.empty:
        cols = ["number", "state", "category", "feasible", "pareto", "pick"] + [o.name for o in objectives]
        return pd.DataFrame(columns=cols)
    names = [o.name for o in objectives]
    front = {t.number for t in _storage.pareto_front(trials=trials, objectives=objectives, budgets=budgets)}
    frame["pareto"] = frame["number"].isin(front)
    words = _pick_words(picks or {})
    frame["pick"] = [words.get(int(n), "") for n in frame["number"]]
    frame = frame.sort_values("number", kind="stable").reset_index(drop=True)
    first = ["number", "state", "category", "origin", "feasible", "pareto", "pick", "preset", "summary"] + names
    first += [m for m in COST_COLUMNS if m not in names] + ["score", "fidelity", "reason"]
    first = [c for c in dict.fromkeys(first) if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _pick_words(picks: dict) -> dict[int, str]:
    """{trial number: "best", "top 2", ..., "knee" (joined by ", ")}."""
    words: dict[int, list[str]] = {}
    for place, number in enumerate(picks.get("top") or [], start=1):
        words.setdefault(number, []).append("best" if place == 1 else f"top {place}")
    if picks.get("knee") is not None:
        words.setdefault(picks["knee"], []).append("knee")
    return {n: ", ".join(w) for n, w in words.items()}


def load_study_data(run_dir=None, storage=None, study_name=None) -> StudyData:
    """Open a study (a run directory's journal, or `storage` URL + `study_name`) and read it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study, label, run_dir, url = _storage.open_study_at(run_dir, storage, study_name)
    except _storage.StorageError as e:
        raise ReportError(str(e)) from None
    name = study.study_name
    try:
        trials = study.get_trials(deepcopy=False)
    except Exception as exc:  # noqa: BLE001
        raise ReportError(f"cannot read study {name!r} from {label}: {one_line(exc)}") from None
    from nas.selection import picks

    objectives = _storage.study_objectives(study)
    budgets = _storage.study_budgets(study)
    frame = trials_frame(trials, objectives, budgets, picks(study, TOP_K))
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
