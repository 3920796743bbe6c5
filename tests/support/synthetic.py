"""Synthetic studies holding exactly what the search engine writes (docs/reference/storage.md), fast.

Used by the report tests and `benchmarks/bench_report.py`: a run directory with a journal
(`study.log`) whose study and trial attributes have the keys and value types the engine writes
(tests/test_pinned_runs.py holds them equal to a run directory the real engine wrote), in every
state the engine leaves behind: COMPLETE, PRUNED over a budget before training (never trained),
PRUNED by successive halving, reused by config hash, FAIL with a reason, RUNNING.

What comes from the product itself: the study file is parsed by `nas.study` (its text, sampler,
device and latency settings are stored as the engine stores them), the space is
`studies/spaces/xt_t.yaml` sampled through the space's own Optuna decision procedure (so params and
distributions are the engine's), the evaluator's stored settings are the `train` evaluator's
resolved ones, costs are `space.complexity`'s, seeds `nas.engine.derived_seed`'s. Invented: accuracy,
latency and timings (a smooth function of the cost plus noise) - test data, not a result.

One thing the engine never writes: `presets` adds the official presets as COMPLETE reference trials
(user_attr `preset`), which the reports support; pass `presets=()` for a study exactly as the
engine writes it.

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

from nas.search.recorder import IDENTITY_ATTRS as _IDENTITY_ATTRS
from nas.storage import JOURNAL_NAME as STUDY_FILE_NAME
from nas.storage import jsonable as _jsonable

SPACE_FILE = Path(__file__).resolve().parents[2] / "studies" / "spaces" / "xt_t.yaml"
POPULATION = 50
EVALUATOR = {"name": "train", "dataset": {"kind": "procedural", "train_size": 2000, "val_size": 500},
             "epochs": 8, "rungs": [2, 4], "batch_size": 64}
FVCORE_CHECK_EVERY = 25
_FAILURES = [
    ("out of memory on cpu (batch 64): lower batch_size or the space's widths",
     "torch.OutOfMemoryError: CPU out of memory (tried to allocate 1.2 GiB)"),
    ("score is nan (not a finite number)", ""),
    ("timeout: evaluation ran longer than 900 s", ""),
]
_STAGE_SHARES = {"stem": 0.06, "base1": 0.14, "base2": 0.12, "base3": 0.10, "overview": 0.05,
                 "focus3": 0.16, "focus4": 0.08, "head": 0.03}


def study_spec(name: str, objectives: Sequence[str], constraints: dict, n_trials: int, seed: int):
    """The `nas.study.StudySpec` of a synthetic study (what `overlock-nas search` would parse)."""
    from nas.study import parse_study

    data = {"name": name, "space": str(SPACE_FILE), "objectives": list(objectives),
            "constraints": dict(constraints), "evaluator": dict(EVALUATOR),
            "latency": {"profile_stages": True},
            "sampler": {"name": "nsga2", "population_size": POPULATION}, "seed": seed,
            "trials": n_trials, "parallel": 2, "successive_halving": {"eta": 2, "min_trials": 3},
            "fvcore_check_every": FVCORE_CHECK_EVERY, "output_dir": f"runs/{name}"}
    return parse_study(data, label=f"{name}.yaml")


def write_synthetic_study(run_dir, n_trials: int = 60, *,
                          objectives: Sequence[str] = ("accuracy", "flops", "latency_ms"),
                          constraints: dict | None = None, running: int = 0,
                          failed_only: bool = False, presets: Sequence[str] = ("overlock_xt", "overlock_t"),
                          seed: int = 0, study_name: str = "synthetic") -> Path:
    """Write a study of `n_trials` synthetic trials into `run_dir/study.log`; return `run_dir`.

    Args:
        objectives: metric names of `docs/reference/storage.md`, in order.
        constraints: budgets {metric: budget}; default flops <= 4.5e9 and latency_ms <= 14.
        running: trials left RUNNING at the end (a study in progress).
        failed_only: every trial FAIL (with reasons).
        presets: official presets added as COMPLETE reference trials (user_attr `preset`; the
            engine never writes these, the reports support them).
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if constraints is None:
        constraints = {"flops": 4.5e9, "latency_ms": 14.0}
    spec = study_spec(study_name, objectives, constraints, n_trials, seed)
    storage = JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE_NAME)))
    study = optuna.create_study(storage=storage, study_name=study_name, directions=spec.directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is "experimental"
        study.set_metric_names(list(spec.objectives))
    writer = _Writer(spec, study, np.random.default_rng(seed), failed_only)
    for k, v in writer.study_attrs().items():
        study.set_user_attr(k, v)
    trials = [writer.preset(i, name) for i, name in enumerate(presets)]
    trials += [writer.sampled(len(trials) + i) for i in range(n_trials)]
    study.add_trials(trials)
    for _ in range(running):
        writer.running(study.ask())
    study.set_user_attr("wall_time_s", round((writer.clock - writer.started).total_seconds(), 2))
    study.set_user_attr("skipped_over_budget", sum(bool(t.user_attrs.get("infeasible")) for t in trials))
    return run_dir


class _Writer:
    """The engine's records of one synthetic study, trial by trial (see nas/engine.py and
    nas/search/recorder.py)."""

    def __init__(self, spec, study, rng, failed_only: bool):
        from nas.evaluators import get_evaluator

        self.spec, self.study, self.rng, self.failed_only = spec, study, rng, failed_only
        self.evaluator = get_evaluator(spec.evaluator.name, spec.evaluator.settings)
        self.epochs = self.evaluator.settings["epochs"]
        self.budgets = {k: float(v) for k, v in spec.constraints.items()}
        import optuna

        # the space's own decision procedure on Optuna trials: the engine's params and distributions
        self.holder = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=int(rng.integers(2**31))),
                                          directions=spec.directions)
        from nas.measure import device_string

        self.device_name = device_string("cpu", 1)
        self.dataset = _dataset_record(self.evaluator.settings, spec)
        self.started = _dt.datetime(2026, 11, 20, 9, 0, 0)
        self.clock = self.started
        self.first: dict[str, int] = {}        # config hash -> number of the trial that ran it
        self.records: dict[int, tuple] = {}    # number -> (state, values, user_attrs, system_attrs)
        self.costs: dict[str, dict] = {}
        self.params: list[dict] = []            # of every sampled trial

    # ----------------------------------------------------------------------------- study
    def study_attrs(self) -> dict:
        spec = self.spec
        return {
            "overlock_nas_version": "0.1.0",
            "study_file": spec.text,
            "objectives": [{"name": n, "direction": d} for n, d in zip(spec.objectives, spec.directions)],
            "constraints": self.budgets,
            "space": _jsonable(spec.space_dict),
            "space_size": spec.space.size(),
            "sampler": spec.sampler_name,
            "seed": spec.seed,
            "trials_count": spec.trials_count,
            "device": spec.device,
            "evaluator": {"name": spec.evaluator.name, **_jsonable(self.evaluator.settings)},
            "latency": spec.latency.model_dump() if spec.needs_latency else None,
            "started_at": self.started.isoformat(timespec="seconds"),
            "wall_time_s": 0.0,
        }

    # ----------------------------------------------------------------------------- trials
    def sampled(self, number: int):
        """One finished trial, sampled from the space as the engine samples it."""
        if self.params and self.rng.random() < 0.08:   # the sampler proposes a config already run
            self.holder.enqueue_trial(self.params[int(self.rng.integers(len(self.params)))])
        trial = self.holder.ask()
        config = self.spec.space.suggest(trial)
        self.params.append(dict(trial.params))
        state, values, ua, sa = self._run(number, config)
        sa["NSGAIISampler:generation"] = number // POPULATION
        return self._frozen(number, state, values, ua, sa, trial.params, trial.distributions)

    def preset(self, number: int, name: str):
        """An official preset evaluated in the study's setting (never written by the engine)."""
        import overlock

        state, values, ua, sa = self._trained(number, overlock.PRESETS[name], full=True, reference=True)
        ua["preset"] = name
        return self._frozen(number, state, values, ua, sa, {}, {})

    def running(self, trial) -> None:
        """A trial the engine has asked and is pricing (left RUNNING)."""
        config = self.spec.space.suggest(trial)
        for k, v in {**self._begin(trial.number, config), **self._cost(trial.number, config)}.items():
            trial.set_user_attr(k, v)

    def _run(self, number: int, config):
        chash = config.config_hash()
        if chash in self.first:                                   # never pay twice
            state, values, ua, sa = self.records[self.first[chash]]
            ua = {k: v for k, v in ua.items() if k not in _IDENTITY_ATTRS}
            ua = {**self._begin(number, config), **ua, "reused_from": self.first[chash]}
            self.records[number] = (state, values, ua, dict(sa))
            return state, values, dict(ua), dict(sa)
        self.first[chash] = number
        if self.failed_only or self.rng.random() < 0.06:
            out = self._failed(number, config)
        else:
            out = self._trained(number, config, full=self.rng.random() >= 0.2)
        self.records[number] = out
        return out[0], out[1], dict(out[2]), dict(out[3])

    def _trained(self, number: int, config, full: bool, reference: bool = False):
        from optuna.trial import TrialState

        ua = {**self._begin(number, config), **self._cost(number, config)}
        metrics = {k: ua[k] for k in ("flops", "flops_paper", "params", "memory_mb")}
        broken = self._broken(metrics)
        if (reference or not broken) and self.spec.needs_latency:
            ua |= self._latency(config, metrics)
            metrics["latency_ms"] = ua["latency_ms"]
            broken = self._broken(metrics)
        if broken and not reference:          # a reference is trained whatever its cost
            self._tick(0.5)
            ua.update(infeasible=True, reason="over budget before training: " + ", ".join(broken))
            return TrialState.PRUNED, None, ua, self._constraints(metrics)
        rungs = self.evaluator.rungs
        stop = len(rungs) - 1 if full else int(self.rng.integers(len(rungs) - 1))
        accuracy = self._accuracy(config)
        scores = [accuracy * (0.8 + 0.2 * (r / self.epochs)) for r in rungs[:stop + 1]]
        epochs = rungs[stop]
        ua.update(weights=f"weights/{number}-{ua['config_hash']}.safetensors", score=scores[-1],
                  epochs=epochs, history=[round(scores[-1] * (0.6 + 0.4 * (e + 1) / epochs), 4)
                                          for e in range(epochs)],
                  fidelity=epochs / self.epochs,
                  train_loss=[round(2.3 - 1.2 * (e + 1) / self.epochs, 4) for e in range(epochs)],
                  val_loss=[round(2.3 - 1.5 * scores[-1] * (0.6 + 0.4 * (e + 1) / epochs), 4)
                            for e in range(epochs)],
                  data_skipped=0, dataset=self.dataset)
        if config.num_classes != 10:     # the evaluator fits the head to the procedural set's 10 classes
            ua["trained_num_classes"] = 10
        ua["eval_wall_s"] = round(epochs * 25 * self.rng.uniform(0.7, 1.3), 3)
        ua["rung_scores"] = {str(r): float(s) for r, s in zip(rungs, scores)}
        ua["rung_val_loss"] = {str(r): round(2.3 - 1.5 * s, 4) for r, s in zip(rungs, scores)}
        metrics[self.spec.score_metric or "accuracy"] = scores[-1]
        self._tick(ua["eval_wall_s"])
        if not full:
            ua["reason"] = (f"successive halving: accuracy {scores[-1]:.4g} after {epochs} epochs is "
                            f"below the top 1/2 of {number + 3} trials (cutoff {accuracy:.4g})")
            return TrialState.PRUNED, None, ua, self._constraints(metrics)
        values = [float(metrics[o]) for o in self.spec.objectives]
        return TrialState.COMPLETE, values, ua, self._constraints(metrics)

    def _failed(self, number: int, config):
        from optuna.trial import TrialState

        ua = {**self._begin(number, config), **self._cost(number, config)}
        if self.spec.needs_latency:
            ua |= self._latency(config, ua)
        reason, error = _FAILURES[int(self.rng.integers(len(_FAILURES)))]
        ua["reason"] = reason
        if error:
            ua["error"] = f"Traceback (most recent call last):\n  ...\n{error}"
        self._tick(self.rng.uniform(5, 300))
        return TrialState.FAIL, None, ua, {}

    # ------------------------------------------------------------------------------ records
    def _begin(self, number: int, config) -> dict:
        from nas.engine import derived_seed

        return {"driver": "synthetic:run", "config": config.to_dict(), "config_hash": config.config_hash(),
                "summary": config.summary(), "resolution": list(config.resolution),
                "seed": derived_seed(self.spec.seed, number, 7), "evaluator": self.spec.evaluator.name,
                "rejected_draws": {}}     # the proposer's record of draws rejected before the trial

    def _cost(self, number: int, config) -> dict:
        import space

        key = config.config_hash()
        if key not in self.costs:
            metrics = space.complexity(config).as_metrics()
            self.costs[key] = {k: (float(v) if k == "memory_mb" else int(v)) for k, v in metrics.items()}
        out = dict(self.costs[key])
        if number == 0 or number % FVCORE_CHECK_EVERY == 0:
            out["flops_fvcore"] = out["flops"]
        return out

    def _latency(self, config, metrics: dict) -> dict:
        from nas.latency.protocol import ROUNDS, VERSION, describe

        s = self.spec.latency
        g = metrics["flops"] / 1e9
        ms = max(3.2 * g ** 0.92 + 0.12 * config.depth + self.rng.normal(0, 0.25), 0.5)
        spread = abs(self.rng.normal(0.08, 0.03))
        speed = float(np.clip(self.rng.normal(1.0, 0.08), 0.7, 1.3))     # the machine's drift
        out = {"latency_remeasured": False, "latency_sets": 1, "latency_ms": round(ms, 4),
               "latency_raw_ms": round(ms / speed, 4), "latency_yardstick_ms": round(25.0 / speed, 4),
               "latency_yardstick_nominal_ms": 25.0, "latency_speed": round(speed, 4),
               "latency_uncertainty_pct": round(abs(self.rng.normal(1.5, 0.8)), 2),
               "latency_round_minima_ms": [round(ms / speed * (1 + abs(self.rng.normal(0, 0.01))), 4)
                                           for _ in range(ROUNDS)],
               "latency_protocol_version": VERSION,
               "latency_p90_ms": round(ms * 1.06, 4), "latency_spread_ms": round(spread, 4),
               "latency_min_ms": round(ms * 0.97, 4), "latency_device": self.device_name,
               "latency_batch": s.batch, "latency_dtype": s.dtype, "latency_channels_last": s.channels_last,
               "latency_repeats": s.repeats, "latency_resolution": list(config.resolution),
               "latency_clock": "thread_cpu", "latency_rounds": ROUNDS,
               "latency_protocol": describe("thread_cpu", 1), "latency_wall_ms": round(ms * 1.02, 4),
               "latency_cores": [0]}
        if s.profile_stages:
            out["latency_stages_ms"] = {k: round(ms * v / 0.8, 4) for k, v in _STAGE_SHARES.items()}
            out["latency_stages_ms"]["other"] = round(ms * 0.06, 4)
        out["latency_wall_s"] = round(s.warmup * ms / 1e3 + 0.4, 3)   # the measuring task's wall time
        out["latency_source"] = "measured"
        return out

    def _accuracy(self, config) -> float:
        g = self.costs[config.config_hash()]["flops"] / 1e9
        acc = (0.52 + 0.075 * math.log1p(g) + {5: -0.006, 6: 0.002, 7: 0.008, 8: 0.003}.get(config.region_count, 0)
               + 0.003 * (config.dynamic_kernels[0] == 13) + self.rng.normal(0, 0.012))
        return float(np.clip(acc, 0.05, 0.99))

    def _broken(self, metrics: dict) -> list[str]:
        from nas.search.recorder import broken

        return broken(metrics, self.budgets)

    def _constraints(self, metrics: dict) -> dict:
        """The engine's constraint record: one value per budget, in budget order (0.0 if unknown)."""
        from nas.search.recorder import violations

        if not self.budgets:
            return {}
        known = violations(metrics, self.budgets)
        return {"constraints": [float(known.get(n, 0.0)) for n in self.budgets]}

    def _tick(self, seconds: float) -> None:
        self.clock += _dt.timedelta(seconds=float(seconds) / 2)   # two trials at a time

    def _frozen(self, number, state, values, ua, sa, params, distributions):
        from optuna.trial import FrozenTrial, TrialState

        duration = float(ua.get("eval_wall_s", 1.0)) + 2.0
        start = self.clock - _dt.timedelta(seconds=duration)
        return FrozenTrial(
            number=number, trial_id=number, state=state, value=None, values=values,
            datetime_start=start, datetime_complete=None if state == TrialState.RUNNING else self.clock,
            params=dict(params), distributions=dict(distributions), user_attrs=ua, system_attrs=sa,
            intermediate_values={})


def _dataset_record(settings: dict, spec) -> dict:
    """The train evaluator's `dataset` record of the procedural set (its sizes, without loading it)."""
    from types import SimpleNamespace

    from nas.data import resolve_augment
    from nas.evaluators import dataset_record

    ds = settings["dataset"]
    data = SimpleNamespace(num_classes=10, train=range(ds["train_size"]), val=range(ds["val_size"]),
                           description=f"procedural shapes, 10 classes (seed {ds.get('seed', 0)})")
    augment = resolve_augment(settings["augment"], "procedural")
    augment = {k: list(v) if isinstance(v, tuple) else v for k, v in augment.items()} if augment else None
    resolution = spec.space.sample(0).resolution
    return _jsonable(dataset_record(ds, data, resolution, augment))

