"""Landscape (b) of the search-efficiency benchmark (issue 17): a surrogate of real trainings.

`accuracy(config, cost=None)` predicts the mean top-1 accuracy of two trainings (two seeds) of an
architecture of benchmarks/spaces/surrogate.yaml by the train evaluator on scikit-learn's digits
(320 training images, 360 validation images, 32x32, 4 epochs). The model is the one
benchmarks/fit_surrogate.py fitted to benchmarks/data/surrogate_trainings.jsonl and wrote to
benchmarks/data/surrogate_model.json (plain numbers: no pickles); this module only reads it.

Deterministic (no randomness at all) and fast: the features are a few fields of the config and its
cost (`space.complexity`, passed in by the benchmark, which prices every config anyway).
`accuracy_many(configs, costs)` scores many configs at once. The surrogate is fitted on the
surrogate space only: other spaces (xt_t at 224) lie outside what was trained, and `accuracy`
refuses a config with a field value that space does not have (see `check_domain`).

In a study (the benchmark puts this folder on sys.path):
    evaluator: {name: "landscapes:LandscapeEvaluator", landscape: "landscape_real:accuracy"}
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL = Path(__file__).resolve().parent / "data" / "surrogate_model.json"

# The base features, in order; `expand` adds the model's products of them.
BASE_FEATURES = ("base_depth3", "overview_depth", "focus_depth3", "focus_depth4", "log2_width",
                 "stage3_ratio", "region_count", "dynamic_kernel3", "focus_heads3", "mlp_ratio",
                 "log2_gmacs", "log2_params")


def base_features(config, cost=None) -> list[float]:
    """The base features of one config (`cost` is its `space.Cost`, computed when None)."""
    if cost is None:
        import space

        cost = space.complexity(config)
    w = config.widths
    return [float(config.base_depths[2]), float(config.overview_depth),
            float(config.focus_depths[0]), float(config.focus_depths[1]), math.log2(w[0]),
            w[2] / w[1], float(config.region_count), float(config.dynamic_kernels[0]),
            float(config.focus_heads[0]), float(config.mlp_ratios[0]),
            math.log2(cost.flops / 1e9), math.log2(cost.params_inference)]


def expand(x: np.ndarray, products: list[list[int]]) -> np.ndarray:
    """(n, base) -> (n, base + len(products)): the base features, then each listed product
    (a pair [i, j] of base-feature indices; i == j is a square)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    if not products:
        return x
    extra = np.stack([x[:, i] * x[:, j] for i, j in products], axis=1)
    return np.concatenate([x, extra], axis=1)


def predict(model: dict, x: np.ndarray) -> np.ndarray:
    """The model's prediction for base-feature rows `x` (n, base)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    unused = np.ones(x.shape[1], dtype=bool)
    unused[model["columns"]] = False
    x = np.where(unused, 0.0, x)         # features the model does not use carry no weight
    z = (expand(x, model["products"]) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    if model["kind"] == "ridge":
        return z @ np.asarray(model["coef"]) + model["intercept"]
    if model["kind"] == "trees":
        out = np.full(len(z), float(model["intercept"]))
        for tree in model["trees"]:
            out += model["learning_rate"] * _tree_values(tree, z)
        return out
    raise ValueError(f"{MODEL}: model kind {model['kind']!r}: expected ridge or trees")


def _tree_values(tree: dict, z: np.ndarray) -> np.ndarray:
    """Leaf values of a regression tree stored as sklearn's arrays (feature -2 marks a leaf)."""
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
    left, right, value = np.asarray(tree["left"]), np.asarray(tree["right"]), np.asarray(tree["value"])
    node = np.zeros(len(z), dtype=int)
    for _ in range(64):
        inner = feature[node] >= 0
        if not inner.any():
            break
        rows = np.nonzero(inner)[0]
        go_left = z[rows, feature[node[rows]]] <= threshold[node[rows]]
        node[rows] = np.where(go_left, left[node[rows]], right[node[rows]])
    return value[node]


def quadratic_form(model: dict) -> tuple[float, np.ndarray, np.ndarray]:
    """A ridge model on base features and their pairwise products, folded into
    c + b.x + x.Q.x over the base features, so one config costs three small products."""
    n = len(model["mean"]) - len(model["products"])
    w = np.asarray(model["coef"]) / np.asarray(model["scale"])
    c = float(model["intercept"] - w @ np.asarray(model["mean"]))
    b, q = w[:n].copy(), np.zeros((n, n))
    for (i, j), wk in zip(model["products"], w[n:]):
        q[i, j] += wk
    unused = np.ones(n, dtype=bool)
    unused[model["columns"]] = False
    b[unused], q[unused, :], q[:, unused] = 0.0, 0.0, 0.0
    return c, b, q


def _tree_lists(tree: dict) -> tuple:
    return tuple(tree[k] for k in ("feature", "threshold", "left", "right", "value"))


@lru_cache(maxsize=4)
def load_model(path: str = str(MODEL)) -> dict:
    try:
        model = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no fitted surrogate; run benchmarks/fit_surrogate.py") from None
    model["_domain"] = {k: set(v) for k, v in model["domain"].items()}
    if model["kind"] == "ridge":
        model["_quadratic"] = quadratic_form(model)
    else:
        model["_trees"] = [_tree_lists(tree) for tree in model["trees"]]
    return model


def predict_one(model: dict, features: list[float]) -> float:
    """`predict` for one config without numpy's per-array overhead (the benchmark calls the
    landscape once per config); equal to `predict` up to float rounding."""
    if "_quadratic" in model:
        c, b, q = model["_quadratic"]
        x = np.asarray(features)
        return float(c + b @ x + x @ q @ x)
    unused = set(range(len(features))) - set(model["columns"])
    z = [(0.0 if i in unused else v) for i, v in enumerate(features)]
    z = [(v - m) / s for v, m, s in zip(z, model["mean"], model["scale"])]
    out = float(model["intercept"])
    for feature, threshold, left, right, value in model["_trees"]:
        node = 0
        while feature[node] >= 0:
            node = left[node] if z[feature[node]] <= threshold[node] else right[node]
        out += model["learning_rate"] * value[node]
    return out


def check_domain(model: dict, features: list[float]) -> None:
    """Refuse a config whose discrete fields take a value no config of the surrogate space has
    (another space: the surrogate would extrapolate beyond anything trained)."""
    for name, value in zip(BASE_FEATURES, features):
        seen = model["_domain"].get(name)
        if seen is not None and value not in seen:
            raise ValueError(f"landscape_real: {name} = {value:g} is outside the trained space "
                             f"({sorted(seen)}); the surrogate covers benchmarks/spaces/surrogate.yaml only")


def accuracy(config, cost=None) -> float:
    """Predicted mean accuracy of two real trainings of `config` (deterministic)."""
    model = load_model()
    features = base_features(config, cost)
    check_domain(model, features)
    return predict_one(model, features)


def accuracy_many(configs, costs=None) -> np.ndarray:
    """`accuracy` of many configs at once (one matrix product / tree pass)."""
    model = load_model()
    costs = costs if costs is not None else [None] * len(configs)
    rows = [base_features(c, k) for c, k in zip(configs, costs)]
    for row in rows:
        check_domain(model, row)
    return predict(model, np.asarray(rows))
