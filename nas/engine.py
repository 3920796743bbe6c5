"""The ask/tell driver: Optuna owns the study, this one process decides, Ray only executes.

    >>> from nas.study import load_study_file
    >>> from nas.engine import SearchEngine
    >>> result = SearchEngine(load_study_file("studies/quickstart.yaml")).run()
    >>> [t.number for t in result.pareto]

One trial, in the driver (every fact recorded as a user attribute, docs/storage.md):

1. `space.suggest(trial)` samples a config (define-by-run); its hash identifies the architecture.
2. Same hash as a finished trial -> that trial's result is reused (`reused_from`), never re-run.
   Same hash as a trial in flight -> it waits for that one.
3. Params, FLOPs and memory from the analytic cost model (fvcore cross-check on a sample of
   trials: a mismatch stops the study). A broken budget -> PRUNED, `infeasible`, never trained.
4. Latency, when it is an objective or a constraint: read from the device's store (shared by every
   study on that device, keyed by architecture, device string, batch, resolution, dtype, memory
   format), else measured before training by the measuring worker, a Ray actor that holds the
   latency device alone (a GPU, or `latency.cpus` cores) and prices sampled configs ahead of
   training, so evaluations never wait for it except a trial for its own latency. A broken latency
   budget -> PRUNED, `infeasible`, never trained.
5. The evaluator runs as a Ray task. With rungs (successive halving) a trial trains to each rung
   and continues only if its score is in the top 1/eta of the trials that reached that rung (or
   fewer than `min_trials` have, one score per architecture); else it is told PRUNED with
   `fidelity` < 1. COMPLETE always means full fidelity. The score ranked is the rung's accuracy,
   or with `successive_halving.signal: val_loss` its validation loss (`rung_val_loss`).

Constraints are stored once per budget, as the list Optuna's samplers and optuna-dashboard both
read (`set_constraints`). The trial budget (`trials_count`) counts trained architectures, or every
sampled one: with `trained`, draws over a budget (known from the cost model, or estimated by a
`Screen`) and repeats are recorded without counting, until no new architecture within budget is
left.

Reliability: one driver per run directory (fcntl lock); the trial budget is counted from storage;
on start, RUNNING trials left by a dead driver are re-run under their number (their config was
recorded) or failed and re-queued (it was not); the sampler seed is derived from (seed, number of
stored trials) so a restart never replays; stored objectives, constraints, space, evaluator,
latency settings and device (and the device string stored latencies were measured on) are checked
against the file. A trial that raises, yields NaN, runs out of memory or exceeds
`trial_timeout_s` is FAIL with `reason` (its files deleted); a dead worker is retried by Ray.
Stopping (Ctrl-C, `request_stop()`): no new trials; in-flight ones are told FAIL (`reason:
interrupted`) and their params re-queued, so the next run evaluates them first and the budget does
not shrink; a re-queued trial continues from its original's last finished rung (its weights and
optimiser state), an adopted one from its own. Optuna internals: only through `nas._optuna`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
import socket
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from . import _optuna
from .executor import Executor, TaskLost
from .storage import DIRECTIONS, format_value as _fmt, is_feasible, named_constraints, pareto_front
from .study import StudySpec, sampler_class
from .worker import make_evaluator

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
EVAL_TARGET = "nas.worker:run_evaluation"
LATENCY_TARGET = "nas.worker:run_latency"
DESCRIBE_TARGET = "nas.worker:describe_device"
# user_attrs copied when a trial reuses another's result
_IDENTITY_ATTRS = ("config", "config_hash", "summary", "resolution", "seed", "driver")
# With `trials_count: trained`, asking stops after this many draws in a row that train nothing
# (over a budget or already evaluated): the space holds (almost) no new architecture within budget.
MAX_DRAWS_WITHOUT_TRAINING = 200
# latency settings a resume may change: they schedule measurements or pick which configs to skip,
# never change a measured value (`device` is compared as where latency is measured)
_LATENCY_NOT_COMPARED = ("device", "timeout_s", "ahead", "model", "recheck_near")

# A screen prices a config before it is trained, cheaply (< 1 ms): it returns {budget name:
# estimated value} for the budgets it expects the config to break ({} when none). A broken one
# makes the trial PRUNED `infeasible` with its estimate recorded (user attr `estimated`, and as its
# constraint value, so samplers learn the region is infeasible), never trained or measured.
Screen = Callable[[Any], dict]


class SearchError(Exception):
    """The search cannot start or go on; the message is one line for the user."""


class DriverBusy(SearchError):
    pass


class StudyMismatch(SearchError):
    pass


class CostModelMismatch(SearchError):
    pass


# ================================================================================== driver side
class DriverLock:
    """An exclusive fcntl lock on RUN_DIR/driver.lock, released when the process ends (even by
    SIGKILL), so a second driver on the same run directory is refused, never blocked."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "driver.lock"
        self._fh = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise DriverBusy(f"{self.path.parent}: another overlock-nas search is running on this "
                             f"run directory ({holder}); wait for it to finish or stop it, or use "
                             "another --run-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{_dt.datetime.now().isoformat(timespec='seconds')}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc):
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def open_storage(spec: StudySpec, run_dir: Path):
    """The study's storage: a journal file in the run directory, or the study file's RDB URL."""
    url = spec.storage
    if not url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        from nas.storage import JOURNAL_NAME, StorageError, check_journal

        journal = run_dir / JOURNAL_NAME
        if journal.is_file():
            # Called under this driver's lock, so nobody else is appending: an unterminated last
            # record is a truncation, and appending after it would bury it mid-file.
            try:
                check_journal(journal)
            except StorageError as e:
                raise SearchError(str(e)) from None
        return JournalStorage(JournalFileBackend(str(journal)))
    try:
        if url.startswith("sqlite"):
            # sqlite's default 5 s lock timeout fails commits while a reader holds the file
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001
        raise SearchError(f"{spec.label}: storage: cannot open {url!r}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None


def derived_seed(*values: int) -> int:
    """A 31-bit seed mixed from several integers (stable across processes)."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0] >> 1)


def set_constraints(study: optuna.Study, trial: optuna.Trial, names: list[str], known: dict,
                    *, named: bool = False) -> None:
    """Store a trial's constraint values (`value - budget`, feasible iff <= 0), once per budget.

    As the list `system_attrs["constraints"]` in the order of `names` (the study's budget order):
    Optuna's samplers read it (constraints '0', '1', ...) and so does optuna-dashboard, which
    greys out infeasible trials. A budget not measured (the trial broke another one first) is 0.0
    there. `named=True` also writes Optuna 5's named constraints, for studies begun by earlier
    versions that wrote both: their trials keep one format (see `nas._optuna`).
    """
    if not names:
        return
    if named:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in names:
                if name in known:
                    trial.set_constraint(name, float(known[name]))
    _optuna.write_constraints(study, trial, [float(known.get(n, 0.0)) for n in names])


@dataclass
class Progress:
    """A snapshot of the study for progress displays."""

    target: int = 0           # trial budget
    counted: int = 0          # trials in the study that count against it
    done: int = 0             # finished (COMPLETE + PRUNED + FAIL)
    complete: int = 0
    feasible: int = 0         # COMPLETE and within every budget
    infeasible: int = 0       # PRUNED before training (a budget broken)
    halved: int = 0           # PRUNED by successive halving
    failed: int = 0
    reused: int = 0
    running: int = 0
    pareto: int = 0
    best: str = ""
    elapsed_s: float = 0.0
    eta_s: float | None = None
    session_done: int = 0
    counts: str = "sampled"   # what the budget counts: "sampled" or "trained" architectures
    stopped: str = ""         # why asking stopped before the budget was spent ("" if it did not)


@dataclass
class SearchResult:
    run_dir: Path
    study_name: str
    storage: str
    objectives: list[str]
    progress: Progress
    pareto: list[FrozenTrial]
    interrupted: bool = False
    wall_time_s: float = 0.0


@dataclass(eq=False)
class _Live:
    """A trial this driver is working on."""

    trial: optuna.Trial
    config: Any = None
    chash: str = ""
    seed: int = 0
    rung: int = 0                     # index into the rung budgets
    metrics: dict = field(default_factory=dict)   # known objective/constraint values
    eval_s: float = 0.0               # evaluation time of the rungs already run
    started: float = 0.0              # monotonic start of the current task
    handle: Any = None
    kind: str = ""                    # "eval" | "latency" while a task runs
    # the stored trial whose finished rungs this one continues (itself when adopted, the
    # interrupted original for a re-queued copy), or None
    resume_from: FrozenTrial | None = None
    verdict: dict | None = None       # the latency model's prediction, when the study has one
    first_latency: dict | None = None  # a measurement the model disagreed with, measured again

    @property
    def number(self) -> int:
        return self.trial.number


class SearchEngine:
    """Runs (or resumes) one study.

    Args:
        spec: the loaded study file.
        run_dir: overrides the study file's `output_dir`.
        address: a Ray cluster to use (else `RAY_ADDRESS`, else an embedded local Ray).
        trials: overrides the study's trial budget (total, counted from storage).
        on_progress: called as `on_progress(progress, line)` after every event; `line` is a
            one-line description of what happened, or None for a periodic tick.
        num_cpus: CPUs of the embedded local Ray (default: all).

    Attributes:
        screens: `Screen` functions run on every new config that is within the analytic budgets,
            before its latency is measured or it is trained (e.g. a latency model's prediction).
    """

    def __init__(self, spec: StudySpec, run_dir: str | os.PathLike | None = None, *,
                 address: str | None = None, trials: int | None = None,
                 on_progress: Callable[[Progress, str | None], None] | None = None,
                 num_cpus: int | None = None):
        self.spec = spec
        self.run_dir = spec.run_dir(run_dir).resolve()
        self.target = int(trials if trials is not None else spec.trials)
        if self.target < 1:
            raise SearchError(f"--trials {trials}: must be >= 1")
        self.on_progress = on_progress
        self.executor = Executor(address, num_cpus=num_cpus)
        self.objectives = list(spec.objectives)
        self.constraint_names = list(spec.constraints)
        self.budgets = dict(spec.constraints)
        self._named_constraints = False     # a study begun before constraints were stored once
        self.trials_count = spec.trials_count
        self.screens: list[Screen] = []
        self._stop = False
        self.study: optuna.Study | None = None
        self.evaluator = None
        self.rung_budgets: list[int | None] = [None]
        self.driver_id = f"{socket.gethostname()}:{self.run_dir}"

    # -------------------------------------------------------------------------------- public
    def request_stop(self) -> None:
        """Stop asking; in-flight trials are failed as `interrupted` and re-queued (idempotent)."""
        self._stop = True

    def run(self) -> SearchResult:
        """Run until the trial budget is spent or a stop is requested.

        Raises:
            SearchError: (subclasses DriverBusy, StudyMismatch, CostModelMismatch) one line.
            ExecutorError: Ray could not be started or reached.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with DriverLock(self.run_dir):
            self._t0 = self._wall_mark = time.monotonic()
            self._open_study()
            self._build_evaluator()
            self._store_study_attrs()
            (self.run_dir / "study.yaml").write_text(_dump_yaml(self.spec.resolved()))
            self.executor.start()
            try:
                self._latency_cache = self._open_latency_cache()
                interrupted = self._loop()
            finally:
                self._save_wall_time()
                if getattr(self, "_measurer", None) is not None:
                    self._measurer.stop()
                self.executor.shutdown()
            return self._result(interrupted)

    # ------------------------------------------------------------------------------- storage
    def _open_study(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.storage = open_storage(self.spec, self.run_dir)
        self.storage_label = self.spec.storage or str(self.run_dir / "study.log")
        names = [s.study_name for s in optuna.get_all_study_summaries(self.storage)]
        if names and self.spec.name not in names and not self.spec.storage:
            raise StudyMismatch(f"{self.run_dir}: holds study {names[0]!r}, but {self.spec.label} is "
                                f"study {self.spec.name!r}; use another --run-dir")
        existed = self.spec.name in names
        self.study = optuna.create_study(study_name=self.spec.name, storage=self.storage,
                                         directions=self.spec.directions, load_if_exists=True)
        self.resumed = existed
        stored_count = self.study.user_attrs.get("trials_count") if existed else None
        if "trials_count" not in self.spec.file.model_fields_set and existed:
            self.trials_count = stored_count or "sampled"   # studies begun before the key: sampled
        if existed and stored_count != self.trials_count:
            self.study.set_user_attr("trials_count", self.trials_count)
        if existed:
            self._check_stored_study()
        else:
            self.study.set_metric_names(self.objectives)

    def _check_stored_study(self) -> None:
        study, label = self.study, self.spec.label
        stored = [f"{n} ({d.name.lower()})" for n, d in
                  zip(study.metric_names or ["?"] * len(study.directions), study.directions)]
        wanted = [f"{n} ({d})" for n, d in zip(self.objectives, self.spec.directions)]
        if stored != wanted:
            raise StudyMismatch(f"{label}: objectives {wanted} differ from those stored in "
                                f"{self.storage_label} ({stored}); restore them or use another --run-dir")
        attrs = study.user_attrs
        checks = [("constraints", attrs.get("constraints"), self.budgets),
                  ("space", attrs.get("space"), _jsonable(self.spec.space_dict))]
        for key, old, new in checks:
            if old is not None and _jsonable(old) != _jsonable(new):
                raise StudyMismatch(f"{label}: {key} differ from those the stored study was run with "
                                    f"(stored: {_short(old)}); restore them or use another --run-dir")
        self._check_latency_settings(attrs)
        if isinstance(attrs.get("constraints"), dict):   # constraint values keep the stored order
            self.constraint_names = [n for n in attrs["constraints"] if n in self.budgets]
        self._named_constraints = any(_optuna.has_named_constraints(t)
                                      for t in study.get_trials(deepcopy=False))

    def _check_latency_device(self, trials: list[FrozenTrial]) -> None:
        """This run's latencies must be measured on what the stored ones were (the device string:
        hardware, threads, torch), or one study would mix two machines' numbers under one label."""
        now = getattr(self, "_latency_device", None)
        if not now or not self.spec.needs_latency:
            return
        seen = sorted({t.user_attrs.get("latency_device") for t in trials} - {None})
        if seen and now not in seen:
            raise StudyMismatch(f"{self.spec.label}: latency: this run measures on {now!r}, but the "
                                f"stored study's latencies were measured on {seen[0]!r}; resume it "
                                "there (same latency.threads / latency.cpus) or use another --run-dir")

    def _check_latency_settings(self, attrs: dict) -> None:
        """One study's latencies are measured one way: refuse a resume that changes the latency
        settings or the device. A setting added to the study file since the study was stored
        compares as its default, so an old study resumes when nothing really changed."""
        if not self.spec.needs_latency:
            return    # latency was not measured (else the objectives or constraints differ)
        label, latency = self.spec.label, self.spec.latency
        stored = attrs.get("latency") if isinstance(attrs.get("latency"), dict) else {}
        # where latency is measured: `latency.device`, else the study's device
        stored_device = stored.get("device") or attrs.get("device")
        device = getattr(latency, "device", None) or self.spec.device
        if stored_device is not None and stored_device != device:
            raise StudyMismatch(f"{label}: device: {device!r} differs from {stored_device!r}, "
                                "which the stored study measured its latencies on; restore it or use "
                                "another --run-dir")
        if not stored:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            defaults = _flatten(_jsonable(type(latency).model_construct().model_dump()))
        old, new = _flatten(_jsonable(stored)), _flatten(_jsonable(latency.model_dump()))
        changed = [f"latency.{k}: stored {old.get(k, defaults.get(k))!r}, now {new.get(k, defaults.get(k))!r}"
                   for k in sorted(set(old) | set(new)) if k.split(".")[0] not in _LATENCY_NOT_COMPARED
                   and old.get(k, defaults.get(k)) != new.get(k, defaults.get(k))]
        if changed:
            raise StudyMismatch(f"{label}: latency settings differ from those the stored study measured "
                                f"with ({'; '.join(changed)}); restore them or use another --run-dir")

    def _store_study_attrs(self) -> None:
        study = self.study
        attrs = study.user_attrs
        ev = None
        if self.evaluator is not None:
            settings = getattr(self.evaluator, "settings", None) or self.spec.evaluator.settings
            ev = {"name": self.spec.evaluator.name, **_jsonable(settings)}
        if self.resumed and "evaluator" in attrs and _jsonable(attrs["evaluator"]) != _jsonable(ev):
            raise StudyMismatch(f"{self.spec.label}: evaluator settings differ from those the stored "
                                f"study was run with (stored: {_short(attrs['evaluator'])}); restore "
                                "them or use another --run-dir")
        if self.resumed and "objectives" in attrs:
            return
        try:
            size = self.spec.space.size()
        except Exception:  # noqa: BLE001 - the size is informative only
            size = None
        values = {
            "overlock_nas_version": _version(),
            "study_file": self.spec.text,
            "objectives": [{"name": n, "direction": DIRECTIONS[n]} for n in self.objectives],
            "constraints": self.budgets,
            "space": _jsonable(self.spec.space_dict),
            "space_size": size,
            "sampler": self.spec.sampler_name,
            "seed": self.spec.seed,
            "trials_count": self.trials_count,
            "device": self.spec.device,
            "evaluator": ev,
            "latency": self.spec.latency.model_dump() if self.spec.needs_latency else None,
            "started_at": _dt.datetime.now().isoformat(timespec="seconds"),
            "wall_time_s": 0.0,
        }
        for k, v in values.items():
            study.set_user_attr(k, v)

    def _save_wall_time(self) -> None:
        if self.study is None:
            return
        with contextlib.suppress(Exception):
            now = time.monotonic()
            prev = float(self.study.user_attrs.get("wall_time_s", 0.0) or 0.0)
            self.study.set_user_attr("wall_time_s", round(prev + now - self._wall_mark, 2))
            self._wall_mark = now
            if getattr(self, "_progress", None) is not None:
                self.study.set_user_attr("skipped_over_budget", self._progress.infeasible)

    def _build_evaluator(self) -> None:
        if self.spec.score_metric is None:
            return
        e = self.spec.evaluator
        try:
            self.evaluator = make_evaluator(e.name, e.settings)
        except (ValueError, TypeError, ImportError, AttributeError) as err:
            raise SearchError(f"{self.spec.label}: evaluator: {err}") from None
        if self.evaluator.metric != self.spec.score_metric:
            raise SearchError(f"{self.spec.label}: evaluator {e.name!r} produces "
                              f"{self.evaluator.metric!r}, not the objective {self.spec.score_metric!r}")
        rungs = list(getattr(self.evaluator, "rungs", []) or [])
        if self.spec.successive_halving.enabled and len(rungs) > 1:
            self.rung_budgets = rungs
        else:
            self.rung_budgets = [None]   # one run at the evaluator's full budget

    def _sampler(self, n_stored: int):
        name = self.spec.sampler_name
        seed = derived_seed(self.spec.seed, n_stored)
        options = dict(self.spec.sampler.options)
        return sampler_class(name)(seed=seed, **options)

    def _open_latency_cache(self):
        """Start the measuring worker, learn from it the device string of its latencies, and open
        that device's store (read first, shared by every study on the device). Returns the run
        directory's record of the latencies this study used."""
        self._measurer, self._latency_device, self._store = None, None, None
        self._predictor = None
        self._held: dict = {}           # node id -> resources the measuring worker holds for good
        self._latency_note = None
        if not self.spec.needs_latency:
            return None
        from nas.measure import LatencyCache, device_store

        self._start_measurer()
        self._store = device_store(self._latency_device)
        self._predictor = self._open_predictor()
        return LatencyCache(str(self.run_dir / "latency_cache.json"))

    def _open_predictor(self):
        """`latency.model` (auto or a file): predictions that spare measuring configs far over
        the latency budget (`nas.latency_predictor`)."""
        s = self.spec.latency
        if not s.model:
            return None
        from nas.latency_predictor import LatencyPredictor, LatencyPredictorError

        source = s.model
        if source != "auto" and not Path(source).is_absolute() and self.spec.path is not None:
            source = str(Path(self.spec.path).parent / source)
        settings = {"device": self._latency_device, "resolution": None, "batch": s.batch,
                    "dtype": s.dtype, "channels_last": s.channels_last, "threads": self._latency_threads}
        try:
            return LatencyPredictor(source, settings, self._store, self.budgets.get("latency_ms"))
        except LatencyPredictorError as e:
            raise SearchError(f"{self.spec.label}: {e}") from None

    def _gpus_per_trial(self, nodes: list[dict]) -> float:
        gpus = self.spec.resources.gpus
        if gpus is None:
            wants_gpu = self.spec.device.startswith("cuda") or (
                self.spec.device == "auto" and any(n["gpus"] > 0 for n in nodes))
            gpus = 1.0 if wants_gpu else 0.0
        return gpus

    def _start_measurer(self) -> None:
        """The measuring worker: a Ray actor on the latency device, holding a GPU (or `cpus` CPU
        cores) alone. When that would leave no training slot (one GPU), measurements run as tasks
        with the same resources instead, between evaluations."""
        s, label = self.spec.latency, self.spec.label
        nodes = self.executor.nodes()
        device = s.device or self.spec.device
        gpu = device.startswith("cuda") or (device == "auto" and any(n["gpus"] > 0 for n in nodes))
        want = dict(cpus=float(s.cpus), gpus=1.0 if gpu else 0.0, resource=s.resource,
                    labels=s.node_labels)
        problem = self.executor.placeable(**want)
        if problem:
            raise SearchError(f"{label}: latency: the measuring worker needs {_wants(want)}, but {problem}")
        self._latency_threads = s.threads or s.cpus
        measurer = self.executor.measurer(**want, dedicated=True)
        info = self._describe(measurer, device, want)
        held = {info["node"]: {"cpus": want["cpus"], "gpus": want["gpus"]}}
        if self.executor.capacity(self.spec.resources.cpus, self._gpus_per_trial(nodes), held=held) == 0:
            measurer.stop()
            measurer = self.executor.measurer(**want, dedicated=False)
            info, held = self._describe(measurer, device, want), {}
            self._latency_note = (f"latency: no training slot would be left beside a dedicated "
                                  f"measuring worker ({_wants(want)}); each measurement takes them "
                                  "when free, between evaluations")
        self._measurer, self._held = measurer, held
        self._latency_device = info["device_string"]

    def _describe(self, measurer, device: str, want: dict) -> dict:
        """Ask the measuring worker what it measures on (only workers touch CUDA, never the driver)."""
        limit = max(self.spec.latency.timeout_s, _WORKER_START_S)
        handle = measurer.submit(DESCRIBE_TARGET, device, self._latency_threads,
                                 threads=self._latency_threads, max_retries=self.spec.max_retries)
        try:
            if not self.executor.wait([handle], timeout=limit):
                raise TaskLost(f"it did not start within {limit:g} s (is the cluster busy?)")
            info = self.executor.result(handle)
        except TaskLost as e:
            info = {"ok": False, "reason": e.reason}
        if not info.get("ok"):
            measurer.stop()
            raise SearchError(f"{self.spec.label}: latency: the measuring worker ({_wants(want)}, "
                              f"device {device}) failed: {info.get('reason')}")
        return info

    # ---------------------------------------------------------------------------- main loop
    def _loop(self) -> bool:
        study = self.study
        trials = study.get_trials(deepcopy=False)
        self._check_latency_device(trials)
        study.sampler = self._sampler(len(trials))
        nodes = self.executor.nodes()
        gpus = self._gpus_per_trial(nodes)
        self.trial_gpus = gpus
        fits = self.executor.capacity(self.spec.resources.cpus, gpus, held=self._held)
        if fits == 0:      # a task nothing can run would wait forever
            have = ", ".join(f"{n['ip']}: {n['cpus']:g} CPUs {n['gpus']:g} GPUs" for n in nodes)
            raise SearchError(f"{self.spec.label}: resources: one trial needs {self.spec.resources.cpus:g} "
                              f"CPUs and {gpus:g} GPUs (device {self.spec.device}), but no Ray node "
                              f"has them ({have})")
        self.parallel = self.spec.parallel or fits
        self._index: dict[str, int] = {}          # config hash -> finished trial number
        # rung budget -> {config hash: what halving ranks by (`_rung_signal`)}: one value per
        # architecture, so a re-run of it (an interrupted trial's re-queued copy, an orphan
        # restarted) replaces, never adds
        self._rung_scores: dict[str, dict[str, float]] = {}
        self._superseded = 0
        self._progress = Progress(target=self.target, counts=self.trials_count)
        self._session_done = 0
        self._session_counted = 0             # finished this session and counted in the budget
        self._draws_without_training = 0
        self._seen_hashes = {t.user_attrs["config_hash"] for t in trials if "config_hash" in t.user_attrs}
        self._space_size = self._space_size_or_none()
        self._last_tick = 0.0
        for t in trials:
            self._account_stored(t)
        self._inflight: dict[Any, _Live] = {}     # handle -> live
        self._ready: deque[_Live] = deque()       # waiting for an evaluation slot
        self._latency_queue: deque[_Live] = deque()
        self._parked: dict[str, list[_Live]] = {}   # hash -> duplicates waiting on a live trial
        self._live_hashes: dict[str, _Live] = {}
        running = [t for t in trials if t.state == TrialState.RUNNING]
        self._emit(f"Ray ({self.executor.mode}): {len(nodes)} node(s), "
                   f"{sum(n['cpus'] for n in nodes):g} CPUs, {sum(n['gpus'] for n in nodes):g} GPUs; "
                   f"up to {self.parallel} trial(s) at a time")
        if self._latency_note:
            self._emit(self._latency_note)
        # training workers start while the measuring worker prices the first configs; evaluations
        # wait for them, so the slots start together, not one process start-up apart
        self._warming = self.executor.warm(min(self.parallel, fits), self.spec.resources.cpus, gpus) \
            if self.evaluator is not None else []
        self._warm_until = time.monotonic() + _WARM_S
        if self.resumed:
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            self._emit(f"resuming {self.storage_label}: {self._progress.done} trials finished, "
                       f"{len(running)} left running, {waiting} queued")
        try:
            self._adopt(running)
            while True:
                if self._stop:
                    self._interrupt()
                    return True
                self._pump()      # a freed slot takes a priced trial before new ones are asked
                self._fill()
                self._pump()
                if not (self._inflight or self._ready or self._latency_queue or self._parked) \
                        and not self._budget_left():
                    return False
                self._collect(timeout=0.25)
                self._check_timeouts()
                self._tick()
        except KeyboardInterrupt:
            self._interrupt()
            return True
        except SearchError:
            self._interrupt()
            raise
        except Exception as e:  # noqa: BLE001 - e.g. the Ray cluster went away
            log = self.run_dir / "driver-error.log"
            log.write_text("".join(traceback.format_exception(e)))
            with contextlib.suppress(Exception):
                self._interrupt()
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise SearchError(f"the search stopped on an unexpected error ({type(e).__name__}: {first}); "
                              f"trials in flight were re-queued, details in {log}; run the same "
                              "command to continue") from None

    def _budget_left(self) -> bool:
        """More trials to ask: under the budget (and new architectures within budget may be
        left), or queued (WAITING) ones, which run first."""
        if self._stop:
            return False
        trials = self.study.get_trials(deepcopy=False)
        if sum(self._counts(t) for t in trials) < self.target and not self._progress.stopped:
            return True
        return any(t.state == TrialState.WAITING for t in trials)

    def _counts(self, t: FrozenTrial) -> bool:
        """Whether a stored trial counts against the budget (`trials_count`): every one but the
        superseded, or (trained) only those that reached training: COMPLETE (not a repeat), PRUNED
        by successive halving (it has rung scores; PRUNED before training, over a budget or by a
        gate, does not count), FAIL with a config; in flight counts, queued not yet."""
        ua = t.user_attrs
        if ua.get("superseded"):
            return False
        if self.trials_count == "sampled":
            return True
        if t.state == TrialState.WAITING or ua.get("infeasible") or ua.get("reused_from") is not None:
            return False
        if t.state == TrialState.PRUNED:
            return bool(ua.get("rung_scores"))
        return not (t.state == TrialState.FAIL and "config_hash" not in ua)

    def _count_draw(self, trial: optuna.Trial) -> None:
        """After a new trial started: with `trials_count: trained`, stop asking when the space has
        no new architecture within budget left (every one drawn, or too many draws in a row that
        train nothing)."""
        if self.trials_count != "trained":
            return
        if self._counts(_optuna.stored_trial(self.study, trial)):
            self._draws_without_training = 0
            return
        self._draws_without_training += 1
        why = ""
        if self._space_size is not None and len(self._seen_hashes) >= self._space_size:
            why = f"all {self._space_size} architectures of the space were drawn"
        elif self._draws_without_training >= MAX_DRAWS_WITHOUT_TRAINING:
            why = (f"{self._draws_without_training} draws in a row were over budget or already "
                   "evaluated")
        if why and not self._progress.stopped:
            self._progress.stopped = f"{why}: no new architecture within budget is left to train"
            self._emit(f"stopped asking: {self._progress.stopped}")

    def _space_size_or_none(self) -> int | None:
        try:
            return int(self.spec.space.size())
        except Exception:  # noqa: BLE001 - too large to enumerate: only the run of misses counts
            return None

    def _occupancy(self) -> int:
        evals = sum(1 for lv in self._inflight.values() if lv.kind == "eval")
        return evals + len(self._ready) + len(self._latency_queue) + \
            sum(1 for lv in self._inflight.values() if lv.kind == "latency")

    def _fill(self) -> None:
        """Ask new trials while slots are free and budget is left (with a measuring worker, up to
        `latency.ahead` more, so their latency is priced before a slot frees)."""
        while self._occupancy() < self.parallel + self._ahead() and self._budget_left():
            trial = self.study.ask()
            self._start_trial(trial)
            self._count_draw(trial)

    def _ahead(self) -> int:
        """Trials asked beyond the training slots, for the measuring worker to price ahead."""
        if self._measurer is None:
            return 0
        ahead = self.spec.latency.ahead
        return self.parallel if ahead is None else ahead

    def _pump(self) -> None:
        """Start queued work: the next measurement on the measuring worker (one at a time, so
        each has its device alone and its own timeout), and evaluations while slots are free.
        Neither waits for the other; a trial waits only for its own latency."""
        if self._latency_queue and not any(lv.kind == "latency" for lv in self._inflight.values()):
            self._submit_latency(self._latency_queue.popleft())
        if self._warming:
            self._warming = [] if time.monotonic() > self._warm_until else \
                [h for h in self._warming if h not in self.executor.wait(self._warming, timeout=0)]
            if self._warming:
                return
        evals = sum(1 for lv in self._inflight.values() if lv.kind == "eval")
        while self._ready and evals < self.parallel:
            self._submit_eval(self._next_ready())
            evals += 1

    def _next_ready(self) -> _Live:
        """The next trial to evaluate: one continuing to its next rung first, else the costliest
        (MACs estimate training time). Longest first leaves the short trials for the end of the
        study, so slots do not idle behind one long last trial."""
        continuing = next((lv for lv in self._ready if lv.rung > 0), None)
        pick = continuing or max(self._ready, key=lambda lv: lv.metrics.get("flops", 0))
        self._ready.remove(pick)
        return pick

    def _collect(self, timeout: float) -> None:
        done = self.executor.wait(list(self._inflight), timeout=timeout)
        for handle in done:
            try:
                result = self.executor.result(handle)
            except TaskLost as e:
                if self._stop:   # lost to the stop itself (Ctrl-C reaches Ray's processes too)
                    continue     # left in flight: _interrupt() re-queues it
                result = {"ok": False, "reason": e.reason, "error": e.error}
            lv = self._inflight.pop(handle)
            kind, lv.kind, lv.handle = lv.kind, "", None
            if kind == "latency":
                self._after_latency(lv, result)
            else:
                self._after_eval(lv, result)

    def _check_timeouts(self) -> None:
        self._check_latency_timeout()
        limit = self.spec.trial_timeout_s
        if not limit:
            return
        now = time.monotonic()
        for handle, lv in list(self._inflight.items()):
            if lv.kind == "eval" and lv.eval_s + (now - lv.started) > limit:
                self.executor.cancel(handle)
                del self._inflight[handle]
                lv.kind, lv.handle = "", None
                self._fail(lv, f"timeout: evaluation ran longer than {limit:g} s", "")

    # ------------------------------------------------------------------------- one trial
    def _start_trial(self, trial: optuna.Trial) -> None:
        import space as space_pkg

        lv = _Live(trial=trial)
        lv.seed = derived_seed(self.spec.seed, trial.number, 7)
        original = trial.user_attrs.get("requeued_from")
        if isinstance(original, int):    # an interrupted trial run again: same seed, its rungs kept
            lv.resume_from = _optuna.trial_by_number(self.study, original)
            lv.seed = int(lv.resume_from.user_attrs.get("seed", lv.seed))
        trial.set_user_attr("driver", self.driver_id)
        try:
            config = self.spec.space.suggest(trial)
        except (space_pkg.SpaceError, ValueError) as e:
            self._fail(lv, f"invalid config: {' '.join(str(e).split())[:240]}", "")
            return
        self._begin(lv, config)

    def _begin(self, lv: _Live, config) -> None:
        """From a sampled (or adopted) config to its first task, or straight to a tell."""
        trial = lv.trial
        lv.config, lv.chash = config, config.config_hash()
        self._seen_hashes.add(lv.chash)
        attrs = {"config": config.to_dict(), "config_hash": lv.chash, "summary": config.summary(),
                 "resolution": list(config.resolution), "seed": lv.seed,
                 "evaluator": self.spec.evaluator.name if self.evaluator is not None else None}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        # 2. never pay twice for one architecture
        original = self._index.get(lv.chash)
        if original is not None:
            self._reuse(lv, _optuna.trial_by_number(self.study, original))
            return
        if lv.chash in self._live_hashes:
            self._parked.setdefault(lv.chash, []).append(lv)
            return
        self._live_hashes[lv.chash] = lv
        # 3. analytic cost, checked against fvcore on a sample
        cost = self._cost(lv)
        if cost is None:
            return
        lv.metrics.update(cost)
        broken = self._broken(lv.metrics)
        if broken:
            self._infeasible(lv, broken)
            return
        # 3b. screens: estimates of budgets not known yet (e.g. predicted latency)
        estimated = self._screen(lv.config)
        if estimated:
            self._infeasible(lv, [f"{n} {_fmt(n, v)} (estimated) > {_fmt(n, self.budgets[n])}"
                                  for n, v in estimated.items()], estimated=estimated)
            return
        # 4. latency before training: the device's store, else the measuring worker's queue
        if self.spec.needs_latency:
            cached = self._cache_get(lv)
            verdict = lv.verdict = self._predict_latency(lv)
            if cached is None:
                if verdict and verdict["skip"]:
                    self._predicted_infeasible(lv, verdict)
                    return
                self._latency_queue.append(lv)
                return
            self._record_latency(lv, cached, source="store")
            broken = self._broken(lv.metrics)
            if broken:
                self._infeasible(lv, broken)
                return
        self._to_evaluation(lv)

    def _to_evaluation(self, lv: _Live) -> None:
        if self.evaluator is None:      # nothing to train: every objective is known already
            self._complete(lv)
        elif self._gated(lv):           # proxy_gate: not worth training (nas.gate)
            self._finish(lv, TrialState.PRUNED)
        elif not self._continue_rungs(lv):
            self._ready.append(lv)

    def _gated(self, lv: _Live) -> bool:
        """`proxy_gate`: score the config's zero-cost proxy; True (reason set) to skip training."""
        settings = self.spec.proxy_gate
        if settings is None or "gate_score" in lv.trial.user_attrs:   # off, or decided before
            return False
        if getattr(self, "_gate", None) is None:
            from .gate import ProxyGate

            self._gate = ProxyGate(settings.proxy, settings.drop_bottom, settings.min_trials,
                                   self.spec.evaluator.settings.get("dataset"), settings.batch_size,
                                   self.spec.evaluator.settings.get("resolution"))
            self._gate.remember(self.study.get_trials(deepcopy=False))
        score, reason = self._gate.check(lv.config, lv.seed)
        lv.trial.set_user_attr("gate_score", score)
        if reason is not None:
            self._store_constraints(lv.trial, self._violations(lv.metrics))
            lv.trial.set_user_attr("reason", reason)
        return reason is not None

    def _continue_rungs(self, lv: _Live) -> bool:
        """Continue from `lv.resume_from`'s last finished rung (its weights and optimiser state in
        RUN_DIR/weights): decide that rung again, then go on. False when there is nothing to
        continue from (the trial then starts from epoch 0; files nobody will read are deleted)."""
        src, lv.resume_from = lv.resume_from, None
        if src is None or src.user_attrs.get("config_hash") != lv.chash:
            return False
        rung_scores = src.user_attrs.get("rung_scores") or {}
        budgets = [str(b) for b in self.rung_budgets]
        done = [i for i, b in enumerate(budgets) if b in rung_scores]
        files = self._weights_paths(src.number, lv.chash)
        if not done or "weights" not in files:
            if src.number != lv.number:
                self._delete_files(src.number, lv.chash)
            return False
        if src.number != lv.number:      # a re-queued copy takes over the original's files
            for key, path in files.items():
                target = self._weights_paths(lv.number, lv.chash, existing=False)[key]
                os.replace(path, target)
            skip = set(_IDENTITY_ATTRS) | {"reason", "error", "superseded", "requeued_from", "weights"}
            for k, v in src.user_attrs.items():
                if k not in skip:
                    lv.trial.set_user_attr(k, v)
            lv.trial.set_user_attr("continued_from", src.number)
        weights = self._weights_paths(lv.number, lv.chash)["weights"]
        lv.trial.set_user_attr("weights", str(weights.relative_to(self.run_dir)))
        lv.rung = done[-1]
        lv.eval_s = float(src.user_attrs.get("eval_wall_s", 0.0))
        score = float(rung_scores[budgets[lv.rung]])
        lv.metrics[self.spec.score_metric] = score
        ranked = self._rung_signal(src.user_attrs, budgets[lv.rung])
        self._emit(f"#{lv.number} continues from {budgets[lv.rung]} epochs "
                   f"(trained by #{src.number})")
        if ranked is None:    # trained under the other signal: go on, unranked, rather than lose it
            lv.rung += 1
            self._ready.appendleft(lv)
            return True
        self._rung_scores.setdefault(budgets[lv.rung], {})[lv.chash] = ranked
        self._after_rung(lv, ranked)
        return True

    def _weights_paths(self, number: int, chash: str, existing: bool = True) -> dict[str, Path]:
        """{"weights": .safetensors, "state": .state.pt} of trial `number` (only existing files
        unless `existing=False`)."""
        base = self.run_dir / "weights" / f"{number}-{chash}"
        paths = {"weights": base.with_suffix(".safetensors"), "state": Path(str(base) + ".state.pt")}
        return {k: p for k, p in paths.items() if not existing or p.exists()}

    def _delete_files(self, number: int, chash: str) -> None:
        for path in self._weights_paths(number, chash).values():
            with contextlib.suppress(OSError):
                path.unlink()

    def _cost(self, lv: _Live) -> dict | None:
        import space as space_pkg

        cost = space_pkg.complexity(lv.config)
        metrics = {k: (float(v) if k == "memory_mb" else int(v)) for k, v in cost.as_metrics().items()}
        for k, v in metrics.items():
            lv.trial.set_user_attr(k, v)
        every = self.spec.fvcore_check_every
        if lv.number == 0 or (every and lv.number % every == 0):
            from overlock import create_model
            from overlock.flops import count_macs

            model = create_model(lv.config)
            counted = count_macs(model, lv.config.resolution, batch=1, in_chans=lv.config.in_chans)
            n_params = sum(p.numel() for p in model.parameters())
            lv.trial.set_user_attr("flops_fvcore", int(counted.total))
            problems = []
            if counted.total != cost.flops:
                problems.append(f"flops analytic {cost.flops} != fvcore {counted.total}")
            if counted.paper != cost.flops_paper:
                problems.append(f"flops_paper analytic {cost.flops_paper} != fvcore {counted.paper}")
            if n_params != cost.params:
                problems.append(f"params analytic {cost.params} != model {n_params}")
            if problems:
                msg = f"cost model disagrees with fvcore on trial {lv.number}: {'; '.join(problems)}"
                self._fail(lv, msg, "")
                raise CostModelMismatch(msg + f" (config {lv.chash}); constraints would be wrong, "
                                        "so the study stops")
        return metrics

    def _broken(self, metrics: dict) -> list[str]:
        out = []
        for name, budget in self.budgets.items():
            if name in metrics and metrics[name] > budget:
                out.append(f"{name} {_fmt(name, metrics[name])} > {_fmt(name, budget)}")
        return out

    def _violations(self, metrics: dict) -> dict:
        return {n: metrics[n] - b for n, b in self.budgets.items() if n in metrics}

    @property
    def budgets_in_order(self) -> dict:
        """The budgets in the order their constraint values are stored (the stored study's)."""
        return {n: self.budgets[n] for n in self.constraint_names}

    def _store_constraints(self, trial: optuna.Trial, violations: dict) -> None:
        set_constraints(self.study, trial, self.constraint_names, violations,
                        named=self._named_constraints)

    # --------------------------------------------------------------------------------- latency
    def _cache_args(self, lv: _Live, device_name: str | None = None) -> tuple:
        s = self.spec.latency
        return (lv.config, device_name or self._latency_device, s.batch, None, s.dtype, s.channels_last)

    def _cache_get(self, lv: _Live) -> dict | None:
        """The device store first (every study on this device), then this run's own record."""
        if self._latency_cache is None or self._latency_device is None:
            return None
        found = self._store.get(*self._cache_args(lv))
        if found is None:
            found = self._latency_cache.get(*self._cache_args(lv))
            if found is not None:       # the store was cleared: give it back what this run knows
                self._store.put(*self._cache_args(lv), found)
        elif self._latency_cache.get(*self._cache_args(lv)) is None:
            self._latency_cache.put(*self._cache_args(lv), found)
        return found

    def _cache_put(self, lv: _Live, result: dict) -> None:
        """Keyed by the device string the measurement reports (a restarted worker on another node
        stores under its own device)."""
        from nas.measure import device_store

        name = result.get("latency_device") or self._latency_device
        store = self._store if name == self._latency_device else device_store(name)
        result = {**result, "config": lv.config.to_dict()}     # a latency model fits on these
        store.put(*self._cache_args(lv, name), result)
        self._latency_cache.put(*self._cache_args(lv, name), result)

    def _submit_latency(self, lv: _Live) -> None:
        s = self.spec.latency
        lv.handle = self._measurer.submit(
            LATENCY_TARGET, lv.config.to_dict(), device=s.device or self.spec.device,
            latency=s.model_dump(), num_threads=self._latency_threads,
            threads=self._latency_threads, max_retries=self.spec.max_retries)
        lv.kind, lv.started = "latency", time.monotonic()
        self._inflight[lv.handle] = lv

    def _check_latency_timeout(self) -> None:
        """The worker stops a measurement at `latency.timeout_s` itself; one stuck past that (in
        native code) is stopped by restarting the measuring worker."""
        if self._measurer is None or not self._measurer.dedicated:
            return      # a task waits for its resources first: its own timer is the worker's
        limit = self.spec.latency.timeout_s + _LATENCY_GRACE_S
        now = time.monotonic()
        for handle, lv in list(self._inflight.items()):
            if lv.kind == "latency" and now - lv.started > limit:
                self.executor.cancel(handle)
                del self._inflight[handle]
                lv.kind, lv.handle = "", None
                self._fail(lv, f"latency: timeout: no result after {limit:g} s (latency.timeout_s "
                               f"{self.spec.latency.timeout_s:g}); the measuring worker was restarted", "")

    def _after_latency(self, lv: _Live, result: dict) -> None:
        if not result.get("ok"):
            self._fail(lv, f"latency: {result.get('reason')}", result.get("error", ""))
            return
        why = self._recheck(lv, result) if lv.first_latency is None else None
        if why is not None:
            # interference only ever adds time: a reading the model contradicts, or one so close
            # to the budget that noise decides its side, is measured once more, the faster kept
            lv.first_latency = result
            lv.trial.set_user_attr("latency_first_ms", round(float(result["latency_ms"]), 4))
            lv.trial.set_user_attr("latency_recheck", why)
            self._emit(f"#{lv.number} latency {result['latency_ms']:.4g} ms is {why}: measuring it again")
            self._latency_queue.appendleft(lv)
            return
        if lv.first_latency is not None:
            result = min(lv.first_latency, result, key=lambda r: float(r["latency_ms"]))
        self._cache_put(lv, result)
        self._record_latency(lv, result, source="measured")
        if self._predictor is not None:
            self._predictor.learn(lv.config, float(result["latency_ms"]))
        broken = self._broken(lv.metrics)
        if broken:
            self._infeasible(lv, broken)
        else:
            self._to_evaluation(lv)

    def _recheck(self, lv: _Live, result: dict) -> str | None:
        """Why a first latency reading should be measured once more, or None: the study's latency
        model (with a finite margin) disagrees with it by more than that margin and 10 %, or it
        lies within `latency.recheck_near` of the latency budget."""
        ms, v = float(result["latency_ms"]), lv.verdict
        if v and math.isfinite(v["margin"]) and v["predicted_ms"] > 0:
            off = ms / v["predicted_ms"] - 1.0
            if abs(off) > max(v["margin"], 0.10):
                return (f"{off:+.0%} off the model's {v['predicted_ms']:.4g} ms "
                        f"(margin {v['margin']:.0%})")
        budget, near = self.budgets.get("latency_ms"), self.spec.latency.recheck_near
        if budget and near and abs(ms / budget - 1.0) <= near:
            return f"within {near:.0%} of the {budget:.4g} ms budget"
        return None

    def _predict_latency(self, lv: _Live) -> dict | None:
        """The latency model's prediction for the trial's config (recorded on every trial, measured
        or not, so predicted and measured latency can be compared), or None without a model."""
        verdict = self._predictor.judge(lv.config) if self._predictor is not None else None
        if verdict:
            t = lv.trial
            t.set_user_attr("latency_predicted_ms", round(verdict["predicted_ms"], 4))
            t.set_user_attr("latency_predicted_low_ms", round(verdict["low_ms"], 4))
            margin = verdict["margin"]
            t.set_user_attr("latency_model_margin", round(margin, 4) if math.isfinite(margin) else None)
            t.set_user_attr("latency_model_n", verdict["n"])
        return verdict

    def _predicted_infeasible(self, lv: _Live, verdict: dict) -> None:
        """Over the latency budget by more than the model's stated margin: PRUNED `infeasible`,
        neither measured nor trained (`latency_source: predicted`; no `latency_ms` recorded)."""
        lv.trial.set_user_attr("latency_source", "predicted")
        lv.metrics["latency_ms"] = verdict["predicted_ms"]     # its constraint value: an estimate
        budget = self.budgets["latency_ms"]
        self._infeasible(lv, [f"latency_ms {_fmt('latency_ms', verdict['predicted_ms'])} predicted, "
                              f"at least {_fmt('latency_ms', verdict['low_ms'])} within the model's "
                              f"margin of {verdict['margin']:.1%} > {_fmt('latency_ms', budget)} "
                              "(not measured)"])

    def _record_latency(self, lv: _Live, result: dict, source: str) -> None:
        """Every `latency_*` field of the result (the device string among them) on the trial,
        and where it came from: `latency_source` measured (by this study) or store."""
        for k, v in result.items():
            if k.startswith("latency_") and v is not None:
                lv.trial.set_user_attr(k, _jsonable(v))
        lv.trial.set_user_attr("latency_source", source)
        lv.metrics["latency_ms"] = float(result["latency_ms"])

    # ------------------------------------------------------------------------------ evaluation
    def _submit_eval(self, lv: _Live, resume_files: dict | None = None) -> None:
        e = self.spec.evaluator
        budget = self.rung_budgets[lv.rung]
        if resume_files is None and lv.rung > 0:
            resume_files = self._weights_files(lv)
        lv.handle = self.executor.submit(
            EVAL_TARGET, e.name, e.settings, lv.config.to_dict(),
            budget_epochs=budget, device=self.spec.device, seed=lv.seed,
            weights_name=f"{lv.number}-{lv.chash}", resume_files=resume_files,
            cpus=self.spec.resources.cpus, gpus=self.trial_gpus,
            max_retries=self.spec.max_retries)
        lv.kind, lv.started = "eval", time.monotonic()
        self._inflight[lv.handle] = lv

    def _weights_files(self, lv: _Live) -> dict | None:
        """{key: (file name, bytes)} of the trial's weights and state files, sent to the worker."""
        out = {key: (path.name, path.read_bytes())
               for key, path in self._weights_paths(lv.number, lv.chash).items()}
        return out or None

    def _after_eval(self, lv: _Live, result: dict) -> None:
        if not result.get("ok"):
            self._fail(lv, result.get("reason") or "evaluation failed", result.get("error", ""))
            return
        score = result.get("score")
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            self._fail(lv, f"score is {score!r} (not a finite number)", "")
            return
        lv.eval_s += float(result.get("wall_s") or 0.0)
        t = lv.trial
        files = result.get("files") or {}
        for key, (name, data) in files.items():
            path = self.run_dir / "weights" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            if key == "weights":
                t.set_user_attr("weights", str(path.relative_to(self.run_dir)))
        for k in ("score", "epochs", "history", "fidelity", "train_loss", "val_loss", "data_skipped",
                  "data_skipped_first", "dataset"):  # dataset: which images the score comes from (report, model card)
            if k in result:
                t.set_user_attr(k, _jsonable(result[k]))
        # The train evaluator fits the classifier / input size to its data set; the trial's cost
        # is priced on the study's config, so say when the trained model differs from it.
        for k in ("num_classes", "resolution"):
            if k in result and _jsonable(result[k]) != _jsonable(lv.config.to_dict()[k]):
                t.set_user_attr(f"trained_{k}", _jsonable(result[k]))
        t.set_user_attr("eval_wall_s", round(lv.eval_s, 3))
        lv.metrics[self.spec.score_metric] = float(score)
        budget = self.rung_budgets[lv.rung]
        if budget is not None:
            key = str(budget)
            rung_scores = dict(t.user_attrs.get("rung_scores") or {})
            rung_scores[key] = float(score)
            t.set_user_attr("rung_scores", rung_scores)
            val_loss = (result.get("val_loss") or [None])[-1]
            if isinstance(val_loss, (int, float)) and math.isfinite(val_loss):
                rung_val_loss = dict(t.user_attrs.get("rung_val_loss") or {})
                rung_val_loss[key] = float(val_loss)
                t.set_user_attr("rung_val_loss", rung_val_loss)
            ranked = self._rung_signal(t.user_attrs, key)
            last = lv.rung + 1 >= len(self.rung_budgets)    # completes: nothing left to rank
            if ranked is None and not last:
                self._fail(lv, "successive_halving.signal=val_loss: the evaluator returned no finite "
                               "val_loss", "")
                return
            if ranked is not None:
                self._rung_scores.setdefault(key, {})[lv.chash] = ranked
            self._after_rung(lv, float(score) if ranked is None else ranked)
            return
        self._after_rung(lv, float(score))

    def _rung_signal(self, user_attrs: dict, budget: str) -> float | None:
        """What successive halving ranks a rung by (higher is better), from a trial's records:
        its accuracy (`rung_scores`) or minus its validation loss (`rung_val_loss`)."""
        if self.spec.successive_halving.signal == "val_loss":
            loss = (user_attrs.get("rung_val_loss") or {}).get(budget)
            return None if loss is None else -float(loss)
        score = (user_attrs.get("rung_scores") or {}).get(budget)
        return None if score is None else float(score)

    def _after_rung(self, lv: _Live, score: float) -> None:
        """Finished rung `lv.rung` with `score`: continue, prune, or complete."""
        if lv.rung + 1 >= len(self.rung_budgets):
            self._complete(lv)
            return
        budget = self.rung_budgets[lv.rung]
        scores = sorted(self._rung_scores.get(str(budget), {}).values(), reverse=True)
        sh = self.spec.successive_halving
        keep = max(1, int(len(scores) / sh.eta))
        cutoff = scores[keep - 1]
        if sh.signal == "val_loss":   # ranked by minus the loss; said as the loss itself
            said, value, limit, side = "validation loss", -score, -cutoff, "above the best"
        else:
            said, value, limit, side = self.spec.score_metric, score, cutoff, "below the top"
        if len(scores) < sh.min_trials or score >= cutoff:
            lv.rung += 1
            self._ready.appendleft(lv)     # finish started trials first
            self._emit(f"#{lv.number} continues to {self.rung_budgets[lv.rung]} epochs "
                       f"({said} {value:.4g} at {budget})")
            return
        t = lv.trial
        self._store_constraints(t, self._violations(lv.metrics))
        t.set_user_attr("reason", f"successive halving: {said} {value:.4g} after "
                                  f"{budget} epochs is {side} 1/{sh.eta:g} of "
                                  f"{len(scores)} trials (cutoff {limit:.4g})")
        self._finish(lv, TrialState.PRUNED)

    # ------------------------------------------------------------------------------- endings
    def _complete(self, lv: _Live) -> None:
        values = [lv.metrics[o] for o in self.objectives]
        self._store_constraints(lv.trial, self._violations(lv.metrics))
        if self.evaluator is None:
            lv.trial.set_user_attr("fidelity", 1.0)
        self._finish(lv, TrialState.COMPLETE, values)

    def _screen(self, config) -> dict:
        """{budget: estimated value} of the budgets the screens expect `config` to break."""
        out = {}
        for screen in self.screens:
            for name, value in (screen(config) or {}).items():
                if name in self.budgets and name not in out and float(value) > self.budgets[name]:
                    out[name] = float(value)
        return out

    def _infeasible(self, lv: _Live, broken: list[str], estimated: dict | None = None) -> None:
        """PRUNED before training, with every known (or estimated) constraint value."""
        t = lv.trial
        violations = self._violations(lv.metrics)
        if estimated:
            violations.update({n: v - self.budgets[n] for n, v in estimated.items()})
            t.set_user_attr("estimated", estimated)
        self._store_constraints(t, violations)
        t.set_user_attr("infeasible", True)
        t.set_user_attr("reason", "over budget before training: " + ", ".join(broken))
        self._finish(lv, TrialState.PRUNED)

    def _fail(self, lv: _Live, reason: str, error: str, *, keep_files: bool = False) -> None:
        """FAIL with a reason; its weights files go (nobody reads them) unless `keep_files`
        (an interrupted trial: its re-queued copy continues from them)."""
        t = lv.trial
        t.set_user_attr("reason", " ".join(str(reason).split())[:300])
        if error:
            t.set_user_attr("error", error[-4000:])
        if lv.chash and not keep_files:
            self._delete_files(lv.number, lv.chash)
        self._finish(lv, TrialState.FAIL)

    def _reuse(self, lv: _Live, original: FrozenTrial) -> None:
        t = lv.trial
        for k, v in original.user_attrs.items():
            if k not in _IDENTITY_ATTRS and k not in ("reused_from",):
                t.set_user_attr(k, v)
        t.set_user_attr("reused_from", original.number)
        self._store_constraints(t, named_constraints(original, self.budgets_in_order))
        self._finish(lv, original.state, original.values if original.state == TrialState.COMPLETE else None,
                     reused=True)

    def _finish(self, lv: _Live, state: TrialState, values: list[float] | None = None,
                reused: bool = False) -> None:
        if state == TrialState.COMPLETE and not _tellable(values, len(self.objectives)):
            # optuna would turn it FAIL (a NaN objective, a missing value): say why first, a
            # finished trial's attributes cannot be changed
            lv.trial.set_user_attr("reason", f"objective values rejected: {values}")
            state, values = TrialState.FAIL, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if state == TrialState.COMPLETE:
                self.study.tell(lv.trial, values)
            else:
                self.study.tell(lv.trial, state=state)
        self._session_done += 1
        if self._counts(_optuna.stored_trial(self.study, lv.trial)):
            self._session_counted += 1
        if state in FINISHED and lv.chash and not reused:
            self._index.setdefault(lv.chash, lv.number)
            self._drop_state_file(lv)
        if not reused and self._live_hashes.get(lv.chash) is lv:
            del self._live_hashes[lv.chash]
            waiting = self._parked.pop(lv.chash, [])
            final = _optuna.stored_trial(self.study, lv.trial)
            for dup in waiting:
                if final.state in FINISHED:
                    self._reuse(dup, final)
                else:    # the original failed: the duplicate gets its own chance
                    self._begin(dup, dup.config)
        self._account(_optuna.stored_trial(self.study, lv.trial))
        self._emit(self._line(lv, state, values))

    def _drop_state_file(self, lv: _Live) -> None:
        """Optimiser state is only needed to continue training; a finished trial keeps weights."""
        p = self._weights_paths(lv.number, lv.chash).get("state")
        with contextlib.suppress(OSError):
            if p is not None:
                p.unlink()

    # ---------------------------------------------------------------------- resume and stop
    def _adopt(self, running: list[FrozenTrial]) -> None:
        """RUNNING trials left by a dead driver of this run directory."""
        from overlock import OverLoCKConfig

        for ft in running:
            owner = ft.user_attrs.get("driver")
            if self.spec.storage and owner not in (None, self.driver_id):
                continue        # another driver's trial in a shared RDB study
            trial = _optuna.resume_trial(self.study, ft)
            lv = _Live(trial=trial, seed=int(ft.user_attrs.get("seed", derived_seed(
                self.spec.seed, ft.number, 7))))
            if "config" not in ft.user_attrs:
                self._requeue(lv, ft, "interrupted before its config was recorded")
                continue
            config = OverLoCKConfig.from_dict(ft.user_attrs["config"])
            self._emit(f"#{ft.number} adopted (left RUNNING by a previous driver)")
            # cost, budgets and latency are checked again (analytic, cached); training continues
            # from its last finished rung when that rung's weights were kept
            lv.resume_from = ft
            self._begin(lv, config)

    def _requeue(self, lv: _Live, ft: FrozenTrial, reason: str) -> None:
        """FAIL it (superseded, not counted) and queue its params to run first next time."""
        lv.trial.set_user_attr("superseded", True)
        self._superseded += 1
        self._fail(lv, reason, "", keep_files=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.enqueue_trial(dict(ft.params), user_attrs={"requeued_from": ft.number},
                                     skip_if_exists=False)

    def _interrupt(self) -> None:
        """Stop: every trial this driver holds is failed as interrupted and re-queued."""
        import signal

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) \
            if _main_thread() else None
        try:
            held = list(self._inflight.values()) + list(self._ready) + list(self._latency_queue) \
                + [lv for dups in self._parked.values() for lv in dups]
            for handle in list(self._inflight):
                self.executor.cancel(handle)
            self._inflight.clear()
            self._ready.clear()
            self._latency_queue.clear()
            self._parked.clear()
            seen = set()
            for lv in held:
                if lv.number in seen:
                    continue
                seen.add(lv.number)
                ft = _optuna.stored_trial(self.study, lv.trial)
                if ft.state == TrialState.RUNNING:
                    self._requeue(lv, ft, "interrupted")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    # ----------------------------------------------------------------------------- progress
    def _account_stored(self, t: FrozenTrial) -> None:
        ua = t.user_attrs
        if ua.get("superseded"):
            self._superseded += 1
        if t.state in FINISHED and "config_hash" in ua and "reused_from" not in ua:
            self._index.setdefault(ua["config_hash"], t.number)
        chash = ua.get("config_hash") or f"#{t.number}"
        for budget in (ua.get("rung_scores") or {}):
            ranked = self._rung_signal(ua, str(budget))
            if ranked is not None:
                self._rung_scores.setdefault(str(budget), {})[chash] = ranked
        if t.state != TrialState.RUNNING and t.state != TrialState.WAITING:
            self._account(t)

    def _account(self, t: FrozenTrial) -> None:
        p, ua = self._progress, t.user_attrs
        if ua.get("superseded"):
            return
        p.done += 1
        if ua.get("reused_from") is not None:
            p.reused += 1
        if t.state == TrialState.COMPLETE:
            p.complete += 1
            if is_feasible(t, self.budgets):
                p.feasible += 1
        elif t.state == TrialState.PRUNED:
            if ua.get("infeasible"):
                p.infeasible += 1
            else:
                p.halved += 1
        elif t.state == TrialState.FAIL:
            p.failed += 1

    def _snapshot(self) -> Progress:
        p = self._progress
        trials = self.study.get_trials(deepcopy=False)
        p.counted = sum(self._counts(t) for t in trials)
        p.running = len({lv.number for lv in self._inflight.values()}) + len(self._ready) \
            + len(self._latency_queue)
        p.elapsed_s = time.monotonic() - self._t0
        p.session_done = self._session_done
        if self._session_counted and p.elapsed_s > 0:
            rate = self._session_counted / p.elapsed_s
            finished = sum(self._counts(t) for t in trials if t.state.is_finished())
            p.eta_s = max(0, self.target - finished) / rate
        return p

    def _refresh_front(self) -> None:
        p = self._progress
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            front = [t for t in pareto_front(self.study) if t.user_attrs.get("reused_from") is None]
        p.pareto = len(front)
        metric = self.spec.score_metric or self.objectives[0]
        if front:
            pick = (max if DIRECTIONS[metric] == "maximize" else min)(
                front, key=lambda t: t.values[self.objectives.index(metric)])
            v = pick.values[self.objectives.index(metric)]
            p.best = f"{metric} {_fmt(metric, v)} (#{pick.number})"

    def _emit(self, line: str | None) -> None:
        if self.on_progress is None:
            return
        if line is not None:
            self._refresh_front()
        self.on_progress(self._snapshot(), line)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= 1.0:
            self._last_tick = now
            self._emit(None)
            if now - self._wall_mark >= 30:
                self._save_wall_time()

    def _line(self, lv: _Live, state: TrialState, values) -> str:
        t = _optuna.stored_trial(self.study, lv.trial)
        ua = t.user_attrs
        head = f"#{t.number} {t.state.name}"
        if t.state == TrialState.COMPLETE:
            parts = [f"{o} {_fmt(o, v)}" for o, v in zip(self.objectives, t.values)]
            feas = "" if is_feasible(t, self.budgets) else " (infeasible)"
            body = ", ".join(parts) + feas
        else:
            body = ua.get("reason", "")
        if ua.get("reused_from") is not None:
            body += f" [reused #{ua['reused_from']}]"
        return f"{head}: {body}"

    def _result(self, interrupted: bool) -> SearchResult:
        self._refresh_front()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            front = pareto_front(self.study)   # nas.storage's rule, as the report and export
        return SearchResult(run_dir=self.run_dir, study_name=self.spec.name,
                            storage=self.storage_label, objectives=self.objectives,
                            progress=self._snapshot(), pareto=front, interrupted=interrupted,
                            wall_time_s=float(self.study.user_attrs.get("wall_time_s", 0.0)))


# ======================================================================================= helpers
_LATENCY_GRACE_S = 30.0   # past latency.timeout_s before the driver restarts the measuring worker
_WORKER_START_S = 300.0   # for the measuring worker to be placed and answer (or latency.timeout_s)
_WARM_S = 120.0           # evaluations wait at most this long for the training workers' warm-up


def _wants(want: dict) -> str:
    """The measuring worker's request, for messages: "1 CPU, 1 GPU, resource t4_box"."""
    parts = [f"{want['cpus']:g} CPU{'s' if want['cpus'] != 1 else ''}"]
    if want.get("gpus"):
        parts.append(f"{want['gpus']:g} GPU")
    if want.get("resource"):
        parts.append(f"resource {want['resource']}")
    parts += [f"label {k}={v}" for k, v in (want.get("labels") or {}).items()]
    return ", ".join(parts)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _tellable(values, n: int) -> bool:
    """`n` objective values Optuna accepts as COMPLETE (numbers, none NaN)."""
    try:
        return values is not None and len(values) == n and not any(math.isnan(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _flatten(value, prefix: str = "") -> dict:
    """{"a.b": leaf} of nested dicts (a non-dict value is one leaf)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("overlock-nas")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0+unknown"
