"""Opening a run directory's study for the one driver: lock, storage, resume checks, stored
study attributes, evaluator and sampler, into one frozen `Session`.

A resume is refused (`StudyMismatch`, one line) when the study file changed what the stored study
was run with: objectives, budgets, space, evaluator settings, the latency settings or the device
latencies were measured on. A setting added to the study file since the study was stored
compares as its default, so an old study resumes when nothing really changed; an evaluator setting
the study file leaves unset keeps the stored study's value (a default changed since: the study
goes on scoring as it began).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import socket
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas import _optuna
from nas.storage import (DIRECTIONS, ERROR_LOG_NAME, JOURNAL_NAME, LockHeld, StorageError, jsonable,
                         open_for_driver, release_driver_lock, take_driver_lock)
from nas.study import StudySpec, sampler_class
from nas.util import derived_seed, first_line, preview, space_size
from nas.worker import make_evaluator

# latency settings a resume may change: they schedule measurements or pick which configs to skip,
# never change a measured value (`device` is compared as where latency is measured)
LATENCY_NOT_COMPARED = ("device", "timeout_s", "ahead", "model", "recheck_near", "measure_first")


class SearchError(Exception):
    """The search cannot start or go on; the message is one line for the user."""


class DriverBusy(SearchError):
    pass


class StudyMismatch(SearchError):
    pass


class CostModelMismatch(SearchError):
    pass


class DriverLock:
    """An exclusive fcntl lock on RUN_DIR/driver.lock (`nas.storage.take_driver_lock`), released
    when the process ends (even by SIGKILL), so a second driver on the same run directory is
    refused, never blocked."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._fh = None

    def __enter__(self):
        try:
            self._fh = take_driver_lock(self.run_dir)
        except LockHeld as e:
            raise DriverBusy(f"{self.run_dir}: another overlock-nas search is running on this "
                             f"run directory ({e.holder}); wait for it to finish or stop it, or use "
                             "another --run-dir") from None
        return self

    def __exit__(self, *exc):
        if self._fh:
            release_driver_lock(self._fh)
            self._fh = None


def open_storage(spec: StudySpec, run_dir: Path, *, buffered: bool = False):
    """The study's storage: a journal file in the run directory, or the study file's RDB URL.
    `buffered`: the driver's own journal, written once per step (nas.search.journal)."""
    try:
        return open_for_driver(run_dir, spec.storage, spec.label, buffered=buffered)
    except StorageError as e:
        raise SearchError(str(e)) from None


@dataclass(frozen=True)
class Session:
    """What one run of the driver works with, fixed once the study is open."""

    spec: StudySpec
    run_dir: Path
    storage: Any
    storage_label: str
    study: optuna.Study
    resumed: bool
    trials_count: str            # what the budget counts: "trained" or "sampled"
    constraint_names: tuple      # budgets in the order their values are stored
    named_constraints: bool      # a study begun before constraints were stored once
    evaluator: Any               # None: every objective is known without training
    rung_budgets: tuple          # (None,) without successive halving
    driver_id: str
    kept_settings: dict          # evaluator settings unset in the file, kept at the stored study's

    @property
    def budgets(self) -> dict:
        return dict(self.spec.constraints)

    @property
    def objectives(self) -> list[str]:
        return list(self.spec.objectives)


def open_session(spec: StudySpec, run_dir: Path) -> Session:
    """Open (or create) the study under the driver's lock, check a resume against the study file,
    build the evaluator and store the study's attributes; writes RUN_DIR/study.yaml."""
    from nas.storage import STUDY_FILE_COPY

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(spec, run_dir, buffered=True)
    label = spec.storage or str(run_dir / JOURNAL_NAME)
    study, resumed = _create_study(spec, run_dir, storage)
    trials_count = _trials_count(spec, study, resumed)
    names, named = list(spec.constraints), False
    if resumed:
        names, named = _check_stored_study(spec, study, label)
    else:
        study.set_metric_names(list(spec.objectives))
    evaluator, rungs = _build_evaluator(spec)
    kept = {}
    if resumed:
        spec, evaluator, rungs, kept = _keep_stored_settings(spec, study.user_attrs.get("evaluator"),
                                                             evaluator, rungs)
    _store_study_attrs(spec, study, resumed, evaluator, trials_count)
    (run_dir / STUDY_FILE_COPY).write_text(_dump_yaml(spec.resolved()))
    return Session(spec=spec, run_dir=run_dir, storage=storage, storage_label=label, study=study,
                   resumed=resumed, trials_count=trials_count, constraint_names=tuple(names),
                   named_constraints=named, evaluator=evaluator, rung_budgets=tuple(rungs),
                   driver_id=f"{socket.gethostname()}:{run_dir}", kept_settings=kept)


def _create_study(spec: StudySpec, run_dir: Path, storage) -> tuple[optuna.Study, bool]:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if names and spec.name not in names and not spec.storage:
        raise StudyMismatch(f"{run_dir}: holds study {names[0]!r}, but {spec.label} is "
                            f"study {spec.name!r}; use another --run-dir")
    study = optuna.create_study(study_name=spec.name, storage=storage,
                                directions=spec.directions, load_if_exists=True)
    return study, spec.name in names


def _trials_count(spec: StudySpec, study: optuna.Study, resumed: bool) -> str:
    """The file's `trials_count`; a resumed study the file does not say it for keeps its own
    (studies begun before the key: sampled)."""
    count = spec.trials_count
    stored = study.user_attrs.get("trials_count") if resumed else None
    if "trials_count" not in spec.file.model_fields_set and resumed:
        count = stored or "sampled"
    if resumed and stored != count:
        study.set_user_attr("trials_count", count)
    return count


def _check_stored_study(spec: StudySpec, study: optuna.Study, label_storage: str) -> tuple[list, bool]:
    """Refuse a resume that changes objectives, budgets, space or latency settings; returns the
    budgets in their stored order and whether the study holds named constraints."""
    label, budgets = spec.label, dict(spec.constraints)
    stored = [f"{n} ({d.name.lower()})" for n, d in
              zip(study.metric_names or ["?"] * len(study.directions), study.directions)]
    wanted = [f"{n} ({d})" for n, d in zip(spec.objectives, spec.directions)]
    if stored != wanted:
        raise StudyMismatch(f"{label}: objectives {wanted} differ from those stored in "
                            f"{label_storage} ({stored}); restore them or use another --run-dir")
    attrs = study.user_attrs
    checks = [("constraints", attrs.get("constraints"), budgets),
              ("space", attrs.get("space"), jsonable(spec.space_dict))]
    for key, old, new in checks:
        if old is not None and jsonable(old) != jsonable(new):
            raise StudyMismatch(f"{label}: {key} differ from those the stored study was run with "
                                f"(stored: {preview(old)}); restore them or use another --run-dir")
    _check_latency_settings(spec, attrs)
    names = list(budgets)
    if isinstance(attrs.get("constraints"), dict):   # constraint values keep the stored order
        names = [n for n in attrs["constraints"] if n in budgets]
    named = any(_optuna.has_named_constraints(t) for t in study.get_trials(deepcopy=False))
    return names, named


def _check_latency_settings(spec: StudySpec, attrs: dict) -> None:
    """One study's latencies are measured one way: refuse a resume that changes the latency
    settings or the device."""
    if not spec.needs_latency:
        return    # latency was not measured (else the objectives or constraints differ)
    label, latency = spec.label, spec.latency
    stored = attrs.get("latency") if isinstance(attrs.get("latency"), dict) else {}
    # where latency is measured: `latency.device`, else the study's device
    stored_device = stored.get("device") or attrs.get("device")
    device = getattr(latency, "device", None) or spec.device
    if stored_device is not None and stored_device != device:
        raise StudyMismatch(f"{label}: device: {device!r} differs from {stored_device!r}, "
                            "which the stored study measured its latencies on; restore it or use "
                            "another --run-dir")
    if not stored:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defaults = _flatten(jsonable(type(latency).model_construct().model_dump()))
    old, new = _flatten(jsonable(stored)), _flatten(jsonable(latency.model_dump()))
    changed = [f"latency.{k}: stored {old.get(k, defaults.get(k))!r}, now {new.get(k, defaults.get(k))!r}"
               for k in sorted(set(old) | set(new)) if k.split(".")[0] not in LATENCY_NOT_COMPARED
               and old.get(k, defaults.get(k)) != new.get(k, defaults.get(k))]
    if changed:
        raise StudyMismatch(f"{label}: latency settings differ from those the stored study measured "
                            f"with ({'; '.join(changed)}); restore them or use another --run-dir")


def check_latency_device(spec: StudySpec, device: str | None, trials: list[FrozenTrial]) -> None:
    """This run's latencies must be measured on what the stored ones were (the device string:
    hardware, threads, torch), or one study would mix two machines' numbers under one label."""
    if not device or not spec.needs_latency:
        return
    seen = sorted({t.user_attrs.get("latency_device") for t in trials} - {None})
    if seen and device not in seen:
        raise StudyMismatch(f"{spec.label}: latency: this run measures on {device!r}, but the "
                            f"stored study's latencies were measured on {seen[0]!r}; resume it "
                            "there (same latency.threads / latency.cpus) or use another --run-dir")


def _build_evaluator(spec: StudySpec):
    """(evaluator or None, rung budgets): the rungs when successive halving is on and the
    evaluator has more than one, else `[None]` (one run at the evaluator's full budget)."""
    if spec.score_metric is None:
        return None, [None]
    e = spec.evaluator
    try:
        evaluator = make_evaluator(e.name, e.settings)
    except (ValueError, TypeError, ImportError, AttributeError) as err:
        raise SearchError(f"{spec.label}: evaluator: {err}") from None
    if evaluator.metric != spec.score_metric:
        raise SearchError(f"{spec.label}: evaluator {e.name!r} produces "
                          f"{evaluator.metric!r}, not the objective {spec.score_metric!r}")
    rungs = list(getattr(evaluator, "rungs", []) or [])
    return evaluator, rungs if spec.successive_halving.enabled and len(rungs) > 1 else [None]


def _keep_stored_settings(spec: StudySpec, stored, evaluator, rungs):
    """(spec, evaluator, rungs, kept): a resumed study scores as it began. A built-in evaluator's
    setting the study file leaves unset whose default now resolves otherwise than the stored
    study's value (a default changed since: `supernet`'s `val_images`) keeps the stored value
    (None where the stored study predates the setting); the spec returned carries it to the
    workers. Unchanged when nothing differs, or when the stored values no longer build (the
    comparison that follows then refuses the resume, naming them)."""
    e = spec.evaluator
    if evaluator is None or not isinstance(stored, dict) or stored.get("name") != e.name \
            or e.metric is None:
        return spec, evaluator, rungs, {}
    old, now = jsonable(stored), jsonable(evaluator.settings)
    kept = {k: old.get(k) for k in now
            if k not in e.settings and k not in SETTINGS_NOT_SCORED and old.get(k) != now[k]}
    if not kept:
        return spec, evaluator, rungs, {}
    resumed_spec = spec.with_evaluator_settings(kept)
    try:
        evaluator, rungs = _build_evaluator(resumed_spec)
    except SearchError:
        return spec, evaluator, rungs, {}
    return resumed_spec, evaluator, rungs, kept


# evaluator settings that change how inputs are loaded, never a score: a resume may change them
SETTINGS_NOT_SCORED = frozenset({"keep_data_mb"})


def _same_evaluator(stored, now) -> bool:
    """Whether a resumed study scores as the stored one did: the same settings except those that
    change no score; a setting a later version added counts as unset (None) in the stored ones."""
    if not isinstance(stored, dict) or not isinstance(now, dict):
        return jsonable(stored) == jsonable(now)
    old, new = jsonable(stored), jsonable(now)
    return all(old.get(k) == new.get(k) for k in (set(old) | set(new)) - SETTINGS_NOT_SCORED)


def _differences(stored, now) -> str:
    """`key: stored X, now Y` for each scored setting that differs (one line, shortened)."""
    if not isinstance(stored, dict) or not isinstance(now, dict):
        return f"stored: {preview(stored)}"
    old, new = jsonable(stored), jsonable(now)
    keys = sorted(k for k in (set(old) | set(new)) - SETTINGS_NOT_SCORED if old.get(k) != new.get(k))
    return "; ".join(f"{k}: stored {preview(old.get(k), 60)}, now {preview(new.get(k), 60)}" for k in keys)


def _store_study_attrs(spec: StudySpec, study: optuna.Study, resumed: bool, evaluator,
                       trials_count: str) -> None:
    attrs = study.user_attrs
    ev = None
    if evaluator is not None:
        settings = getattr(evaluator, "settings", None) or spec.evaluator.settings
        ev = {"name": spec.evaluator.name, **jsonable(settings)}
    if resumed and "evaluator" in attrs and not _same_evaluator(attrs["evaluator"], ev):
        raise StudyMismatch(f"{spec.label}: evaluator settings differ from those the stored "
                            f"study was run with ({_differences(attrs['evaluator'], ev)}); restore "
                            "them or use another --run-dir")
    if resumed and "objectives" in attrs:
        return
    size = space_size(spec.space)
    values = {
        "overlock_nas_version": _version(),
        "study_file": spec.text,
        "objectives": [{"name": n, "direction": DIRECTIONS[n]} for n in spec.objectives],
        "constraints": dict(spec.constraints),
        "space": jsonable(spec.space_dict),
        "space_size": size,
        "sampler": spec.sampler_name,
        "seed": spec.seed,
        "trials_count": trials_count,
        "device": spec.device,
        "evaluator": ev,
        "latency": spec.latency.model_dump() if spec.needs_latency else None,
        "started_at": _dt.datetime.now().isoformat(timespec="seconds"),
        "wall_time_s": 0.0,
    }
    for k, v in values.items():
        study.set_user_attr(k, v)


def make_sampler(spec: StudySpec, n_stored: int):
    """The study's sampler, seeded from (seed, number of stored trials): a restart never replays."""
    seed = derived_seed(spec.seed, n_stored)
    return sampler_class(spec.sampler_name)(seed=seed, **dict(spec.sampler.options))


def crashed(run_dir: Path, error: Exception) -> SearchError:
    """The one-line error for a search stopped by an unexpected `error` (e.g. the Ray cluster
    went away); its traceback goes to RUN_DIR/driver-error.log (`ERROR_LOG_NAME`)."""
    log = Path(run_dir) / ERROR_LOG_NAME
    log.write_text("".join(traceback.format_exception(error)))
    first = first_line(error, 200, empty="")
    return SearchError(f"the search stopped on an unexpected error ({type(error).__name__}: {first}); "
                       f"trials in flight were re-queued, details in {log}; run the same "
                       "command to continue")


def left_running(spec, driver_id: str, running: list[FrozenTrial]):
    """(trial, its seed) of each RUNNING trial a dead driver of this run directory left (another
    driver's trial in a shared RDB study is not ours)."""
    for ft in running:
        owner = ft.user_attrs.get("driver")
        if spec.storage and owner not in (None, driver_id):
            continue
        yield ft, int(ft.user_attrs.get("seed", derived_seed(spec.seed, ft.number, 7)))


def save_wall_time(study: optuna.Study, seconds: float, skipped: int | None) -> None:
    """Add `seconds` to the study's `wall_time_s` (and record `skipped_over_budget`)."""
    with contextlib.suppress(Exception):
        prev = float(study.user_attrs.get("wall_time_s", 0.0) or 0.0)
        study.set_user_attr("wall_time_s", round(prev + seconds, 2))
        if skipped is not None:
            study.set_user_attr("skipped_over_budget", skipped)


def _flatten(value, prefix: str = "") -> dict:
    """{"a.b": leaf} of nested dicts (a non-dict value is one leaf)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("overlock-nas")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0+unknown"
