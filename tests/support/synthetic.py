"""Synthetic studies written through Optuna's API, following `docs/storage.md` exactly.

Used by the report tests and `benchmarks/bench_report.py`: a run directory with a journal
(`study.log`), study user_attrs, and trials in every state the search engine leaves behind:
COMPLETE feasible / infeasible (a measured budget broken), PRUNED infeasible (a budget known before
training, never trained), PRUNED at partial fidelity (successive halving), FAIL with a reason,
RUNNING, and the official presets evaluated in the same setting (user_attr `preset`).

Architectures are real `OverLoCKConfig`s; params and MACs come from `space.complexity` when that
module is importable, otherwise from a rough closed-form estimate. Accuracy and latency are
invented (a smooth function of the cost plus noise): this is test data, not a result.

    >>> from support.synthetic import write_synthetic_study
    >>> run_dir = write_synthetic_study("/tmp/run", n_trials=200)
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

STUDY_FILE_NAME = "study.log"

# design dimensions of the synthetic space: name -> choices (all stored as Optuna params)
_WIDTH_SETS = {
    "56-112-256-336": ((56, 112, 256, 336), (4, 6)),
    "64-128-256-512": ((64, 128, 256, 512), (4, 8)),
    "64-128-320-512": ((64, 128, 320, 512), (8, 16)),
}
SPACE = {
    "base_depth_12": [2, 3, 4],
    "base_depth_3": [3, 4, 5, 6, 7, 8],
    "overview_depth": [1, 2, 3, 4],
    "focus_depth_3": [4, 6, 8, 10, 12, 14, 16],
    "focus_depth_4": [1, 2, 3],
    "widths": list(_WIDTH_SETS),
    "region_count": [5, 7, 9],
    "dynamic_kernel_3": [9, 11, 13],
    "mlp_ratio": [3.0, 4.0],
}
_FAIL_REASONS = [
    ("OOM", "torch.OutOfMemoryError: CPU out of memory (tried to allocate 1.2 GiB)"),
    ("NaN loss at epoch 2", "FloatingPointError: loss is NaN at step 180"),
    ("timeout after 900 s", "TimeoutError: trial exceeded the 900 s wall-clock limit"),
]


def _distributions():
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out = {}
    for name, choices in SPACE.items():
        if all(isinstance(c, int) for c in choices) and choices == sorted(choices):
            step = choices[1] - choices[0]
            if all(b - a == step for a, b in zip(choices, choices[1:])):
                out[name] = IntDistribution(choices[0], choices[-1], step=step)
                continue
        out[name] = CategoricalDistribution(choices)
    return out


def config_from_params(params: dict, resolution=(224, 224)):
    """The OverLoCKConfig a synthetic trial's params describe."""
    from overlock import OverLoCKConfig

    widths, heads = _WIDTH_SETS[params["widths"]]
    d12 = params["base_depth_12"]
    r = params["mlp_ratio"]
    return OverLoCKConfig(
        base_depths=(d12, d12, params["base_depth_3"]), overview_depth=params["overview_depth"],
        focus_depths=(params["focus_depth_3"], params["focus_depth_4"]), widths=widths,
        focus_heads=heads, region_count=params["region_count"],
        dynamic_kernels=(params["dynamic_kernel_3"], 7), mlp_ratios=(r, r, r, r),
        resolution=tuple(resolution))


def _cost(config) -> dict:
    """params, flops, flops_paper, memory_mb: `space.complexity` when it exists, else an estimate."""
    try:
        from space import complexity  # noqa: PLC0415  (lazy: space/ is optional here)
    except Exception:  # noqa: BLE001  (ImportError, or a half-written module)
        complexity = None
    if complexity is not None:
        c = complexity(config)
        # the contract's `params`: the deploy model without the aux head
        params = getattr(c, "params_inference", c.params)
        return {"params": int(params), "flops": int(c.flops), "flops_paper": int(c.flops_paper),
                "memory_mb": float(c.memory_mb)}
    h, w = config.resolution
    macs = params = mem = 0.0
    stages = [(config.base_depths[i], config.widths[i], config.mlp_ratios[i], i) for i in range(3)]
    stages += [(config.overview_depth, config.widths[3], config.mlp_ratios[3], 3)]
    stages += [(d, config.widths[2 + i], config.focus_mlp_ratios[i], 2 + i)
               for i, d in enumerate(config.focus_depths)]
    for depth, c, mlp, i in stages:
        hw = (h // 2 ** (i + 2)) * (w // 2 ** (i + 2))
        per_block = c * c * (2 * mlp + 1.5) + c * 9 * 9
        params += depth * per_block
        macs += depth * hw * per_block
        mem = max(mem, hw * c * mlp * 4 * 3 / 2 ** 20)
    params += config.widths[3] * config.head_width + config.head_width * config.num_classes
    return {"params": int(params), "flops": int(macs), "flops_paper": int(macs * 0.82),
            "memory_mb": round(mem, 2)}


def _study_file(name, objectives, constraints, n_trials, seed) -> str:
    lines = [f"name: {name}", "space: studies/spaces/synthetic.yaml", "objectives:"]
    lines += [f"  - {{name: {o}, direction: {d}}}" for o, d in objectives]
    lines += ["constraints:"] + [f"  {k}: {v:g}" for k, v in constraints.items()]
    lines += ["evaluator:", "  name: proxy_train", "  dataset: builtin-synthetic", "  epochs: 8",
              "  batch_size: 64", "sampler: {name: nsga2, seed: %d}" % seed, f"n_trials: {n_trials}",
              "parallelism: 2", "device: cpu", "output: runs/synthetic"]
    return "\n".join(lines) + "\n"


def write_synthetic_study(run_dir, n_trials: int = 60, *,
                          objectives: Sequence[str] = ("accuracy", "flops", "latency_ms"),
                          constraints: dict | None = None, running: int = 0,
                          failed_only: bool = False, presets: Sequence[str] = ("overlock_xt", "overlock_t"),
                          stage_profile_every: int = 3, seed: int = 0,
                          study_name: str = "synthetic") -> Path:
    """Write a study of `n_trials` synthetic trials into `run_dir/study.log`; return `run_dir`.

    Args:
        objectives: metric names of `docs/storage.md`, in order (directions follow the table).
        constraints: budgets {metric: budget}; default flops <= 6.5e9 and latency_ms <= 20.
        running: trials left RUNNING at the end (a study in progress), asked through `study.ask()`.
        failed_only: every trial FAIL (with reasons).
        presets: official presets added as COMPLETE reference trials (user_attr `preset`).
        stage_profile_every: every k-th complete trial gets `latency_stages_ms`.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import FrozenTrial, TrialState

    import overlock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    maximize = {"accuracy", "synflow", "naswot", "zico"}
    objectives = list(objectives)
    directions = ["maximize" if o in maximize else "minimize" for o in objectives]
    if constraints is None:
        constraints = {"flops": 6.5e9, "latency_ms": 20.0}
    storage = JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE_NAME)))
    study = optuna.create_study(storage=storage, study_name=study_name, directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is "experimental"
        study.set_metric_names(objectives)
    started = _dt.datetime(2026, 11, 20, 9, 0, 0)
    attrs = {
        "overlock_nas_version": "0.1.0",
        "study_file": _study_file(study_name, list(zip(objectives, directions)), constraints,
                                  n_trials, seed),
        "objectives": [{"name": o, "direction": d} for o, d in zip(objectives, directions)],
        "constraints": constraints,
        "space": {k: {"choices": v} for k, v in SPACE.items()},
        "space_size": int(np.prod([len(v) for v in SPACE.values()])),
        "sampler": "NSGAIISampler(population_size=50)",
        "seed": seed,
        "device": "cpu (2 threads, synthetic)",
        "evaluator": {"name": "proxy_train", "dataset": "builtin-synthetic", "epochs": 8,
                      "batch_size": 64, "rungs": [2, 4, 8]},
        "started_at": started.isoformat(),
    }
    for k, v in attrs.items():
        study.set_user_attr(k, v)

    dists = _distributions()
    resolution = (224, 224)
    cost_cache: dict[str, dict] = {}
    seen: dict[str, int] = {}
    clock = started
    trials: list[FrozenTrial] = []

    def measure(config, noise=True):
        key = config.config_hash()
        if key not in cost_cache:
            cost_cache[key] = _cost(config)
        cost = dict(cost_cache[key])
        g = cost["flops"] / 1e9
        depth = config.depth
        lat = 3.2 * g ** 0.92 + 0.12 * depth + (rng.normal(0, 0.25) if noise else 0.0)
        lat = max(lat, 0.5)
        acc = (0.52 + 0.075 * math.log1p(g) + {5: -0.006, 7: 0.008, 9: 0.003}[config.region_count]
               + 0.004 * (config.overview_depth in (2, 3)) + 0.003 * (config.dynamic_kernels[0] == 13)
               + (rng.normal(0, 0.012) if noise else 0.0))
        cost.update(
            accuracy=float(np.clip(acc, 0.05, 0.99)), latency_ms=round(lat, 3),
            latency_p90_ms=round(lat * 1.06, 3), latency_spread_ms=round(abs(rng.normal(0.08, 0.03)), 3),
            synflow=float(40 + 6 * math.log1p(g) + rng.normal(0, 0.8)),
            naswot=float(900 + 60 * math.log1p(g) + rng.normal(0, 9)),
            zico=float(120 + 15 * math.log1p(g) + rng.normal(0, 2)))
        return cost

    def base_attrs(config, cost):
        return {
            "config": config.to_dict(), "config_hash": config.config_hash(), "summary": config.summary(),
            "flops": cost["flops"], "flops_paper": cost["flops_paper"], "params": cost["params"],
            "memory_mb": cost["memory_mb"], "resolution": list(config.resolution),
            "evaluator": "proxy_train",
        }

    def latency_attrs(config, cost, profile):
        out = {"latency_ms": cost["latency_ms"], "latency_p90_ms": cost["latency_p90_ms"],
               "latency_spread_ms": cost["latency_spread_ms"], "latency_device": "cpu",
               "latency_batch": 1, "latency_dtype": "float32", "latency_channels_last": False}
        if profile:
            weights = {"stem": 0.06, "base1": 0.14 * config.base_depths[0],
                       "base2": 0.12 * config.base_depths[1], "base3": 0.10 * config.base_depths[2],
                       "overview": 0.05 * config.overview_depth,
                       "focus3": 0.16 * config.focus_depths[0], "focus4": 0.08 * config.focus_depths[1],
                       "head": 0.03}
            total = sum(weights.values())
            out["latency_stages_ms"] = {k: round(cost["latency_ms"] * v / total, 4)
                                        for k, v in weights.items()}
        return out

    def constraint_values(cost) -> dict:
        return {k: float(cost[k] - b) for k, b in constraints.items() if k in cost}

    def frozen(state, params, user_attrs, values=None, cons=None, duration=60.0):
        nonlocal clock
        start = clock
        clock = clock + _dt.timedelta(seconds=float(duration) / 2)  # two workers in parallel
        system_attrs = {}
        if cons:
            system_attrs["constraints"] = [cons[k] for k in constraints if k in cons]
            for k, v in cons.items():
                system_attrs[f"constraints:{k}"] = v
        return FrozenTrial(
            number=0, trial_id=0, state=state, value=None, values=values,
            datetime_start=start,
            datetime_complete=None if state == TrialState.RUNNING else start + _dt.timedelta(seconds=duration),
            params=dict(params), distributions={k: dists[k] for k in params} if params else {},
            user_attrs=user_attrs, system_attrs=system_attrs, intermediate_values={})

    epochs = attrs["evaluator"]["epochs"]
    for name in presets:
        config = overlock.PRESETS[name].replace(resolution=resolution)
        cost = measure(config, noise=False)
        ua = base_attrs(config, cost) | latency_attrs(config, cost, True)
        ua.update(preset=name, score=cost["accuracy"], fidelity=1.0, epochs=epochs,
                  history=[round(cost["accuracy"] * (0.6 + 0.4 * (e + 1) / epochs), 4) for e in range(epochs)])
        trials.append(frozen(TrialState.COMPLETE, {}, ua, [cost[o] for o in objectives],
                             constraint_values(cost), duration=400))

    for i in range(n_trials):
        params = {k: v[int(rng.integers(len(v)))] for k, v in SPACE.items()}
        params = {k: (float(v) if isinstance(v, float) else v) for k, v in params.items()}
        config = config_from_params(params, resolution)
        cost = measure(config)
        ua = base_attrs(config, cost)
        cons = constraint_values(cost)
        pre_training = {k: v for k, v in cons.items() if k in ("flops", "flops_paper", "params", "memory_mb")}
        roll = rng.random()
        h = config.config_hash()
        if failed_only or roll < 0.06:
            reason, err = _FAIL_REASONS[int(rng.integers(len(_FAIL_REASONS)))]
            ua.update(reason=reason, error=f"Traceback (most recent call last):\n  ...\n{err}")
            trials.append(frozen(TrialState.FAIL, params, ua, duration=rng.uniform(5, 300)))
            continue
        if any(v > 0 for v in pre_training.values()):
            broken = next(k for k, v in pre_training.items() if v > 0)
            ua.update(infeasible=True,
                      reason=f"{broken} {cost[broken]:.4g} > budget {constraints[broken]:.4g} (not trained)")
            trials.append(frozen(TrialState.PRUNED, params, ua, cons=pre_training, duration=0.5))
            continue
        ua |= latency_attrs(config, cost, i % stage_profile_every == 0)
        cons = constraint_values(cost)
        if roll < 0.20:  # stopped by successive halving at a rung
            rung = [2, 4][int(rng.integers(2))]
            fid = rung / epochs
            acc = cost["accuracy"] * (0.75 + 0.2 * fid) + rng.normal(0, 0.01)
            ua.update(score=float(acc), fidelity=fid, epochs=rung,
                      history=[round(acc * (0.7 + 0.3 * (e + 1) / rung), 4) for e in range(rung)],
                      reason=f"successive halving: below the rung-{rung} cut (fidelity {fid:g})")
            trials.append(frozen(TrialState.PRUNED, params, ua, cons=cons, duration=rung * 25))
            continue
        ua.update(score=cost["accuracy"], fidelity=1.0, epochs=epochs,
                  history=[round(cost["accuracy"] * (0.6 + 0.4 * (e + 1) / epochs), 4) for e in range(epochs)],
                  weights=f"weights/{len(trials)}-{h}.safetensors")
        if h in seen:
            ua["reused_from"] = seen[h]
        seen.setdefault(h, len(trials))
        trials.append(frozen(TrialState.COMPLETE, params, ua, [cost[o] for o in objectives], cons,
                             duration=epochs * 25 * rng.uniform(0.7, 1.3)))

    study.add_trials(trials)
    for _ in range(running):
        trial = study.ask(fixed_distributions=dists)
        config = config_from_params(trial.params, resolution)
        for k, v in base_attrs(config, measure(config)).items():
            trial.set_user_attr(k, v)
    study.set_user_attr("wall_time_s", float((clock - started).total_seconds()))
    return run_dir
