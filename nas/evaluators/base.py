"""The evaluators' base library: what every evaluator is built from.

- `Evaluator` (the contract: `evaluate(config, ...) -> {"score", ...}`) and `TrialError` (a trial
  that cannot produce a score, one line).
- `fit_to_data` (the config with the data set's classes and channels).
- Re-exported for the evaluators: the settings schemas (`nas.settings`: `Setting`,
  `resolve_settings` and the checks) and `dataset_record` (`nas.data`: what a score was
  measured on).

This module imports no evaluator: `nas.evaluators` (the registry) maps names to the evaluators,
which build on this.
"""

from __future__ import annotations

import abc

from nas.data import dataset_record
from nas.settings import (Setting, boolean, choice, dataset, integer, number, resolution,
                          resolve_settings)

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


def fit_to_data(config, data):
    """The config with `num_classes` / `in_chans` set to the data set's (the head and stem the
    evaluator trains); the study still prices the config it sampled, and the engine records the
    difference (`trained_num_classes`)."""
    return config.with_io(data.num_classes, data.in_chans)
