"""A per-device latency model for OverLoCK configs: predict before measuring.

    >>> from nas.latency import model as latency_model
    >>> model = latency_model.fit(configs, latencies_ms, settings)     # measured by nas.latency.measure
    >>> model.predict(config), model.interval(config), model.cv["spearman"], model.margin
    >>> model.save(latency_model.model_path(settings["device"], settings))
    >>> latency_model.load(path).predict(config)                       # ms

How (a kernel-level decomposition, the idea of nn-Meter): the analytic cost model
(`space.complexity`, deploy structure, at the measured resolution and batch) breaks a config into
op kinds - dense, pointwise and depthwise convs, LayerScale multiplies, norms, pools, resamples,
the query-key matmul and the aggregation op - with the MACs, output elements and calls of each.
Latency is modelled as a non-negative sum of

    ms = c0 + sum_kind a_kind * MACs_kind + b * elements + d * calls

(time per MAC of each kernel kind, per element written, per op launched, plus a constant). It is
fitted by bounded least squares on *relative* errors (each measurement weighted 1 / its latency),
with a ridge penalty that pulls the coefficients towards the FLOPs-alone fit (one time per MAC
for every kind, no element or call term): with few measurements the model is the FLOPs line, and
it departs from it only as far as the measurements support. The ridge strength is chosen by
leave-one-out cross-validation, which also gives the stated error (`cv`, `margin`).

The model is only valid for the settings it was fitted at (`settings`: device string,
resolution, batch, dtype, channels_last, threads: `nas.latency.store.measurement_settings`);
`model_path` keeps one file per device and settings beside the per-device latency store.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nas.util import write_atomic

from .store import device_cache_dir

__all__ = ["LatencyModel", "fit", "load", "model_path", "features", "FEATURES", "SETTINGS_KEYS",
           "cv_statistics", "LatencyModelError"]

FORMAT = "overlock-nas/latency-model/1"
KINDS = ("conv", "pwconv", "dwconv", "scale", "norm", "pool", "resample", "matmul", "aggregation")
# feature -> unit it is expressed in (numbers of similar size keep the least squares well scaled)
FEATURES = ("const", *(f"gmacs_{k}" for k in KINDS), "m_elements", "k_calls")
SETTINGS_KEYS = ("device", "resolution", "batch", "dtype", "channels_last", "threads")
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
CV_METHOD = ("leave-one-out; each measurement predicted at the ridge chosen on the other "
             "measurements' leave-one-out errors")
COVERAGE = 0.95     # `margin` holds for this share of held-out predictions
MIN_MEASUREMENTS = 3


class LatencyModelError(ValueError):
    """A model file that cannot be read, or data a model cannot be fitted on (one line)."""


# --------------------------------------------------------------------------------- features
def _resolution(settings: dict, config) -> tuple[int, int]:
    res = settings.get("resolution")
    if res is None:
        return tuple(config.resolution)
    if isinstance(res, int):
        return (res, res)
    return (int(res[0]), int(res[1]))


def features(config, settings: dict) -> np.ndarray:
    """The feature vector (`FEATURES` order) of `config` at the settings' resolution and batch."""
    from space.cost import complexity

    cost = complexity(config, resolution=_resolution(settings, config),
                      batch=int(settings.get("batch") or 1), deploy=True)
    kinds = cost.by_kind
    row = [1.0]
    row += [kinds.get(k, {}).get("macs", 0) / 1e9 for k in KINDS]
    row.append(sum(v["elements"] for v in kinds.values()) / 1e6)
    row.append(sum(v["calls"] for v in kinds.values()) / 1e3)
    return np.asarray(row, dtype=float)


def _flops_features(x: np.ndarray) -> np.ndarray:
    """[const, total GMACs] from full feature rows."""
    return np.stack([x[:, 0], x[:, 1:1 + len(KINDS)].sum(axis=1)], axis=1)


# -------------------------------------------------------------------------------- statistics
def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tie = values == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n0 = len(i)
    ties_a, ties_b = np.sum(da == 0), np.sum(db == 0)
    denom = math.sqrt((n0 - ties_a) * (n0 - ties_b))
    return float(np.sum(da * db) / denom) if denom else float("nan")


def _conformal_quantile(errors: np.ndarray, coverage: float = COVERAGE) -> float:
    """The ceil((n + 1) * coverage)-th smallest error: a bound that holds for a new prediction
    with probability >= coverage when errors are exchangeable (inf when n is too small)."""
    e = np.sort(np.asarray(errors, float))
    k = math.ceil((len(e) + 1) * coverage)
    return float(e[k - 1]) if k <= len(e) else float("inf")


def cv_statistics(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Agreement of held-out predictions with measurements.

    Returns {"n", "spearman", "kendall", "within_10pct" (share with |pred / measured - 1| <= 0.1),
    "mape" (mean |pred / measured - 1|), "p95_error" (the conformal 95 % bound on that error)}.
    """
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = np.abs(p / m - 1.0)
    return {"n": int(len(m)), "spearman": round(_spearman(p, m), 4),
            "kendall": round(_kendall(p, m), 4),
            "within_10pct": round(float(np.mean(rel <= 0.10)), 4),
            "mape": round(float(np.mean(rel)), 4), "p95_error": round(_conformal_quantile(rel), 4)}


# ------------------------------------------------------------------------------------ fitting
def _solve(x: np.ndarray, y: np.ndarray, prior: np.ndarray | None, ridge: float) -> np.ndarray:
    """min sum((x b - y) / y)^2 + ridge * sum((s_j (b_j - prior_j)) / mean(y))^2, b >= 0, where
    s_j is feature j's mean magnitude (the penalty is in units of each term's share of a
    prediction, so it does not depend on the features' units)."""
    from scipy.optimize import lsq_linear

    w = 1.0 / y
    a, rhs = x * w[:, None], np.ones_like(y)
    if prior is not None and ridge > 0:
        scale = np.abs(x).mean(axis=0) / y.mean()
        rows = np.diag(math.sqrt(ridge) * scale)
        a = np.vstack([a, rows])
        rhs = np.concatenate([rhs, rows @ prior])
    keep = np.abs(a).sum(axis=0) > 0   # a feature that is zero everywhere keeps its prior
    coef = np.array(prior, float) if prior is not None else np.zeros(x.shape[1])
    if keep.any():
        coef[keep] = lsq_linear(a[:, keep], rhs, bounds=(0.0, np.inf), method="bvls").x
    return coef


def _flops_prior(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The FLOPs-alone fit (ms = c0 + a * GMACs) written as full coefficients."""
    c0, a = _solve(_flops_features(x), y, None, 0.0)
    prior = np.zeros(x.shape[1])
    prior[0] = c0
    prior[1:1 + len(KINDS)] = a
    return prior


def _best_ridge(mean_errors: np.ndarray) -> int:
    """Index of the smallest mean error (the first, i.e. the weakest ridge, among equals)."""
    return int(np.flatnonzero(mean_errors <= mean_errors.min() + 1e-12)[0])


def _held_out_unselected(by_ridge: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions (`by_ridge[r, i]`: measurement i predicted without it at ridge
    r) in which measurement i's ridge was chosen on the *other* measurements' errors.

    Why: choosing the ridge on all leave-one-out errors and then quoting those same errors lets
    each measurement's own error vote for the ridge it is judged at, so the errors - and the
    conformal margin taken from them - come out optimistic. Here no measurement's error has a
    say in the ridge that predicts it. (The others' predictions still came from fits that saw
    it; only a nested leave-one-out, n times the fitting, removes that too.)
    """
    errors = np.abs(by_ridge / y - 1.0)
    total, n = errors.sum(axis=1), len(y)
    picked = [_best_ridge((total - errors[:, i]) / max(n - 1, 1)) for i in range(n)]
    return by_ridge[picked, np.arange(n)]


def _loo(x: np.ndarray, y: np.ndarray, ridge: float, flops_only: bool = False) -> np.ndarray:
    """Leave-one-out predictions (the prior is refitted without the held-out point too)."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if flops_only:
            coef = _solve(_flops_features(x[keep]), y[keep], None, 0.0)
            out[i] = (_flops_features(x[i:i + 1]) @ coef)[0]
        else:
            coef = _solve(x[keep], y[keep], _flops_prior(x[keep], y[keep]), ridge)
            out[i] = x[i] @ coef
    return np.maximum(out, 1e-9)


class LatencyModel:
    """A fitted model: `predict(config)` in ms at `settings`, with its cross-validated error.

    Attributes:
        settings: device (string from `nas.latency.device.device_string`), resolution ([H, W] or None
            for each config's own), batch, dtype, channels_last, threads.
        margin: relative error bound from leave-one-out cross-validation (0.08 = +-8 %) that held
            for >= 95 % of held-out predictions (conformal quantile; inf with too few points).
        cv: {"n", "spearman", "kendall", "within_10pct", "mape", "p95_error", "method",
            "flops_baseline": the same statistics for a FLOPs-alone line}.
        coef: coefficients in `FEATURES` order; ridge: the chosen penalty.
        configs, latencies_ms: the measurements it was fitted on (to refit with more).
    """

    def __init__(self, settings: dict, coef, margin: float, cv: dict, ridge: float,
                 configs: list | None = None, latencies_ms: list | None = None,
                 fitted_at: float | None = None):
        self.settings = dict(settings)
        self.coef = np.asarray(coef, float)
        self.margin = float(margin)
        self.cv = dict(cv)
        self.ridge = float(ridge)
        self.configs = list(configs or [])
        self.latencies_ms = [float(v) for v in (latencies_ms or [])]
        self.fitted_at = fitted_at if fitted_at is not None else time.time()
        self._memo: dict = {}

    def predict(self, config) -> float:
        """Predicted latency of `config` in ms at this model's settings."""
        value = self._memo.get(config)
        if value is None:
            value = max(float(features(config, self.settings) @ self.coef), 1e-6)
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[config] = value
        return value

    def interval(self, config) -> tuple[float, float]:
        """(low, high) ms: the latencies for which the prediction is within the stated margin
        (|pred / latency - 1| <= margin); high is inf when margin >= 1."""
        p = self.predict(config)
        m = self.margin
        return (p / (1.0 + m), p / (1.0 - m) if m < 1.0 else float("inf"))

    def refit(self, configs: Iterable, latencies_ms: Iterable[float]) -> "LatencyModel":
        """A new model fitted on this model's measurements plus these (same settings)."""
        from overlock import OverLoCKConfig

        old = [OverLoCKConfig.from_dict(c) for c in self.configs]
        return fit(old + list(configs), self.latencies_ms + [float(v) for v in latencies_ms],
                   self.settings)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "settings": self.settings, "features": list(FEATURES),
                "coef": [float(c) for c in self.coef], "ridge": self.ridge, "margin": self.margin,
                "cv": self.cv, "fitted_at": self.fitted_at,
                "data": {"configs": self.configs, "latencies_ms": self.latencies_ms}}

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as JSON (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(_jsonable(self.to_dict()), indent=1))

    def __repr__(self) -> str:
        return (f"LatencyModel(n={self.cv.get('n')}, spearman={self.cv.get('spearman')}, "
                f"within_10pct={self.cv.get('within_10pct')}, margin={self.margin:.3f}, "
                f"device={self.settings.get('device')!r})")


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _from_json(obj):
    """Inverse of `_jsonable` for the infinities ("inf" / "-inf" back to floats)."""
    if obj in ("inf", "-inf"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _from_json(v) for k, v in obj.items()}
    return obj


def _settings(settings: dict) -> dict:
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    if missing:
        raise LatencyModelError(f"settings: missing {', '.join(missing)} (need {', '.join(SETTINGS_KEYS)})")
    out = dict(settings)
    res = out["resolution"]
    if isinstance(res, int):
        out["resolution"] = [res, res]
    elif res is not None:
        out["resolution"] = [int(r) for r in res]
    return out


def fit(configs: Sequence, latencies_ms: Sequence[float], settings: dict) -> LatencyModel:
    """Fit a latency model on measured configs.

    Args:
        configs: `OverLoCKConfig`s (or their dicts), measured at `settings`.
        latencies_ms: their measured latencies (ms), same order.
        settings: device (string), resolution ([H, W] or None), batch, dtype, channels_last,
            threads - what the measurements were made with.

    Returns:
        a `LatencyModel` with leave-one-out `cv` statistics and `margin`.

    Raises:
        LatencyModelError: fewer than 3 measurements, lengths differ, or a latency <= 0 / NaN.
    """
    from overlock import OverLoCKConfig

    settings = _settings(settings)
    configs = [c if isinstance(c, OverLoCKConfig) else OverLoCKConfig.from_dict(c) for c in configs]
    y = np.asarray([float(v) for v in latencies_ms], float)
    if len(configs) != len(y):
        raise LatencyModelError(f"fit: {len(configs)} configs but {len(y)} latencies")
    if len(y) < MIN_MEASUREMENTS:
        raise LatencyModelError(f"fit: {len(y)} measurements; need at least {MIN_MEASUREMENTS}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise LatencyModelError("fit: every latency must be a finite number of ms > 0")
    x = np.stack([features(c, settings) for c in configs])
    by_ridge = np.stack([_loo(x, y, ridge) for ridge in RIDGE_GRID])
    ridge = RIDGE_GRID[_best_ridge(np.abs(by_ridge / y - 1.0).mean(axis=1))]
    cv = cv_statistics(_held_out_unselected(by_ridge, y), y)
    cv["method"] = CV_METHOD
    cv["flops_baseline"] = cv_statistics(_loo(x, y, 0.0, flops_only=True), y)
    coef = _solve(x, y, _flops_prior(x, y), ridge)
    return LatencyModel(settings, coef, cv["p95_error"], cv, ridge,
                        configs=[c.to_dict() for c in configs], latencies_ms=list(y))


def load(path: str | os.PathLike) -> LatencyModel:
    """Read a model written by `LatencyModel.save`.

    Raises:
        LatencyModelError: missing, not JSON, or not a latency model of this format (one line).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise LatencyModelError(f"{path}: no such latency model file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise LatencyModelError(f"{path}: not a readable JSON latency model ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LatencyModelError(f"{path}: format: expected {FORMAT!r}, got "
                                f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
    if list(doc.get("features", [])) != list(FEATURES):
        raise LatencyModelError(f"{path}: features: fitted on {doc.get('features')}, this version uses "
                                f"{list(FEATURES)}; refit it")
    margin = doc.get("margin")
    margin = float("inf") if margin in (None, "inf") else float(margin)
    data = doc.get("data") or {}
    return LatencyModel(doc["settings"], doc["coef"], margin, _from_json(doc.get("cv", {})), doc.get("ridge", 0.0),
                        configs=data.get("configs"), latencies_ms=data.get("latencies_ms"),
                        fitted_at=doc.get("fitted_at"))


def _protocol_suffix(settings: dict) -> str:
    """"" for protocol 1 (files written before versions were recorded keep their names), else
    "_p<version>": a model fitted on one protocol's readings is never found for another's."""
    version = int(settings.get("protocol") or 1)
    return "" if version == 1 else f"_p{version}"


def model_path(device_string: str, settings: dict) -> Path:
    """Where the model for `device_string` at `settings` lives: beside the per-device latency
    store, one file per resolution / batch / dtype / memory format / threads."""
    res = settings.get("resolution")
    res_text = "config" if res is None else ("x".join(str(int(r)) for r in res)
                                              if not isinstance(res, int) else f"{res}x{res}")
    name = (f"latency_model_res{res_text}_b{int(settings.get('batch') or 1)}_"
            f"{settings.get('dtype') or 'fp32'}{'_cl' if settings.get('channels_last') else ''}_"
            f"t{settings.get('threads') or 'all'}{_protocol_suffix(settings)}.json")
    return Path(device_cache_dir(device_string)) / name
