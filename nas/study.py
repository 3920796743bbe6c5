"""The study file: what to search, what to optimise, under which budgets, and how to run it.

A study file is YAML, validated on load; every error names the file, the field and the rule in
one line (`studies/x.yaml: constraints.flops: must be a number > 0`). Example:

    name: quickstart
    space: spaces/quickstart.yaml        # a file (relative to this one) or an inline mapping
    objectives: [accuracy, flops]        # directions are fixed per metric (docs/reference/storage.md)
    constraints: {flops: 60M, params: 1.5M}
    evaluator: {name: train, epochs: 3}  # every key but `name` goes to the evaluator
    sampler: {name: nsga2, population_size: 8}
    seed: 0
    trials: 16
    parallel: 2
    resources: {cpus: 1}

Every key (defaults in brackets):

- `name`: the study's name in storage. `space`: a space file or mapping (see `space.load_space`).
- `objectives`: metrics of docs/reference/storage.md (accuracy or a proxy score up; flops, flops_paper,
  params, latency_ms, memory_mb down); at most one evaluator score.
- `constraints` [{}]: `metric: budget`, feasible iff metric <= budget; numbers or 2e9 / 500M / 1.5G.
  flops, flops_paper, params and memory_mb are checked before training (analytic), latency_ms
  after measuring it, also before training; a trial over a budget is PRUNED, never trained.
- `evaluator` [none]: `name` (train, synflow, naswot, zico, or `module:attribute` returning an
  object with `metric`, `rungs`, `evaluate`) plus its settings. Needed when an objective is a score.
- `sampler` [frontier when the evaluator's score (accuracy, a proxy) is traded against exact
  costs (flops, params, memory) only; else nsga2 for several objectives, tpe for one; why:
  docs/explanation/search.md]: `name` (frontier, nsga2, tpe, random, gp) plus its keyword arguments. Whatever
  the sampler, a config over a flops/params/memory budget is never a trial (nas.search.proposals).
  `seed` [0]: the base seed (the sampler's seed is derived from it and the number of stored
  trials, so a resumed study never replays).
- `trials` [20]: the total budget, counted from storage. `trials_count` [trained]: what it counts:
  `trained` architectures (new and within every budget; a draw over a budget known before
  training never becomes a trial, one over a measured latency budget is PRUNED untrained, neither
  counts, nor does a repeat, whose result is reused; the search ends early when the space has no new
  architecture within budget left), or every `sampled` one. A resumed study keeps the way it was
  begun with unless the file sets the key. `parallel` [what the cluster fits]:
  trials at once. `resources` [{cpus: 1, gpus: 1 on cuda else 0}]: per trial.
  `trial_timeout_s` [none]: wall clock per trial. `max_retries` [3]: Ray re-runs after a worker died.
- `device` [cpu]: cpu, cuda, cuda:N, auto (under Ray a worker sees its own GPU as cuda:0; cuda:N is
  used as such only where GPU N is visible to the worker). `latency` [batch 1, fp32, warmup 10,
  repeats 30]: batch, dtype (fp32/fp16/bf16), channels_last, warmup, repeats, threads
  [= cpus], profile_stages; where: device [the study's], resource / node_labels [none: any node],
  cpus [1: cores the measuring worker holds], timeout_s [600], ahead [2 x parallel up to 8, at
  least parallel: configs priced ahead of training], model [none; auto or a file: skip configs
  predicted far over budget], recheck_near [0: off; e.g. 0.05: a reading this close to the
  latency budget is measured once more, the faster kept].
- `successive_halving` [eta 3, min_trials 3, signal accuracy]: used when the evaluator has rungs;
  `signal: val_loss` ranks a rung by the validation loss instead of the accuracy.
- `proxy_gate` [none]: `{proxy: synflow | naswot | zico, drop_bottom: 0.3, min_trials: 8,
  batch_size: 64}`: a feasible config whose zero-cost proxy is below the `drop_bottom` quantile
  of the configs seen so far is PRUNED untrained (nas.gate). To rank by a proxy instead, make it
  the objective (`objectives: [synflow, flops]`, `evaluator: synflow`).
- `fvcore_check_every` [25]: cross-check the analytic FLOPs with fvcore on trial 0 and every Nth.
- `output_dir` [runs/<name>]: the run directory. `storage` [journal file in it]: an Optuna RDB URL.

    >>> from nas.study import load_study_file
    >>> spec = load_study_file("studies/quickstart.yaml")
    >>> spec.directions
    ['maximize', 'minimize']
"""

from __future__ import annotations

import inspect
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from space import budgets

# metric names, directions and kinds: the stored-study contract owns them (docs/reference/storage.md)
from .storage import (CONSTRAINT_METRICS, DIRECTIONS, SCORE_METRICS)
from .util import folded

# built-in evaluator -> the metric it produces
EVALUATOR_METRICS = {"train": "accuracy", "synflow": "synflow", "naswot": "naswot", "zico": "zico",
                     "supernet": "accuracy"}
SAMPLERS = ("nsga2", "tpe", "random", "gp", "frontier")
DTYPES = ("fp32", "fp16", "bf16")

_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([kKmMgGtT]?)\s*$")


class StudyFileError(ValueError):
    """A study file that cannot be used; the message is one line naming the file and the field."""


def parse_amount(value: Any) -> float:
    """A budget: a number, or a string such as `2e9`, `500M`, `1.5G` (k/M/G/T = 1e3/1e6/1e9/1e12).

    YAML 1.1 reads `2e9` as a string, so strings are accepted everywhere a budget is.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number > 0")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str) and (m := _NUMBER.match(value)):
        out = float(m.group(1)) * _SUFFIXES.get(m.group(2).lower(), 1.0)
    else:
        raise ValueError(f"must be a number > 0 (e.g. 2e9 or 500M), got {value!r}")
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"must be a number > 0, got {value!r}")
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencySettings(_Model):
    """How and where latency is measured (when it is an objective or a constraint).

    A dedicated measuring worker (one Ray actor) measures on `device`, working through sampled
    configs ahead of training (the configs queued for it, up to 8, measured together). On a GPU it holds one GPU alone; on a CPU it holds `cpus` cores
    (training gets the rest of the node). `resource` / `node_labels` put it on another machine
    (the deployment device, e.g. a node started with `ray start --resources '{"t4_box": 1}'`).
    """

    batch: int = Field(1, ge=1)
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    channels_last: bool = False
    warmup: int = Field(10, ge=0)
    repeats: int = Field(30, ge=2)
    threads: int | None = Field(None, ge=1)   # None: the measuring worker's `cpus`
    profile_stages: bool = False
    device: str | None = None                 # None: the study's `device`
    resource: str | None = Field(None, min_length=1)   # a Ray custom resource of the measuring node
    node_labels: dict[str, str] = Field(default_factory=dict)   # Ray node labels it must carry
    cpus: int = Field(1, ge=1)                # cores held by the measuring worker
    timeout_s: float = Field(600.0, gt=0)     # one measurement, wall clock
    # configs priced ahead of training (None: twice the slots up to 8, at least the slots)
    ahead: int | None = Field(None, ge=0)
    model: str | None = Field(None, min_length=1)   # "auto" or a latency model file (issue 13)
    # a reading within this share of the latency budget is measured once more and the faster
    # kept (interference only adds time); 0: never. Off by default: on the development CPU 0.05
    # re-measured 10 of 41 configs, moved 1 across the budget, and the front was no closer to
    # the other study's (docs/explanation/latency.md)
    recheck_near: float = Field(0.0, ge=0.0, lt=1.0)
    # with a latency budget: a drawn config the latency model cannot place within the budget (no
    # model yet, or its prediction plus margin is over) is measured before it becomes a trial, so
    # one over the budget is a rejected draw (`latency_measured`), not a trial. None: on when
    # `model` is set. The driver waits for such a measurement (seconds against a training's hours)
    measure_first: bool | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"cpu|auto|cuda(:\d+)?", v):
            raise ValueError(f"{v!r} must be cpu, cuda, cuda:N or auto")
        return v


class SuccessiveHalving(_Model):
    """Multi-fidelity early stopping, decided in the driver at the evaluator's rungs.

    A trial that finished rung i continues only if its `signal` is in the top 1/eta of the trials
    that reached rung i, or if fewer than `min_trials` have; otherwise it is told PRUNED.
    `signal`: what a rung is ranked by - `accuracy` (the validation accuracy at the rung) or
    `val_loss` (the validation cross-entropy, lower is better; the train evaluator reports it).
    On digits the rung-1 validation loss ranked the final accuracy of 20 architectures with
    Spearman rho 0.73, the rung-1 accuracy with 0.57 (docs/explanation/search.md).
    """

    enabled: bool = True
    eta: float = Field(3.0, gt=1.0)
    min_trials: int = Field(3, ge=1)
    signal: Literal["accuracy", "val_loss"] = "accuracy"


class ProxyGateSettings(_Model):
    """Skip training configs whose zero-cost proxy is in the bottom `drop_bottom` of those seen so
    far, once `min_trials` have a score (nas.gate). The proxy's batch comes from the train
    evaluator's data set. `proxy: supernet` scores a config by its inherited weights in a trained
    supernet (`weights: DIR`, nas.evaluators.supernet), on the data set its card names."""

    proxy: Literal["synflow", "naswot", "zico", "supernet"]
    drop_bottom: float = Field(0.3, gt=0.0, lt=1.0)
    min_trials: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=2)
    weights: str | None = None      # proxy supernet: the folder `overlock-nas supernet train` wrote

    @model_validator(mode="after")
    def _weights(self) -> "ProxyGateSettings":
        if (self.proxy == "supernet") != (self.weights is not None):
            raise ValueError("weights: the folder of a trained supernet, required with proxy: "
                             "supernet and only with it")
        return self


class Resources(_Model):
    """Per trial. `gpus` unset: 1 when the device is cuda (or auto on a cluster with GPUs), else 0."""

    cpus: float = Field(1.0, gt=0)
    gpus: float | None = Field(None, ge=0)


class SamplerSettings(_Model):
    """`name` plus keyword arguments of the Optuna sampler (e.g. `population_size` for nsga2)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Literal["nsga2", "tpe", "random", "gp", "frontier"] | None = None

    @property
    def options(self) -> dict:
        return dict(self.model_extra or {})


class EvaluatorSettings(_Model):
    """`name` (train, synflow, naswot, zico, or `module:attribute` of a custom evaluator factory) plus
    the evaluator's own settings, passed through unchanged."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def settings(self) -> dict:
        return dict(self.model_extra or {})

    @property
    def metric(self) -> str | None:
        """The metric a built-in evaluator produces (None for a custom one: known once built)."""
        return EVALUATOR_METRICS.get(self.name)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in EVALUATOR_METRICS and ":" not in v:
            raise ValueError(f"unknown evaluator {v!r} (known: {', '.join(EVALUATOR_METRICS)}, "
                             "or module:attribute of your own)")
        return v


class StudyFile(_Model):
    """The validated content of a study file (see the module docstring)."""

    name: str = Field(min_length=1)
    space: str | dict
    objectives: list[str] = Field(min_length=1)
    constraints: dict[str, float] = Field(default_factory=dict)
    evaluator: EvaluatorSettings | None = None
    sampler: SamplerSettings = SamplerSettings()
    seed: int = 0
    trials: int = Field(20, ge=1)
    trials_count: Literal["trained", "sampled"] = "trained"   # what `trials` counts
    parallel: int | None = Field(None, ge=1)     # None: as many as the cluster's resources fit
    resources: Resources = Resources()
    trial_timeout_s: float | None = Field(None, gt=0)
    max_retries: int = Field(3, ge=0)            # Ray retries of a task whose worker died
    device: str = "cpu"
    latency: LatencySettings = LatencySettings()
    successive_halving: SuccessiveHalving = SuccessiveHalving()
    proxy_gate: ProxyGateSettings | None = None
    fvcore_check_every: int = Field(25, ge=0)    # 0: only the first trial
    output_dir: str | None = None
    storage: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"{v!r} must be letters, digits, '_', '-' or '.'")
        return v

    @field_validator("evaluator", mode="before")
    @classmethod
    def _evaluator(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise ValueError("must be a list of metric names")
        out = []
        for item in v:
            if isinstance(item, dict):       # {name: flops, direction: minimize}
                name, direction = item.get("name"), item.get("direction")
                if set(item) - {"name", "direction"}:
                    raise ValueError(f"entry {item!r}: only `name` and `direction` are allowed")
                if name in DIRECTIONS and direction not in (None, DIRECTIONS[name]):
                    raise ValueError(f"{name} is always {DIRECTIONS[name]}d, not {direction!r}")
                item = name
            if item not in DIRECTIONS:
                raise ValueError(f"unknown objective {item!r} (known: {', '.join(DIRECTIONS)})")
            if item in out:
                raise ValueError(f"objective {item!r} is listed twice")
            out.append(item)
        return out

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraints(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("must be a mapping of metric to budget, e.g. {flops: 2e9}")
        out = {}
        for key, value in v.items():
            if key not in CONSTRAINT_METRICS:
                raise ValueError(f"unknown constraint {key!r} (known: {', '.join(CONSTRAINT_METRICS)})")
            try:
                out[key] = parse_amount(value)
            except ValueError as e:
                raise _FieldError(key, str(e)) from None
        return out

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", v):
            raise ValueError(f"{v!r} must be cpu, cuda, cuda:N or auto")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "StudyFile":
        scores = [o for o in self.objectives if o in SCORE_METRICS]
        if len(scores) > 1:
            raise ValueError(f"objectives: at most one evaluator score, got {scores}")
        if scores and self.evaluator is None:
            raise ValueError(f"objectives: {scores[0]!r} needs an evaluator "
                             f"(evaluator: {{name: {_evaluator_for(scores[0])}}})")
        if scores and self.evaluator and self.evaluator.metric not in (None, scores[0]):
            raise ValueError(f"evaluator.name: {self.evaluator.name!r} produces "
                             f"{self.evaluator.metric!r}, but the objective is {scores[0]!r}")
        if self.proxy_gate is not None and "accuracy" not in scores:
            raise ValueError("proxy_gate: gates training, so it needs the accuracy objective and the "
                             "train evaluator (to rank by a proxy, make the proxy the objective)")
        if self.sampler.name == "nsga2" and len(self.objectives) == 1:
            pass  # allowed: NSGA-II works for one objective too
        return self

    # ------------------------------------------------------------------------------- derived
    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.objectives]

    @property
    def score_metric(self) -> str | None:
        """The evaluator's metric when it is an objective (None: nothing needs evaluating)."""
        return next((o for o in self.objectives if o in SCORE_METRICS), None)

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.objectives or "latency_ms" in self.constraints

    @property
    def sampler_name(self) -> str:
        return self.sampler.name or default_sampler(self.objectives)[0]

    @property
    def sampler_options(self) -> dict:
        """The sampler's options: the file's, or the default's when it names no sampler."""
        if self.sampler.name is not None:
            return self.sampler.options
        return default_sampler(self.objectives)[1]


# metrics the cost model gives exactly before training (the `frontier` strategy needs no model of them)
EXACT_METRICS = budgets.EXACT_METRICS


def default_sampler(objectives: list[str]) -> tuple[str, dict]:
    """The sampler of a study file without `sampler`: (name, options).

    `frontier` when the study trades the evaluator's score (accuracy, a proxy) against costs the
    cost model gives exactly (what the benchmark measured): on the search-efficiency benchmark (docs/explanation/search.md) it
    found >= 0.95 of the exact front's hypervolume within 200 trials on every landscape and
    scenario, where NSGA-II (the former default) found 0.88-0.93 and TPE 0.94-0.97. Otherwise, where nothing was
    measured: NSGA-II for several objectives, TPE for one.
    """
    modelled = [o for o in objectives if o not in EXACT_METRICS]
    if len(objectives) > 1 and len(modelled) == 1 and modelled[0] in SCORE_METRICS:
        return "frontier", {}
    return ("nsga2" if len(objectives) > 1 else "tpe"), {}


class _FieldError(ValueError):
    """A ValueError for a sub-key (`constraints.flops`) raised inside a whole-field validator."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


def _evaluator_for(metric: str) -> str:
    return next(k for k, v in EVALUATOR_METRICS.items() if v == metric)


class StudySpec:
    """A loaded study file: the validated fields, where it came from, and its space.

    Attributes:
        file: the validated `StudyFile`.
        path: the study file's path (None for a dict).
        text: the YAML text as written (stored with the study).
        space: the loaded `space.SearchSpace`.
        space_dict: the space as a plain dict (stored with the study; compared on resume).
    """

    def __init__(self, file: StudyFile, path: Path | None, text: str, space, space_dict: dict,
                 label: str | None = None):
        self.file, self.path, self.text, self.space, self.space_dict = file, path, text, space, space_dict
        self._label = label

    def __getattr__(self, name: str):   # spec.objectives, spec.directions, ... read through
        return getattr(self.file, name)

    def with_evaluator_settings(self, settings: dict) -> "StudySpec":
        """This study with `settings` added to its evaluator's (a resume keeping stored values)."""
        e = self.file.evaluator
        evaluator = EvaluatorSettings(name=e.name, **{**e.settings, **settings})
        return StudySpec(self.file.model_copy(update={"evaluator": evaluator}), self.path, self.text,
                         self.space, self.space_dict, self._label)

    @property
    def label(self) -> str:
        return self._label or (str(self.path) if self.path else f"study {self.file.name!r}")

    def run_dir(self, override: str | os.PathLike | None = None) -> Path:
        """`--run-dir`, else `output_dir` from the file, else `runs/<name>` (relative to the CWD)."""
        return Path(override or self.file.output_dir or Path("runs") / self.file.name)

    def resolved(self) -> dict:
        """The study as run: every default filled in and the space inlined (RUN_DIR/study.yaml)."""
        data = self.file.model_dump(mode="json", exclude_none=False)
        data["space"] = self.space_dict
        data["sampler"] = {"name": self.file.sampler_name, **self.file.sampler_options}
        if self.file.evaluator is not None:
            data["evaluator"] = {"name": self.file.evaluator.name, **self.file.evaluator.settings}
        return data


def _format_error(label: str, err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "is required"
    elif kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        msg = f"must be {'an integer' if kind.startswith('int') else 'a number'}, got {err.get('input')!r}"
    elif kind in ("greater_than", "greater_than_equal"):
        bound = err.get("ctx", {}).get("gt", err.get("ctx", {}).get("ge"))
        msg = f"must be a number {'>' if kind == 'greater_than' else '>='} {bound}, got {err.get('input')!r}"
    elif kind == "literal_error":
        msg = f"must be one of {err['ctx']['expected']}, got {err.get('input')!r}"
    elif kind == "bool_parsing" or kind == "bool_type":
        msg = f"must be true or false, got {err.get('input')!r}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    # a sub-key error from a whole-field validator: "constraints: flops: ..." -> "constraints.flops: ..."
    if ": " in msg and loc in ("constraints",) and msg.split(": ", 1)[0] in CONSTRAINT_METRICS:
        key, msg = msg.split(": ", 1)
        loc = f"{loc}.{key}"
    if msg.startswith("objectives: ") or msg.startswith("evaluator.name: "):
        loc, msg = msg.split(": ", 1)
    return f"{label}: {loc}: {msg}" if loc else f"{label}: {msg}"


def parse_study(data: Any, *, label: str = "study", base_dir: Path | None = None,
                text: str | None = None, path: Path | None = None) -> StudySpec:
    """Validate a study mapping and load its space.

    Raises:
        StudyFileError: one line, `label: field: rule`.
    """
    if not isinstance(data, dict):
        raise StudyFileError(f"{label}: must be a YAML mapping of study settings, got {type(data).__name__}")
    try:
        file = StudyFile.model_validate(data)
    except ValidationError as e:
        raise StudyFileError(_format_error(label, e.errors()[0])) from None
    _check_sampler_options(file, label)
    space, space_dict = _load_space(file.space, label, base_dir or Path.cwd())
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False)
    return StudySpec(file, path, text, space, space_dict, label=label)


def load_study_file(path: str | os.PathLike) -> StudySpec:
    """Read and validate a study file (YAML). The space path, if any, is relative to the file.

    Raises:
        StudyFileError: the file is missing, not YAML, or a field breaks a rule (one line).
    """
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StudyFileError(f"{label}: no such study file") from None
    except OSError as e:
        raise StudyFileError(f"{label}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise StudyFileError(f"{label}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_study(data, label=label, base_dir=path.parent, text=text, path=path)


def _integer(low: int):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            return f"must be an integer >= {low}, got {v!r}"
    return check


def _number(low: float, high: float | None = None, *, nullable: bool = False, open_low: bool = False):
    def check(v):
        if v is None and nullable:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > low if open_low else v >= low) and (high is None or v <= high)
        if not ok:
            rule = f"in [{low:g}, {high:g}]" if high is not None else f"{'>' if open_low else '>='} {low:g}"
            return f"must be {'null or ' if nullable else ''}a number {rule}, got {v!r}"
    return check


def _boolean(v):
    if not isinstance(v, bool):
        return f"must be true or false, got {v!r}"


# What a study file may set for each sampler, with the rule for its value (Optuna itself checks
# only some: TPE takes n_startup_trials: -1 or n_ei_candidates: 0 and fails later). `seed` is
# derived by the engine; options taking Python objects (mutation, crossover, gamma, weights,
# independent_sampler, the NSGA-II strategies) cannot come from YAML.
SAMPLER_OPTIONS: dict[str, dict] = {
    "nsga2": {"population_size": _integer(2), "mutation_prob": _number(0, 1, nullable=True),
              "crossover_prob": _number(0, 1), "swapping_prob": _number(0, 1)},
    "tpe": {"n_startup_trials": _integer(0), "n_ei_candidates": _integer(1), "multivariate": _boolean,
            "group": _boolean, "constant_liar": _boolean, "consider_prior": _boolean,
            "prior_weight": _number(0, open_low=True), "consider_magic_clip": _boolean,
            "consider_endpoints": _boolean, "warn_independent_sampling": _boolean},
    "random": {},
    "gp": {"n_startup_trials": _integer(0), "deterministic_objective": _boolean,
           "warn_independent_sampling": _boolean},
    # nas.search.frontier: the project's own strategy (not an Optuna sampler)
    "frontier": {"n_startup": _integer(1), "candidates": _integer(1), "pool": _integer(0),
                 "explore": _number(0, 1), "scored": _integer(1)},
}


def _check_sampler_options(file: StudyFile, label: str) -> None:
    """Each option against the sampler's signature and its value rule, then the sampler is built
    once with them (Optuna's own checks); every error is one line naming the field."""
    import warnings

    name = file.sampler_name
    rules = SAMPLER_OPTIONS[name]
    signature = set(inspect.signature(sampler_class(name).__init__).parameters) - {"self"}
    for key, value in file.sampler.options.items():
        where = f"{label}: sampler.{key}"
        if key not in rules:
            if key in signature:
                why = "is set by the engine" if key == "seed" else "takes a Python object, not a study-file value"
                raise StudyFileError(f"{where}: {why} (settable options of the {name} sampler: "
                                     f"{', '.join(rules) or 'none'})")
            raise StudyFileError(f"{where}: not an option of the {name} sampler (options: "
                                 f"{', '.join(rules) or 'none'})")
        problem = rules[key](value)
        if problem:
            raise StudyFileError(f"{where}: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler_class(name)(seed=0, **file.sampler.options)
    except (ValueError, TypeError) as e:
        text = folded(e).replace("`", "")
        keys = [k for k in file.sampler.options if k in text] or list(file.sampler.options)
        raise StudyFileError(f"{label}: sampler.{keys[0]}: {text}") from None


def sampler_class(name: str):
    """The class a sampler name builds (`frontier`: a stand-in taking the same options, for
    validation; the engine draws through `nas.search.proposals`)."""
    import optuna

    if name == "frontier":
        return FrontierSettings
    return {"nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler,
            "random": optuna.samplers.RandomSampler, "gp": optuna.samplers.GPSampler}[name]


class FrontierSettings:
    """The `frontier` strategy's options, checked as an Optuna sampler's are (their defaults:
    `nas.search.frontier.DEFAULTS`, which the proposer applies)."""

    def __init__(self, seed: int | None = None, n_startup: int | None = None,
                 candidates: int | None = None, pool: int | None = None,
                 explore: float | None = None, scored: int | None = None):
        self.seed, self.n_startup, self.candidates, self.pool, self.explore, self.scored = \
            seed, n_startup, candidates, pool, explore, scored


def _load_space(value: str | dict, label: str, base_dir: Path):
    import space as space_pkg  # the space package; imported lazily (it pulls in the cost model)

    if isinstance(value, str):
        target = Path(value)
        if not target.is_absolute():
            target = base_dir / target
        if not target.exists():
            raise StudyFileError(f"{label}: space: no such file {str(target)!r}")
        source: Any = target
    else:
        source = value
    try:
        loaded = space_pkg.load_space(source)
    except space_pkg.SpaceError as e:
        text = folded(e)
        raise StudyFileError(f"{label}: {text}" if text.startswith("space")
                             else f"{label}: space: {text}") from None
    return loaded, loaded.to_dict()
