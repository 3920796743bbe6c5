"""Settings schemas: each key's default and its check, one-line errors naming the key.

    >>> SCHEMA = {"lr": Setting(1e-3, number(0, low_open=True)), "epochs": Setting(10, integer(1))}
    >>> resolve_settings("train", {"epochs": 3}, SCHEMA)
    {'lr': 0.001, 'epochs': 3}
    >>> resolve_settings("train", {"epochs": 0}, SCHEMA)
    Traceback (most recent call last):
    ValueError: epochs=0 must be an integer >= 1

Used by the evaluators (`nas.evaluators`) and the training recipe (`nas.training`); imports
`nas.data` only to check a `dataset:` mapping.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

__all__ = ["Setting", "resolve_settings", "integer", "number", "choice", "boolean", "resolution",
           "dataset"]


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
