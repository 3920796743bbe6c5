"""The stored-study contract (docs/reference/storage.md): one owner for what a study stores and how it is read.

- **Metrics**: names, directions, units and labels (`METRICS`, `DIRECTIONS`, `format_value`,
  `macs_label`). `nas.study` validates study files against these names; the engine, the search
  CLI, export and the reports read them from here.
- **Opening** a stored study: a run directory (`RUN_DIR/study.log`), a journal file or an Optuna
  RDB URL (`open_storage`, `open_study`); a corrupt or truncated journal is refused in one line
  (`check_journal`). The one driver of a run directory opens it for writing under its lock
  (`open_for_driver`, `take_driver_lock`; `nas.search.session`).
- **Attribute keys** of a study and of a trial, named once (`STUDY_ATTRS`, `TRIAL_ATTRS`).
- **Reading** a study: its objectives (`study_objectives`), a trial's metric values
  (`metric_value`), whether a trial is feasible (`feasibility`), at full fidelity
  (`full_fidelity`), a candidate for the front (`front_candidates`) and on the feasible Pareto
  front (`pareto_front`). Reports and `export --best/--knee/--top` share these, so they agree.

Torch-free on purpose (optuna is imported lazily; a test imports this module in a fresh
interpreter and checks that torch was not loaded): reports and the report server stay light.

    >>> from nas import storage
    >>> study, label = storage.open_study("runs/quickstart")
    >>> objectives = storage.study_objectives(study)          # [Objective("accuracy", "maximize"), ...]
    >>> front = storage.pareto_front(study)                  # feasible, full-fidelity, non-dominated
    >>> storage.format_value("flops", 4.2e9)
    '4.2 GMACs'
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from nas.util import first_line, one_line  # noqa: F401  (one_line: importable from here as before)
from space.budgets import EXACT_METRICS, broken as _broken, trial_violations

# ------------------------------------------------------------------------------- run directory
JOURNAL_NAME = "study.log"          # the Optuna journal (default storage)
LOCK_NAME = "driver.lock"           # the one driver's fcntl lock
STUDY_FILE_COPY = "study.yaml"      # the study file as run
WEIGHTS_DIR = "weights"             # trained weights of trials
LATENCY_RECORD_NAME = "latency_cache.json"   # the latencies this study used
ERROR_LOG_NAME = "driver-error.log"          # the traceback of an unexpected driver error
RUN_MARKER_NAME = ".overlock-nas-run"        # nas.rundir: this tool made (or claimed) the folder
# any of these in a directory marks it as holding a study: export never replaces it
RUN_DIR_MARKERS = (JOURNAL_NAME, LOCK_NAME, STUDY_FILE_COPY, WEIGHTS_DIR, LATENCY_RECORD_NAME,
                   ERROR_LOG_NAME, RUN_MARKER_NAME)


class StorageError(ValueError):
    """A storage or study that cannot be opened; the message is one line."""


# ----------------------------------------------------------------------- attribute keys
# Every attribute key a study or trial holds, named once (docs/reference/storage.md says what each means;
# tests/nas/search/test_contract.py holds the two equal and checks what a run really writes).
# The one writer of trial attributes (`nas.search.recorder`) refuses a key not named here.
STUDY_ATTRS: dict[str, str] = {
    "overlock_nas_version": "the package version that began the study",
    "study_file": "the study file's text",
    "objectives": "[{name, direction}]",
    "constraints": "{metric: budget}",
    "space": "the space dict",
    "space_size": "number of architectures, or null",
    "sampler": "sampler name",
    "seed": "the study seed",
    "trials_count": "what the trial budget counts: trained or sampled",
    "device": "the study's device",
    "evaluator": "the evaluator's settings, with its name",
    "latency": "the latency measurement settings",
    "started_at": "ISO time the study began",
    "wall_time_s": "driver wall time, summed over runs",
    "skipped_over_budget": "draws recorded over a budget before training",
}
TRIAL_ATTRS: dict[str, str] = {
    # identity (written when a config is sampled; copied to nothing else)
    "driver": "host:run_dir of the driver that asked the trial",
    "config": "OverLoCKConfig.to_dict()",
    "config_hash": "the architecture's identity",
    "summary": "the config in one line",
    "resolution": "[H, W]",
    "seed": "the trial's evaluation seed",
    "evaluator": "evaluator name",
    # analytic cost
    "flops": "MACs, fvcore convention", "flops_paper": "MACs, paper convention",
    "params": "deploy-model parameters", "memory_mb": "peak activation memory",
    "flops_fvcore": "fvcore's count on cross-check trials",
    # latency (every latency_* key a measurement returns is recorded as is; these are named)
    "latency_ms": "latency: median of round minima", "latency_p90_ms": "90th percentile",
    "latency_spread_ms": "interquartile range", "latency_min_ms": "fastest forward",
    "latency_uncertainty_pct": "95 % uncertainty, +-%", "latency_round_minima_ms": "each round's fastest",
    "latency_raw_ms": "median of round minima as timed (CPU)",
    "latency_yardstick_ms": "the yardstick's round minima, median (CPU)",
    "latency_yardstick_nominal_ms": "the yardstick's nominal ms on the device (CPU)",
    "latency_speed": "nominal / the yardstick now (CPU)",
    "latency_device": "the device string", "latency_batch": "batch", "latency_dtype": "dtype",
    "latency_channels_last": "memory format", "latency_repeats": "timed forwards",
    "latency_resolution": "input size measured", "latency_clock": "clock used",
    "latency_rounds": "rounds", "latency_protocol": "protocol in words",
    "latency_protocol_version": "protocol version (nas.latency.protocol)",
    "latency_wall_ms": "wall-clock median", "latency_cores": "cores pinned",
    "latency_remeasured": "rounds taken again", "latency_sets": "sets of rounds pooled",
    "latency_first_uncertainty_pct": "uncertainty before retaking",
    "latency_first_spread_ms": "spread before retaking (protocol 1)",
    "latency_stages_ms": "{stage: ms}", "latency_wall_s": "how long measuring took",
    "latency_source": "measured, store or predicted",
    "latency_predicted_ms": "model prediction", "latency_predicted_low_ms": "prediction less margin",
    "latency_model_margin": "model's stated margin", "latency_model_n": "measurements behind it",
    "latency_first_ms": "a first reading measured again", "latency_recheck": "why it was",
    # evaluation
    "score": "the evaluator's metric", "epochs": "epochs trained", "history": "per-epoch accuracy",
    "fidelity": "fraction of the full budget", "train_loss": "per-epoch training loss",
    "val_loss": "per-epoch validation loss", "data_skipped": "unreadable images left out",
    "data_skipped_first": "[path, reason]", "dataset": "what the score was measured on",
    "trained_num_classes": "head fitted to the data set", "trained_resolution": "input size trained",
    "eval_wall_s": "evaluation time", "weights": "path relative to RUN_DIR",
    "rung_scores": "{rung: score}", "rung_val_loss": "{rung: validation loss}",
    "gate_score": "proxy_gate score",
    # endings
    "infeasible": "a budget broken before training", "estimated": "{budget: screen estimate}",
    "reason": "why PRUNED or FAIL", "error": "FAIL traceback tail",
    "reused_from": "trial whose result was reused", "superseded": "interrupted, re-queued",
    "reused_from_study": "{study, storage, trial}: the earlier study's trial whose result was reused",
    "requeued_from": "the interrupted trial this one re-runs",
    "continued_from": "trial whose rungs this one continued",
    # written by the proposer's sampler when the trial is asked (nas.search.proposals)
    "rejected_draws": "{reason: draws rejected before this trial}",
    # readers only (never written by the engine)
    "preset": "an official preset evaluated beside the search",
}
LATENCY_PREFIX = "latency_"     # a measurement's own keys, recorded as they come


# ------------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class Metric:
    """One metric of docs/reference/storage.md ("Metric names")."""

    name: str
    direction: str   # "maximize" | "minimize"
    kind: str        # "score" (an evaluator's), "cost" (analytic, before training), "measured"
    label: str       # what it is, in words (axis label without input size / settings)
    short: str       # compact column header
    unit: str        # unit of the displayed value
    scale: float     # displayed value = stored value * scale
    fmt: str         # python format spec of the displayed value


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "maximize", "score", "top-1 accuracy (%, proxy training)", "acc %", "%", 100.0, ".2f"),
    Metric("synflow", "maximize", "score", "synflow (zero-cost proxy score)", "synflow", "", 1.0, ".4g"),
    Metric("naswot", "maximize", "score", "naswot (zero-cost proxy score)", "naswot", "", 1.0, ".4g"),
    Metric("zico", "maximize", "score", "zico (zero-cost proxy score)", "zico", "", 1.0, ".4g"),
    Metric("flops", "minimize", "cost", "GMACs (fvcore; the paper's FLOPs)", "GMACs", "GMACs", 1e-9, ".4g"),
    Metric("flops_paper", "minimize", "cost", "GMACs (paper convention)", "GMACs (paper)", "GMACs", 1e-9, ".4g"),
    Metric("params", "minimize", "cost", "params (M; deploy model, no aux head)", "params M", "M", 1e-6, ".4g"),
    Metric("latency_ms", "minimize", "measured", "latency (ms, median of round minima)", "latency ms", "ms", 1.0, ".2f"),
    Metric("memory_mb", "minimize", "cost", "peak activation memory (MiB, batch 1)", "memory MiB", "MiB", 1.0, ".4g"),
)}
DIRECTIONS: dict[str, str] = {n: m.direction for n, m in METRICS.items()}
SCORE_METRICS = tuple(n for n, m in METRICS.items() if m.kind == "score")       # produced by an evaluator
COST_METRICS = EXACT_METRICS                                                    # analytic, before training
MEASURED_METRICS = tuple(n for n, m in METRICS.items() if m.kind == "measured")  # measured before training
CONSTRAINT_METRICS = COST_METRICS + MEASURED_METRICS                            # can carry a budget


def direction(name: str) -> str:
    """"maximize" for a score metric, "minimize" for a cost; KeyError for an unknown name."""
    return DIRECTIONS[name]


def format_value(name: str, value: float) -> str:
    """A stored metric value for humans, with its unit: `4.2 GMACs`, `3.1 M`, `2.00 ms`, `0.812`."""
    if name in ("flops", "flops_paper"):
        return f"{value / 1e9:.4g} GMACs"
    if name == "params":
        return f"{value / 1e6:.4g} M"
    if name == "latency_ms":
        return f"{value:.2f} ms"
    if name == "memory_mb":
        return f"{value:.1f} MiB"
    if name == "accuracy":
        return f"{value:.3f}"
    return f"{value:.4g}"


def format_amount(value: float) -> str:
    """A budget amount as a study file writes it: 2e9 -> `2G`, 1.5e6 -> `1.5M`."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def macs_label(resolution, batch: int = 1, convention: str = "fvcore") -> str:
    """The label of every compute figure, with input size and batch (worded as `space.macs_label`;
    a test holds the two equal - importing `space` here would import torch)."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    what = "fvcore; the paper's FLOPs" if convention == "fvcore" else "paper convention"
    return f"GMACs ({what}), {batch}x3x{h}x{w}"


_DATASET_NAMING = ("path", "classes", "num_classes", "train_size", "val_size")


def dataset_text(value: Any) -> str | None:
    """A trial's / evaluator's `dataset` description in one line (a string, or a settings dict)."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, Mapping):
        if isinstance(value.get("description"), str):
            return value["description"]
        kind = value.get("kind", "?")   # a settings dict: what names the data, not how it is loaded
        rest = ", ".join(f"{k} {value[k]}" for k in _DATASET_NAMING if value.get(k) not in (None, ""))
        return f"{kind} ({rest})" if rest else str(kind)
    return " ".join(str(value).split())


# ------------------------------------------------------------------------------------ opening
def check_journal(path, *, driver_lock=None) -> int:
    """Refuse a corrupt or truncated journal in one line; returns the number of records.

    Every line must be a JSON object (an Optuna journal operation). A last line without its
    newline is an append in progress while a driver holds `driver_lock` (then it is skipped, as
    Optuna does), otherwise a truncated file: Optuna would silently drop it on reading and a
    resumed search would append to the broken line.

    Raises:
        StorageError: naming the file, the line and what is wrong (with the repair for truncation).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StorageError(f"{path}: cannot read the journal ({type(e).__name__}: {e.strerror or e})") from None
    records, start = 0, 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        end = start + len(line)
        last = end == len(data)
        if last and line.strip() and not _driver_live(driver_lock):
            raise StorageError(f"{path} is truncated: its last record (line {number}, from byte {start}) "
                               f"is cut off; the {records} records before it are intact: keep them "
                               f"with `truncate -s {start} {path}` (the cut record is lost)")
        if line.strip() and not last:
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise StorageError(f"{path} is corrupt: line {number} (byte {start}) is not a journal "
                                   f"record ({type(e).__name__}: {first_line(e)})") from None
            if not isinstance(record, dict) or "op_code" not in record:
                raise StorageError(f"{path} is corrupt: line {number} (byte {start}) is not an Optuna "
                                   "journal operation (no op_code)")
            records += 1
        start = end + 1
    return records


def _driver_live(lock_path) -> bool:
    """True when another process holds the driver lock (an `overlock-nas search` is writing)."""
    if lock_path is None or not Path(lock_path).is_file():
        return False
    import fcntl

    with open(lock_path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


# ------------------------------------------------------------------------------ driver lock
class LockHeld(Exception):
    """Another process holds RUN_DIR/driver.lock; `holder` is what it wrote there."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def take_driver_lock(run_dir):
    """Take the exclusive fcntl lock on RUN_DIR/driver.lock (released when the process ends, even
    by SIGKILL) and write who holds it; returns the open file to hand to `release_driver_lock`.
    Never blocks: raises `LockHeld` when another driver has it (`_driver_live` is its reader)."""
    import datetime as _dt
    import fcntl
    import socket

    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise LockHeld(holder) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
             f"{_dt.datetime.now().isoformat(timespec='seconds')}\n")
    fh.flush()
    return fh


def release_driver_lock(fh) -> None:
    import fcntl

    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


def open_storage(run_dir=None, storage=None):
    """(optuna storage, label, run_dir or None, url or None); StorageError on anything unreadable."""
    import optuna

    if storage is None:
        if run_dir is None:
            raise StorageError("give a RUN_DIR or --storage URL")
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise StorageError(f"{run_dir}: no such run directory")
        journal = run_dir / JOURNAL_NAME
        if not journal.is_file():
            below = sorted(run_dir.glob(f"*/{JOURNAL_NAME}")) + sorted(run_dir.glob(f"*/*/{JOURNAL_NAME}"))
            if below:
                raise StorageError(f"{run_dir} is a folder of {len(below)} run directories, not one: pass one "
                                   f"(e.g. {below[0].parent}) or browse them all with --serve")
            raise StorageError(f"{run_dir}: no {JOURNAL_NAME} here (not a run directory, or the study "
                               f"lives in another storage: use --storage URL --study NAME)")
        storage = str(journal)
    storage = str(storage)
    if "://" not in storage and Path(storage).is_dir():  # a run directory given as --storage
        return open_storage(run_dir=storage)
    try:
        if "://" not in storage:  # a journal file path
            path = Path(storage)
            if not path.is_file():
                raise StorageError(f"{storage}: no such journal file")
            check_journal(path, driver_lock=path.parent / LOCK_NAME)
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            opened = JournalStorage(JournalFileBackend(str(path)))
            return opened, str(path), Path(run_dir) if run_dir else path.parent, None
        if storage.startswith("sqlite:///"):
            path = Path(storage[len("sqlite:///"):])
            if not path.is_file():
                raise StorageError(f"{storage}: no such SQLite file")
        opened = optuna.storages.RDBStorage(storage, skip_table_creation=True)
        return opened, redact(storage), Path(run_dir) if run_dir else None, storage
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001  (driver, auth, corrupt file: one line to the user)
        raise StorageError(f"cannot open storage {redact(storage)}: {one_line(exc)}") from None


def open_for_driver(run_dir, url: str | None, label: str, *, buffered: bool = False):
    """The storage the one driver of `run_dir` writes to (called under its lock): the run
    directory's journal, checked first (nobody else appends, so an unterminated last record is a
    truncation, and appending after it would bury it mid-file), or the study file's RDB URL.
    StorageError (one line; `label` names the study file) when it cannot be opened."""
    import optuna

    if not url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        journal = Path(run_dir) / JOURNAL_NAME
        if journal.is_file():
            check_journal(journal)
        if buffered:       # the driver: one append and fsync per step, not per record
            from nas.search.journal import buffered_storage

            return buffered_storage(str(journal))
        return JournalStorage(JournalFileBackend(str(journal)))
    try:
        if url.startswith("sqlite"):
            # sqlite's default 5 s lock timeout fails commits while a reader holds the file
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001
        first = first_line(e)
        raise StorageError(f"{label}: storage: cannot open {url!r}: {first}") from None


def redact(url: str) -> str:
    """Hide a password in a database URL."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def jsonable(value):
    """`value` as it reads back from JSON storage (tuples become lists, unknown objects strings):
    what an attribute holds once stored, so stored and new values compare equal."""
    return json.loads(json.dumps(value, default=str))


def study_names(storage) -> list[str]:
    import optuna

    try:
        return list(optuna.get_all_study_names(storage))
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot list studies: {one_line(exc)}") from None


def resolve_study_name(storage, label: str, study_name: str | None) -> str:
    names = study_names(storage)
    if study_name is not None:
        if study_name not in names:
            known = ", ".join(names) if names else "none"
            raise StorageError(f"no study named {study_name!r} in {label} (studies there: {known})")
        return study_name
    if not names:
        raise StorageError(f"{label}: no study stored yet")
    if len(names) > 1:
        raise StorageError(f"{label} holds {len(names)} studies: pass --study NAME (one of: "
                           f"{', '.join(names)})")
    return names[0]


def open_study(run_dir=None, storage=None, study_name=None):
    """(study, label) for reading: `RUN_DIR/study.log`, a journal file or an RDB URL."""
    study, label, _, _ = open_study_at(run_dir, storage, study_name)
    return study, label


def open_study_at(run_dir=None, storage=None, study_name=None):
    """(study, label, run_dir or None, url or None): `open_study` and where the study lives."""
    import optuna

    opened, label, run_dir, url = open_storage(run_dir, storage)
    name = resolve_study_name(opened, label, study_name)
    try:
        return optuna.load_study(study_name=name, storage=opened), label, run_dir, url
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot read study {name!r} from {label}: {one_line(exc)}") from None


def holds_study(path) -> str | None:
    """The marker (study.log, driver.lock, weights/, ...) that makes `path` a run directory, or a
    run directory found one or two levels below it; None when there is none."""
    path = Path(path)
    for name in RUN_DIR_MARKERS:
        if (path / name).exists():
            return str(path / name)
    for pattern in (f"*/{JOURNAL_NAME}", f"*/*/{JOURNAL_NAME}"):
        found = next(iter(path.glob(pattern)), None)
        if found is not None:
            return str(found)
    return None


# ---------------------------------------------------------------------------------- reading
class Objective(NamedTuple):
    """One objective of a study: `name, direction = objective` also works."""

    name: str
    direction: str   # "maximize" | "minimize"

    @property
    def sign(self) -> float:
        """Multiply a value by this to get minimisation form."""
        return -1.0 if self.direction == "maximize" else 1.0


def study_objectives(study) -> list[Objective]:
    """The study's objectives in order: names from `user_attrs["objectives"]` (else Optuna's metric
    names, else `objective_0`, ... or `objective`), directions from Optuna's own record of the study."""
    directions = [d.name.lower() for d in study.directions]
    stored = study.user_attrs.get("objectives")
    if isinstance(stored, list) and len(stored) == len(directions):
        names = [o.get("name") if isinstance(o, dict) else o for o in stored]
    else:
        names = study.metric_names or ([f"objective_{i}" for i in range(len(directions))]
                                       if len(directions) > 1 else ["objective"])
    return [Objective(str(n), d) for n, d in zip(names, directions)]


def study_budgets(study) -> dict[str, float]:
    """{metric: budget} of `user_attrs["constraints"]` (feasible iff metric <= budget)."""
    budgets = study.user_attrs.get("constraints") or {}
    if not isinstance(budgets, Mapping):
        return {}
    return {str(k): float(v) for k, v in budgets.items() if _finite(v) is not None}


def _finite(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def metric_value(trial, name: str, objectives: Sequence[Objective]) -> float | None:
    """A trial's value of `name`: its told objective value (COMPLETE trials), else the user attr
    of that name; None when missing, not a number or not finite."""
    names = [o[0] for o in objectives]
    if name in names and trial.values is not None:
        return _finite(trial.values[names.index(name)])
    return _finite(trial.user_attrs.get(name))


def full_fidelity(trial) -> bool:
    """Trained with the full budget: `fidelity` absent or >= 1 (docs/reference/storage.md)."""
    fidelity = _finite(trial.user_attrs.get("fidelity"))
    return fidelity is None or fidelity >= 1.0 - 1e-9


def is_preset(trial) -> bool:
    """An official preset evaluated beside the search: a reference, never on the front."""
    preset = trial.user_attrs.get("preset")
    return isinstance(preset, str) and bool(preset)


# {metric: value - budget} of a stored trial: named constraints, else the list in budget order
named_constraints = trial_violations


def feasibility(trial, budgets: Mapping[str, float], objectives: Sequence[Objective] = ()) -> tuple[bool, str]:
    """(feasible, why not) of a trial under the study's `budgets`.

    Feasible iff not marked `infeasible`, no stored constraint is > 0, and every budget without a
    stored constraint has a recorded metric value within it. A budget the trial records nothing
    for makes it infeasible ("has no latency_ms to check against its budget"): a trial is never
    feasible by omission.
    """
    constraints = trial_violations(trial, budgets)
    over = _broken(constraints)
    if over:
        return False, f"breaks {', '.join(over)}"
    if trial.user_attrs.get("infeasible"):
        return False, "marked infeasible"
    for name, budget in budgets.items():
        if name in constraints:
            continue
        value = metric_value(trial, name, objectives)
        if value is None:
            return False, f"has no {name} to check against its budget"
        if value > float(budget):
            return False, f"breaks {name}"
    return True, ""


def is_feasible(trial, budgets: Mapping[str, float], objectives: Sequence[Objective] = ()) -> bool:
    return feasibility(trial, budgets, objectives)[0]


def front_candidates(trials: Iterable, objectives: Sequence[Objective], budgets: Mapping[str, float]):
    """The trials that may be on the feasible Pareto front: COMPLETE, not a preset, at full
    fidelity, feasible, and recording every objective."""
    out = []
    for t in trials:
        if t.state.name != "COMPLETE" or is_preset(t) or not full_fidelity(t):
            continue
        if not is_feasible(t, budgets, objectives):
            continue
        if any(metric_value(t, o.name, objectives) is None for o in objectives):
            continue
        out.append(t)
    return out


def minimised(trial, objectives: Sequence[Objective]) -> list[float]:
    """A trial's objective values in minimisation form (maximised ones negated)."""
    return [o.sign * metric_value(trial, o.name, objectives) for o in objectives]


def pareto_mask(points):
    """Boolean mask (numpy) of the non-dominated rows of `points` (n, k), all objectives minimised.

    Equal points are all kept. O(n x front) after a lexicographic sort: a point can only be
    dominated by one that sorts before it.
    """
    import numpy as np

    y = np.asarray(points, dtype=float)
    mask = np.zeros(len(y), dtype=bool)
    if len(y) == 0:
        return mask
    y = y.reshape(len(y), -1)
    front = np.empty((0, y.shape[1]))
    for i in np.lexsort(y.T[::-1]):
        p = y[i]
        if len(front) and np.any(np.all(front <= p, axis=1) & np.any(front < p, axis=1)):
            continue
        mask[i] = True
        front = np.vstack([front, p])
    return mask


def pareto_front(study=None, *, trials=None, objectives=None, budgets=None) -> list:
    """The feasible Pareto front (of `front_candidates`), in trial-number order. Pass a study, or
    its `trials`, `objectives` and `budgets`."""
    if study is not None:
        trials = study.get_trials(deepcopy=False) if trials is None else trials
        objectives = study_objectives(study) if objectives is None else objectives
        budgets = study_budgets(study) if budgets is None else budgets
    return non_dominated(front_candidates(trials, objectives, budgets or {}), objectives)


def non_dominated(candidates, objectives: Sequence[Objective]) -> list:
    """The non-dominated trials of `candidates` (each recording every objective), by number."""
    mask = pareto_mask([minimised(t, objectives) for t in candidates])
    return sorted((t for t, keep in zip(candidates, mask) if keep), key=lambda t: t.number)


def env_debug() -> bool:
    """`OVERLOCK_NAS_DEBUG=1`: show tracebacks instead of one-line errors."""
    return os.environ.get("OVERLOCK_NAS_DEBUG", "") not in ("", "0", "false", "no")
