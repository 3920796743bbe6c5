"""Evaluators: what a trial's score is.

- `train`: proxy training on a data set (`nas.data`) with AdamW, warm-up + cosine, label smoothing,
  the auxiliary-head loss and AMP on GPU; the metric is top-1 validation accuracy. Supports
  successive halving: `rungs` lists the epoch counts after which the engine compares trials, and
  `evaluate(..., resume_from=...)` continues a trial from its last rung instead of restarting.
- `synflow`, `naswot`, `zico`: zero-cost proxies computed on one batch at initialisation.
- `supernet`: validation accuracy of the weights a trained supernet passes on (`weights: DIR`
  from `overlock-nas supernet train`), batch norm re-estimated; no training (issue 19).

    >>> from nas.evaluators import get_evaluator
    >>> ev = get_evaluator("train", {"epochs": 6, "rungs": [2, 6], "dataset": {"kind": "procedural"}})
    >>> ev.metric, ev.rungs
    ('accuracy', [2, 6])
    >>> result = ev.evaluate(config, budget_epochs=2, device="cpu", seed=0, workdir="run/weights",
    ...                      resume_from=None)                                  # doctest: +SKIP
    >>> sorted(result)                                                          # doctest: +SKIP
    ['epochs', 'fidelity', 'history', 'score', 'weights', ...]

This package is the registry (`get_evaluator`, `EVALUATORS`, `METRICS`); the base library the
evaluators share (`Evaluator`, `TrialError`, the settings checks, `dataset_record`,
`fit_to_data`) is `nas.evaluators.base`, re-exported here.

`evaluate` raises `TrialError(reason)` (one line) when a trial cannot produce a score: NaN or
infinite loss, out of memory, unusable data. Bad settings raise `ValueError` naming the key when
the evaluator is created, before any trial runs.
"""

from __future__ import annotations

from typing import Any, Mapping

from .base import (Evaluator, Setting, TrialError, boolean, choice, dataset, dataset_record,  # noqa: F401
                   fit_to_data, integer, number, resolution, resolve_settings)

__all__ = ["TrialError", "Evaluator", "get_evaluator", "EVALUATORS", "METRICS"]

# evaluator name -> the metric name its score is stored under (docs/reference/storage.md)
METRICS = {"train": "accuracy", "synflow": "synflow", "naswot": "naswot", "zico": "zico",
           "supernet": "accuracy"}
EVALUATORS = tuple(METRICS)


def get_evaluator(name: str, settings: Mapping[str, Any] | None = None) -> Evaluator:
    """The evaluator `name` ("train", "synflow", "naswot", "zico", "supernet") with validated settings.

    Raises:
        ValueError: unknown evaluator, unknown setting or bad value (names it).
    """
    if name == "train":
        from .train import TrainEvaluator

        return TrainEvaluator(settings)
    if name in ("synflow", "naswot", "zico"):
        from .zero_cost import ZeroCostEvaluator

        return ZeroCostEvaluator(name, settings)
    if name == "supernet":
        from .supernet import SupernetEvaluator

        return SupernetEvaluator(settings)
    raise ValueError(f"unknown evaluator {name!r} (known: {', '.join(EVALUATORS)})")
