"""The evaluators' base library: what every evaluator is built from.

- `Evaluator` (the contract: `evaluate(config, ...) -> {"score", ...}`) and `TrialError` (a trial
  that cannot produce a score, one line).
- Settings schemas: `Setting(default, check)`, `resolve_settings` and the checks (`integer`,
  `number`, `choice`, `boolean`, `resolution`, `dataset`): bad values raise one-line ValueErrors
  naming the key.
- `dataset_record` (what a score was measured on) and `fit_to_data` (the config with the data
  set's classes and channels).

This module imports no evaluator: `nas.evaluators` (the registry) maps names to the evaluators,
and the evaluators, the training recipe (`nas.training`) and supernet training build on this.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import Any, Callable, Mapping

__all__ = ["TrialError", "Evaluator", "Setting", "resolve_settings", "integer", "number", "choice",
           "boolean", "resolution", "dataset", "dataset_record", "fit_to_data"]


class TrialError(RuntimeError):
    """A trial that cannot produce a score; `reason` is one line for the study record."""

    def __init__(self, reason: str):
        reason = " ".join(str(reason).split())  # one line
        super().__init__(reason)
        self.reason = reason


class Evaluator(abc.ABC):
    """Scores one architecture. Subclasses define `name`, `metric`, `rungs` and `evaluate`.

    Attributes:
        name: registry name ("train", "synflow", ...).
        metric: the metric its score is stored under ("accuracy" or the proxy name).
        rungs: epoch counts for successive halving, ascending, the last = full budget;
            [] when the evaluator has no fidelity levels.
        settings: the resolved settings (defaults filled in), JSON-able.
    """

    name: str
    metric: str
    rungs: list[int]
    settings: dict

    @abc.abstractmethod
    def evaluate(self, config, *, budget_epochs: int | None, device: str, seed: int, workdir: str,
                 resume_from: str | None, weights_name: str | None = None) -> dict:
        """Score `config` (an `overlock.OverLoCKConfig`).

        Returns at least {"score": float, "epochs": int, "history": [float, ...],
        "weights": path or None, "fidelity": float}. Raises `TrialError`.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"


# ------------------------------------------------------------------------- settings helpers
class Setting:
    """One settings key: default and a check that returns the normalised value or raises."""

    def __init__(self, default: Any, check: Callable[[str, Any], Any]):
        self.default = default
        self.check = check


def resolve_settings(evaluator: str, settings: Mapping[str, Any] | None,
                     schema: Mapping[str, Setting]) -> dict:
    """Fill defaults and validate; unknown keys and bad values raise ValueError naming the key."""
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"evaluator settings for {evaluator!r} must be a mapping, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(schema))
    if unknown:
        raise ValueError(f"evaluator {evaluator!r}: unknown setting {unknown[0]!r} "
                         f"(known: {', '.join(sorted(schema))})")
    out = {}
    for key, spec in schema.items():
        value = settings.get(key, spec.default)
        out[key] = spec.check(key, value) if value is not None else None
    return out


def integer(low: int | None = None, high: int | None = None):
    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or (low is not None and value < low) or (high is not None and value > high):
            rule = " and ".join(r for r in (f">= {low}" if low is not None else "",
                                            f"<= {high}" if high is not None else "") if r)
            raise ValueError(f"{key}={value!r} must be an integer{' ' + rule if rule else ''}")
        return int(value)
    return check


def number(low: float | None = None, high: float | None = None, low_open: bool = False):
    def check(key, value):
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value <= high
        if not ok:
            lo = f"{'>' if low_open else '>='} {low}" if low is not None else ""
            hi = f"<= {high}" if high is not None else ""
            rule = " and ".join(r for r in (lo, hi) if r)
            raise ValueError(f"{key}={value!r} must be a number{' ' + rule if rule else ''}")
        return float(value)
    return check


def choice(*options):
    def check(key, value):
        if value not in options:
            raise ValueError(f"{key}={value!r} must be one of {', '.join(map(repr, options))}")
        return value
    return check


def boolean(key, value):
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true or false")
    return value


def resolution(key, value):
    """An int, [H, W], or "HxW" -> [H, W] (each >= 32)."""
    if isinstance(value, str) and "x" in value:
        value = value.split("x")
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value, value]
    try:
        hw = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} must be an integer or [height, width]") from None
    if len(hw) != 2 or min(hw) < 32:
        raise ValueError(f"{key}={value!r} must be an integer or [height, width], each >= 32")
    return hw


def dataset(key, value):
    from nas.data import DataError, parse_dataset_settings

    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping like {{kind: procedural}}, got {value!r}")
    try:
        spec = parse_dataset_settings(value)
    except DataError as e:
        raise ValueError(str(e)) from None
    return {k: v for k, v in vars(spec).items() if v is not None}


# ------------------------------------------------------------------------- what a score was measured on
def dataset_record(settings: Mapping[str, Any], data, resolution, augment=None) -> dict:
    """What a score was measured on, stored with the trial (`dataset` user attr) and shown by the
    report and the model card: {"description" (one line), "kind", "path" (folders) or "seed"
    (procedural), "classes", "train_size", "val_size", "resolution" [H, W], "augment" (the
    resolved training augmentation, or None)}."""
    h, w = (int(v) for v in resolution)
    kind = settings.get("kind", "procedural")
    record = {"kind": kind, "classes": int(data.num_classes), "train_size": len(data.train),
              "val_size": len(data.val), "resolution": [h, w], "augment": augment}
    if settings.get("path"):
        record["path"] = str(settings["path"])
    else:
        record["seed"] = int(settings.get("seed", 0) or 0)
    record["description"] = (f"{data.description}; {len(data.train)} train / {len(data.val)} val "
                             f"images at {h}x{w}")
    return record


def fit_to_data(config, data):
    """The config with `num_classes` / `in_chans` set to the data set's (the head and stem the
    evaluator trains); the study still prices the config it sampled, and the engine records the
    difference (`trained_num_classes`)."""
    changes = {}
    if config.num_classes != data.num_classes:
        changes["num_classes"] = data.num_classes
    if config.in_chans != data.in_chans:
        changes["in_chans"] = data.in_chans
    return config.replace(**changes) if changes else config
