"""The ceiling of the noisy search-efficiency score: what a searcher that already knew the exact
front would score under `bench_search_efficiency.py --noise`, where a run is scored by the true
accuracy of the configs on its *observed* (noisy) front.

    python benchmarks/noise_ceiling.py                               # params-flops4G, 3 landscapes, 0.25 and 1
    python benchmarks/noise_ceiling.py --results benchmarks/results/noise_ceiling.jsonl

No engine runs: the space is enumerated once (the benchmark's cache under bench_out/), and for
each landscape and noise level the "perfect" searcher trains a fixed set of configs chosen with
the exact front known, each read once with seeded Gaussian noise (the benchmark's standard
deviation), then exports the front of its readings. Sets:

- `front`: exactly the configs on the exact feasible front;
- `front+kNN`: those plus each one's k nearest feasible configs in objective space (each objective
  scaled to the feasible range), as a searcher that homes in on the front also trains;
- `layers<=N`: the first non-dominated layers of the feasible space, up to N configs (N = the
  trial budget): the N configs "closest" to the front.

Each set is read `--draws` times (other noise each time). A line gives the median and the 10th /
90th percentile of the true hypervolume of the exported front over the exact one. Even `front`
scores below 1: an unlucky reading of a front config puts it behind a lucky neighbour of the
front, and the export loses it. This is not a bound over every possible searcher (a set that
leaves out some front configs can, in principle, score higher), but no set of this kind, which a
searcher that has found the front trains, does better.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_search_efficiency as bse  # noqa: E402


def feasible_points(table: dict, scenario, landscape: str) -> np.ndarray:
    """(n, k) minimisation-form objective values of every feasible config."""
    ok = np.ones(len(table["flops"]), dtype=bool)
    for name, budget in scenario.constraints.items():
        ok &= table[name] <= budget
    columns = [table[f"acc:{landscape}"] if o == "accuracy" else table[o] for o in scenario.objectives]
    return bse.minimised(np.stack(columns, axis=1)[ok], scenario.objectives)


def layers(points: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the first non-dominated layers of `points`, in layer order, up to `limit`."""
    from reports.pareto import pareto_mask

    left = np.arange(len(points))
    out: list[int] = []
    while len(out) < limit and len(left):
        mask = pareto_mask(points[left])
        layer = left[mask]
        out.extend(layer[:limit - len(out)].tolist())
        left = left[~mask]
    return np.asarray(out[:limit], dtype=int)


def front_with_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """The front's indices plus each front point's k nearest points in scaled objective space."""
    from reports.pareto import pareto_mask

    front = np.flatnonzero(pareto_mask(points))
    if k == 0:
        return front
    scaled = (points - points.min(0)) / np.maximum(np.ptp(points, 0), 1e-12)
    chosen = set(front.tolist())
    for i in front:
        d = np.linalg.norm(scaled - scaled[i], axis=1)
        d[i] = np.inf
        chosen.update(np.argsort(d)[:k].tolist())
    return np.asarray(sorted(chosen), dtype=int)


def exported_ratio(true: np.ndarray, sd: float, column: int, reference: np.ndarray, exact_hv: float,
                   rng: np.random.Generator, draws: int) -> np.ndarray:
    """True hypervolume of the observed front over the exact one, for `draws` noise draws."""
    from reports.pareto import hypervolume, pareto_mask

    out = np.zeros(draws)
    for d in range(draws):
        observed = true.copy()
        observed[:, column] += sd * rng.standard_normal(len(true))   # accuracy is negated: same law
        on_front = pareto_mask(observed)
        out[d] = hypervolume(np.minimum(true[on_front], reference), reference) / exact_hv
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="params-flops4G", choices=sorted(bse.SCENARIOS))
    ap.add_argument("--landscapes", nargs="+", default=["ridge", "bottleneck", "rugged"])
    ap.add_argument("--noise", nargs="+", default=["0.25", "1"],
                    help="shares of the feasible accuracies' variance, or `real` (bench_search_efficiency.py --noise)")
    ap.add_argument("--trials", type=int, default=200, help="the trial budget (largest set)")
    ap.add_argument("--neighbours", nargs="+", type=int, default=[0, 1, 2, 4])
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=str(bse.OUT / "cache"))
    ap.add_argument("--results", default=None, help="append one JSON line per row to this file")
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/noise_ceiling.py"] + [
        shlex.quote(a) for i, a in enumerate(argv) if a != "--results" and (i == 0 or argv[i - 1] != "--results")])
    scenario = bse.SCENARIOS[args.scenario]
    table = bse.enumerate_space(scenario.space, args.landscapes, Path(args.cache_dir))
    column = list(scenario.objectives).index("accuracy")
    rows = []
    for landscape in args.landscapes:
        exact = bse.exact_front(table, scenario, landscape)
        points = feasible_points(table, scenario, landscape)
        sets = {("front" if k == 0 else f"front+{k}NN"): front_with_neighbours(points, k)
                for k in args.neighbours}
        sets[f"layers<={args.trials}"] = layers(points, args.trials)
        for level in args.noise:
            sd = bse.noise_sd(table, scenario, landscape, level)
            for name, idx in sets.items():
                if len(idx) > args.trials:
                    continue
                rng = np.random.default_rng([args.seed, len(idx), zlib.crc32(level.encode())])
                r = exported_ratio(points[idx], sd, column, exact.reference, exact.hypervolume, rng, args.draws)
                p10, med, p90 = np.percentile(r, [10, 50, 90])
                row = {"scenario": scenario.name, "landscape": bse.variant(landscape, level),
                       "noise_sd": round(sd, 5), "trained_set": name, "configs": int(len(idx)),
                       "front_size": int(len(exact.front)), "draws": args.draws,
                       "hv_true_median": round(float(med), 3), "hv_true_p10": round(float(p10), 3),
                       "hv_true_p90": round(float(p90), 3), "hv_true_mean": round(float(r.mean()), 3)}
                rows.append(row)
                print(f"{row['landscape']:<18} {name:<12} {len(idx):>4} configs: median {med:.3f} "
                      f"[p10 {p10:.3f}, p90 {p90:.3f}]", flush=True)
    best = {}
    for row in rows:
        if row["hv_true_median"] > best.get(row["landscape"], {}).get("hv_true_median", -1):
            best[row["landscape"]] = row
    print("\nceiling (best set per landscape and noise level, median over draws):")
    for landscape, row in best.items():
        print(f"  {landscape:<18} {row['hv_true_median']:.3f} ({row['trained_set']}, {row['configs']} configs)")
    if args.results:
        stamp = {"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "load": round(os.getloadavg()[0], 2), "commit": bse._commit()}
        with open(args.results, "a") as fh:
            for row in rows:
                fh.write(json.dumps({**row, "ceiling": row is best[row["landscape"]], **stamp}) + "\n")


if __name__ == "__main__":
    main()
