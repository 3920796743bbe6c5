"""Fit the real-image landscape (b) of the search-efficiency benchmark (issue 17).

Reads benchmarks/data/surrogate_trainings.jsonl (architectures of benchmarks/spaces/surrogate.yaml,
each trained under two seeds by the engine; benchmarks/run_surrogate_trainings.py), fits a few
small models of the mean accuracy of the two seeds on features of the config and its exact cost
(benchmarks/landscape_real.py: depths, widths, region count, kernel, heads, MLP ratio, log GMACs,
log params, and products of them), picks the one with the best held-out Spearman rho (repeated
k-fold, out-of-fold predictions), refits it on every row and writes it as plain JSON to
benchmarks/data/surrogate_model.json together with its held-out rho and the seed-vs-seed rho of
the same architectures, so the surrogate's limits are stated beside it. Deterministic: rerunning
on the same table writes the same numbers.

    python3 benchmarks/fit_surrogate.py                 # fit, print the comparison, write the JSON
    python3 benchmarks/fit_surrogate.py --check         # refit and compare with the committed JSON
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import landscape_real as lr  # noqa: E402
from surrogate_table import read_table  # noqa: E402

TABLE = HERE / "data" / "surrogate_trainings.jsonl"
SPACE = HERE / "spaces" / "surrogate.yaml"
N_BASE = len(lr.BASE_FEATURES)
SIZE = [lr.BASE_FEATURES.index("log2_gmacs"), lr.BASE_FEATURES.index("log2_params")]
ALL_PAIRS = [list(p) for p in itertools.combinations_with_replacement(range(N_BASE), 2)]


def candidates(have_sklearn: bool) -> list[dict]:
    """Model settings tried; the best held-out rho is kept. `columns`: base features used."""
    out = [{"name": f"ridge, size only (alpha {a})", "kind": "ridge", "alpha": a, "columns": SIZE,
            "products": [[SIZE[0], SIZE[0]], SIZE, [SIZE[1], SIZE[1]]]} for a in (1.0,)]
    out += [{"name": f"ridge, linear (alpha {a})", "kind": "ridge", "alpha": a,
             "columns": list(range(N_BASE)), "products": []} for a in (1.0, 10.0)]
    out += [{"name": f"ridge, pairwise products (alpha {a})", "kind": "ridge", "alpha": a,
             "columns": list(range(N_BASE)), "products": ALL_PAIRS} for a in (3.0, 10.0, 30.0, 100.0)]
    if have_sklearn:
        out += [{"name": f"boosted trees (depth {d}, {n} trees, rate 0.05)", "kind": "trees",
                 "depth": d, "n_trees": n, "columns": list(range(N_BASE)), "products": []}
                for d, n in ((2, 100), (3, 100), (2, 300))]
    return out


def features_and_targets(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Base features (n, N_BASE) from each row's config and its exact cost; accuracy (n, 2)."""
    import space
    from overlock.config import OverLoCKConfig

    x = []
    for row in rows:
        config = OverLoCKConfig.from_dict(row["config"])
        x.append(lr.base_features(config, space.complexity(config)))
    return np.asarray(x), np.asarray([row["accuracy"] for row in rows], dtype=float)


def fit(settings: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """A model dict that landscape_real.predict reads; `x` holds all base features."""
    mask = np.zeros(N_BASE, dtype=bool)
    mask[settings["columns"]] = True
    xs = np.where(mask, x, 0.0)          # unused base features are zeroed, so they carry no weight
    expanded = lr.expand(xs, settings["products"])
    keep = expanded.std(axis=0) > 0
    mean = np.where(keep, expanded.mean(axis=0), 0.0)
    scale = np.where(keep, expanded.std(axis=0), 1.0)
    z = (expanded - mean) / scale
    model = {"kind": settings["kind"], "products": settings["products"], "columns": settings["columns"],
             "mean": mean.tolist(), "scale": scale.tolist()}
    if settings["kind"] == "ridge":
        yc = y - y.mean()
        coef = np.linalg.solve(z.T @ z + settings["alpha"] * np.eye(z.shape[1]), z.T @ yc)
        coef[~keep] = 0.0
        return dict(model, coef=coef.tolist(), intercept=float(y.mean()))
    from sklearn.ensemble import GradientBoostingRegressor

    gbm = GradientBoostingRegressor(n_estimators=settings["n_trees"], max_depth=settings["depth"],
                                    learning_rate=0.05, subsample=1.0, random_state=0).fit(z, y)
    trees = [{"feature": [int(f) if f >= 0 else -2 for f in t.tree_.feature],
              "threshold": t.tree_.threshold.tolist(), "left": t.tree_.children_left.tolist(),
              "right": t.tree_.children_right.tolist(), "value": t.tree_.value[:, 0, 0].tolist()}
             for t in gbm.estimators_[:, 0]]
    out = dict(model, trees=trees, learning_rate=0.05, intercept=float(y.mean()))
    assert np.allclose(lr.predict(out, xs), gbm.predict(z), atol=1e-9), "tree export disagrees with sklearn"
    return out


def held_out(settings: dict, x: np.ndarray, acc: np.ndarray, folds: int, repeats: int) -> dict:
    """Repeated k-fold: Spearman rho of the out-of-fold predictions against the mean of the two
    seeds and against each seed alone (averaged), mean over the repeats."""
    from scipy.stats import spearmanr

    y = acc.mean(axis=1)
    vs_mean, vs_seed = [], []
    for repeat in range(repeats):
        order = np.random.default_rng(repeat).permutation(len(y))
        oof = np.empty(len(y))
        for k in range(folds):
            test = order[k::folds]
            train = np.setdiff1d(order, test)
            oof[test] = lr.predict(fit(settings, x[train], y[train]), x[test])
        vs_mean.append(spearmanr(oof, y).statistic)
        vs_seed.append(np.mean([spearmanr(oof, acc[:, s]).statistic for s in (0, 1)]))
    return {"rho_vs_mean": float(np.mean(vs_mean)), "rho_vs_mean_sd": float(np.std(vs_mean)),
            "rho_vs_one_seed": float(np.mean(vs_seed))}


def space_domain() -> dict:
    """Each discrete base feature's values over the whole surrogate space (what `accuracy`
    accepts); the cost features are continuous and left out."""
    import space
    values: dict[str, set] = {}
    for config in space.load_space(SPACE).enumerate():
        cheap = lr.base_features(config, _NO_COST)
        for name, v in zip(lr.BASE_FEATURES, cheap):
            if not name.startswith("log2_gmacs") and not name.startswith("log2_params"):
                values.setdefault(name, set()).add(v)
    return {name: sorted(v) for name, v in values.items()}


class _NoCost:
    """A stand-in cost for the domain scan (its two features are dropped)."""
    flops = 1e9
    params_inference = 1


_NO_COST = _NoCost()


def fit_all(rows: list[dict], folds: int, repeats: int, quiet: bool = False) -> dict:
    from scipy.stats import spearmanr

    try:
        import sklearn  # noqa: F401
        have_sklearn = True
    except ImportError:
        have_sklearn = False
    x, acc = features_and_targets(rows)
    seed_rho = float(spearmanr(acc[:, 0], acc[:, 1]).statistic)
    report = []
    for settings in candidates(have_sklearn):
        scores = held_out(settings, x, acc, folds, repeats)
        report.append({"name": settings["name"], **{k: round(v, 4) for k, v in scores.items()}})
        if not quiet:
            print(f"{settings['name']:45s} held-out rho vs mean {scores['rho_vs_mean']:.3f} "
                  f"(sd {scores['rho_vs_mean_sd']:.3f}), vs one seed {scores['rho_vs_one_seed']:.3f}",
                  flush=True)
    best_i = max(range(len(report)), key=lambda i: report[i]["rho_vs_mean"])
    model = fit(candidates(have_sklearn)[best_i], x, acc.mean(axis=1))
    domain = space_domain()
    return {"format": "overlock-nas/surrogate-landscape", "version": 1,
            "space": "benchmarks/spaces/surrogate.yaml", "target": "mean top-1 accuracy of two seeds",
            "features": list(lr.BASE_FEATURES), "domain": domain, "n": len(rows),
            "chosen": report[best_i]["name"], "folds": folds, "repeats": repeats,
            "seed_vs_seed_rho": round(seed_rho, 4),
            # the mean of two seeds is less noisy than one seed: Spearman-Brown's estimate of
            # how well two such means would agree (the ceiling for a rho against the mean)
            "mean_of_two_reliability": round(2 * seed_rho / (1 + seed_rho), 4),
            "seed_gap": round(float(np.abs(acc[:, 0] - acc[:, 1]).mean()), 4),
            "accuracy_range": [round(float(acc.mean(axis=1).min()), 4), round(float(acc.mean(axis=1).max()), 4)],
            "candidates": report, **model}


def refit_chosen(stored: dict, rows: list[dict]) -> dict:
    """The stored model's chosen candidate refitted on `rows`, without the cross-validation
    (the quick half of --check: same settings + same table -> the same numbers)."""
    try:
        import sklearn  # noqa: F401
        have_sklearn = True
    except ImportError:
        have_sklearn = False
    settings = {c["name"]: c for c in candidates(have_sklearn)}.get(stored["chosen"])
    if settings is None:
        raise ValueError(f"model: chosen {stored['chosen']!r} is not a candidate of this script")
    x, acc = features_and_targets(rows)
    return fit(settings, x, acc.mean(axis=1))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--out", type=Path, default=lr.MODEL)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", action="store_true", help="refit and compare with --out; write nothing")
    args = ap.parse_args(argv)
    rows = read_table(args.table)
    if len(rows) < 2 * args.folds:
        raise SystemExit(f"{args.table}: {len(rows)} architectures; need at least {2 * args.folds}")
    result = fit_all(rows, args.folds, args.repeats, quiet=args.check)
    result["table_sha256"] = _digest(args.table)
    if args.check:
        stored = json.loads(args.out.read_text())
        same = same_model(stored, result)
        print(f"{args.out}: {'reproduced' if same else 'DIFFERS from a refit of'} {args.table}")
        raise SystemExit(0 if same else 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"seed A vs seed B rho {result['seed_vs_seed_rho']:.3f} over {result['n']} architectures "
          f"(mean |A - B| {result['seed_gap']:.3f}); chosen: {result['chosen']}; wrote {args.out} "
          f"(load {os.getloadavg()[0]:.2f})")


def same_model(a: dict, b: dict, tol: float = 1e-9) -> bool:
    """Equal up to float rounding in every number (nested lists and dicts compared leaf by leaf)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_model(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_model(u, v, tol) for u, v in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


if __name__ == "__main__":
    main()
