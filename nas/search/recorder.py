"""The only code that writes a trial: its attributes, its constraint values and the tell.

Every attribute key written is one `nas.storage.TRIAL_ATTRS` names (or a measurement's own
`latency_*` key); a finished trial cannot be changed, so `finish` writes what is left, tells once
and reads the trial back once. Copies of another stored trial's records (a reused result, a
re-queued copy taking over its original's rungs) are written as they were stored.

Constraint values (`value - budget`, feasible iff <= 0) are `space.budgets.violations` of a
trial's known metrics; `broken` says in words which budgets they break.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import _optuna
from nas.storage import LATENCY_PREFIX, TRIAL_ATTRS, format_value, jsonable
from space.budgets import broken as _broken, violations


# a trial's identity: written when its config is sampled, never copied from another trial
# (`rejected_draws`: the draws rejected before this trial's own config, nas.search.proposals)
IDENTITY_ATTRS = ("config", "config_hash", "summary", "resolution", "seed", "driver", "rejected_draws")
# an evaluation's result keys stored as they come (`dataset`: which images the score is from)
EVAL_RESULT_KEYS = ("score", "epochs", "history", "fidelity", "train_loss", "val_loss",
                    "data_skipped", "data_skipped_first", "dataset")


def broken(metrics: Mapping[str, float], budgets: Mapping[str, float]) -> list[str]:
    """The budgets `metrics` break, in words: `flops 2.4 GMACs > 2 GMACs`."""
    return [f"{name} {format_value(name, metrics[name])} > {format_value(name, budgets[name])}"
            for name in _broken(violations(metrics, budgets))]


def tellable(values, n: int) -> bool:
    """`n` objective values Optuna accepts as COMPLETE (numbers, none NaN)."""
    try:
        return values is not None and len(values) == n and not any(math.isnan(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def set_constraints(study: optuna.Study, trial: optuna.Trial, names: list[str], known: dict,
                    *, named: bool = False) -> None:
    """Store a trial's constraint values (`value - budget`, feasible iff <= 0), once per budget.

    As the list `system_attrs["constraints"]` in the order of `names` (the study's budget order):
    Optuna's samplers read it (constraints '0', '1', ...) and so does optuna-dashboard, which
    greys out infeasible trials. A budget not measured (the trial broke another one first) is 0.0
    there. `named=True` also writes Optuna 5's named constraints, for studies begun by earlier
    versions that wrote both: their trials keep one format (see `nas._optuna`).
    """
    if not names:
        return
    if named:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in names:
                if name in known:
                    trial.set_constraint(name, float(known[name]))
    _optuna.write_constraints(study, trial, [float(known.get(n, 0.0)) for n in names])


class UnnamedKey(KeyError):
    """A trial attribute key `nas.storage.TRIAL_ATTRS` does not name (a programming error)."""


class Recorder:
    """Writes the trials of one study.

    Args:
        study: the study.
        objectives: objective names, in order (a COMPLETE trial's values).
        budgets: {metric: budget}.
        constraint_names: the budgets in the order their values are stored (the stored study's).
        named_constraints: also write named constraints (a study begun by an earlier version).
    """

    def __init__(self, study: optuna.Study, objectives: list[str], budgets: Mapping[str, float],
                 constraint_names: Iterable[str], named_constraints: bool = False):
        self.study = study
        self.objectives = list(objectives)
        self.budgets = dict(budgets)
        self.constraint_names = list(constraint_names)
        self.named_constraints = named_constraints

    @property
    def budgets_in_order(self) -> dict:
        """The budgets in the order their constraint values are stored."""
        return {n: self.budgets[n] for n in self.constraint_names}

    # ------------------------------------------------------------------------------- writing
    def set(self, trial: optuna.Trial, key: str, value) -> None:
        if key not in TRIAL_ATTRS and not key.startswith(LATENCY_PREFIX):
            raise UnnamedKey(f"trial attribute {key!r} is not named in nas.storage.TRIAL_ATTRS "
                             "(add it there and to docs/reference/storage.md)")
        trial.set_user_attr(key, value)

    def update(self, trial: optuna.Trial, attrs: Mapping) -> None:
        for key, value in attrs.items():
            self.set(trial, key, value)

    def copy(self, trial: optuna.Trial, stored: Mapping, skip: Iterable[str] = ()) -> None:
        """Another stored trial's records, as they were stored (older engines' keys included)."""
        skip = set(skip)
        for key, value in stored.items():
            if key not in skip:
                trial.set_user_attr(key, value)

    def constraints(self, trial: optuna.Trial, metrics: Mapping[str, float],
                    extra: Mapping[str, float] | None = None) -> None:
        """The trial's constraint values from its known `metrics` (and `extra` estimates)."""
        values = violations(metrics, self.budgets)
        values.update({n: v - self.budgets[n] for n, v in (extra or {}).items()})
        set_constraints(self.study, trial, self.constraint_names, values, named=self.named_constraints)

    def copy_constraints(self, trial: optuna.Trial, values: Mapping[str, float]) -> None:
        set_constraints(self.study, trial, self.constraint_names, dict(values),
                        named=self.named_constraints)

    def latency(self, trial: optuna.Trial, result: Mapping, source: str) -> None:
        """Every `latency_*` field of a measurement (the device string among them), and where it
        came from: `latency_source` measured (by this study), store or predicted."""
        for key, value in result.items():
            if key.startswith(LATENCY_PREFIX) and value is not None:
                self.set(trial, key, jsonable(value))
        self.set(trial, "latency_source", source)

    def evaluation(self, trial: optuna.Trial, result: Mapping, config: Mapping, eval_s: float) -> None:
        """An evaluation's result. The train evaluator fits the classifier / input size to its
        data set; the trial's cost is priced on the study's config, so say when the trained model
        differs from it (`trained_num_classes`, `trained_resolution`)."""
        for key in EVAL_RESULT_KEYS:
            if key in result:
                self.set(trial, key, jsonable(result[key]))
        for key in ("num_classes", "resolution"):
            if key in result and jsonable(result[key]) != jsonable(config[key]):
                self.set(trial, f"trained_{key}", jsonable(result[key]))
        self.set(trial, "eval_wall_s", round(eval_s, 3))

    def rung(self, trial: optuna.Trial, budget: str, score: float, val_loss) -> dict:
        """A finished rung's score (and validation loss, when finite); returns the trial's
        `rung_scores` and `rung_val_loss` as now stored."""
        stored = trial.user_attrs
        out = {"rung_scores": {**(stored.get("rung_scores") or {}), budget: float(score)},
               "rung_val_loss": dict(stored.get("rung_val_loss") or {})}
        self.set(trial, "rung_scores", out["rung_scores"])
        if isinstance(val_loss, (int, float)) and math.isfinite(val_loss):
            out["rung_val_loss"][budget] = float(val_loss)
            self.set(trial, "rung_val_loss", out["rung_val_loss"])
        return out

    # ------------------------------------------------------------------------------- the tell
    def finish(self, trial: optuna.Trial, state: TrialState, values: list[float] | None = None, *,
               reason: str | None = None, error: str = "") -> FrozenTrial:
        """Write the ending (`reason`, `error`), tell once, and return the trial as stored.

        A COMPLETE whose values Optuna would refuse (a NaN objective, a missing value) is told
        FAIL with the reason said first: a finished trial's attributes cannot be changed."""
        if state == TrialState.COMPLETE and not tellable(values, len(self.objectives)):
            reason, state, values = f"objective values rejected: {values}", TrialState.FAIL, None
        if reason is not None:
            self.set(trial, "reason", reason)
        if error:
            self.set(trial, "error", error[-4000:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if state == TrialState.COMPLETE:
                self.study.tell(trial, values)
            else:
                self.study.tell(trial, state=state)
        return _optuna.stored_trial(self.study, trial)

    def stored(self, trial: optuna.Trial) -> FrozenTrial:
        return _optuna.stored_trial(self.study, trial)

    def requeue(self, params: dict, original: int) -> None:
        """Queue `params` to run first next time, as a re-run of trial `original`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.enqueue_trial(dict(params), user_attrs={"requeued_from": original},
                                     skip_if_exists=False)
