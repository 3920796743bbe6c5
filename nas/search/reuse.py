"""Results earlier studies measured, reused by a new study: never pay twice for an architecture,
across studies (docs/how-to/reuse.md).

The store is the earlier studies themselves, read where they live: no second copy of a result
is written, so nothing can drift or be lost, and a study the user deletes takes its results with
it. Where to look (`find_sources`): by default the run directory's neighbours (every run
directory beside it, `runs/*/study.log`), or the other studies of the same RDB when the study
file names a `storage:` URL; `--reuse-from RUN_DIR|FOLDER|JOURNAL|URL` names others instead.

A stored result is the same measurement as the one a new study would make when every fact that
decides it is equal (`measurement`):

- the evaluator's name and every setting that changes a score, the data set among them (its
  `dataset` mapping: kind, path, seed, sizes), the fidelity (`epochs`) and the training
  recipe; the settings that change no score are left out (`NOT_RESULT_SETTINGS`: threads, where
  weights go, how inputs are cached, the rungs a full-budget result was reached through);
- the seed policy: trial seeds are derived from the study's `seed` and the trial number, so two
  studies with one `seed` draw their training noise the same way; another `seed` is another
  policy (a user repeating a study to see its seed-to-seed spread must not get the first run back);
- per trial: COMPLETE at full fidelity (`fidelity` 1), with a finite score, the result of a
  training (not itself a repeat within its study; a result reused across studies keeps pointing
  at the study that trained it).

A study whose facts differ is skipped as a whole, and the search says which fact differs
(`Store.skipped`): a result measured otherwise is never silently reused.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from optuna.trial import FrozenTrial, TrialState

from nas.storage import (JOURNAL_NAME, StorageError, jsonable, open_storage, redact, study_names)
from nas.util import preview

from .recorder import EVAL_RESULT_KEYS

# evaluator settings that change no score: a study that differs from an earlier one only there
# reuses its results (`keep_data_mb`: input caching; `threads`: CPU threads; `save_weights`:
# whether weights are kept; `rungs`: the budgets a trial passes on its way to the full one, where
# training straight to the full budget gives the same model, nas/evaluators/train.py)
NOT_RESULT_SETTINGS = frozenset({"keep_data_mb", "threads", "save_weights", "rungs"})
# what a reused trial takes from the trial that trained it (its own cost, latency and
# constraints are priced by the new study under its own budgets)
RESULT_ATTRS = EVAL_RESULT_KEYS + ("trained_num_classes", "trained_resolution", "eval_wall_s")
ATTR = "reused_from_study"      # trial attribute: {study, storage, trial} whose result it reuses


class ReuseError(ValueError):
    """A `--reuse-from` source that cannot be read; the message is one line naming it."""


@dataclass(frozen=True)
class Source:
    """One storage to read earlier studies from: a journal file or an RDB URL."""

    storage: str           # a journal file path or an RDB URL
    label: str             # what the user is shown (a URL redacted)


@dataclass(frozen=True)
class Result:
    """One stored result: the score, the evaluation's records, the params that drew it (in the
    earlier study's space) and where it came from."""

    config_hash: str
    score: float
    attrs: dict
    params: dict
    distributions: dict
    origin: dict           # {"study": name, "storage": label, "trial": number}


@dataclass
class Store:
    """The results of the earlier studies measured as this one measures (`measurement`), by
    config hash; `studies`: those read; `skipped`: {study label: the fact that differs}."""

    results: dict = field(default_factory=dict)
    studies: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    def get(self, config_hash: str) -> Result | None:
        return self.results.get(config_hash)

    def __len__(self) -> int:
        return len(self.results)

    def describe(self) -> str:
        """One line: what was found, and what was skipped and why."""
        line = (f"reuse: {len(self.results)} results from {len(self.studies)} earlier "
                f"stud{'y' if len(self.studies) == 1 else 'ies'} measured as this one")
        if self.skipped:
            first, why = next(iter(self.skipped.items()))
            more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
            line += f"; skipped {len(self.skipped)} measured otherwise: {first}: {why}{more}"
        return line


# ---------------------------------------------------------------------------------- identity
def measurement(evaluator, seed) -> dict | None:
    """The facts that make two results the same measurement (module docstring): the evaluator's
    name and scored settings (a study's stored `evaluator` attribute) and the seed policy. None
    when nothing is trained (no evaluator)."""
    if not isinstance(evaluator, dict) or not evaluator.get("name"):
        return None
    settings = {k: v for k, v in jsonable(evaluator).items() if k not in NOT_RESULT_SETTINGS}
    return {"evaluator": settings, "seed_policy": {"seed": seed, "trial_seed": "derived(seed, trial number)"}}


def differences(stored: dict | None, wanted: dict) -> list[str]:
    """`fact: stored X, now Y` for each fact that differs (a setting one side lacks is None)."""
    if stored is None:
        return ["evaluator: none (nothing was trained)"]
    out = []
    old, new = stored["evaluator"], wanted["evaluator"]
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            out.append(f"evaluator {k}: stored {preview(old.get(k), 50)}, now {preview(new.get(k), 50)}")
    if stored["seed_policy"] != wanted["seed_policy"]:
        out.append(f"seed: stored {stored['seed_policy']['seed']}, now {wanted['seed_policy']['seed']}")
    return out


# ------------------------------------------------------------------------------------ sources
def find_sources(run_dir: Path, storage_url: str | None, reuse_from: Iterable[str] | None) -> list[Source]:
    """Where to look for earlier results: `reuse_from` (`--reuse-from`, each a run directory, a
    folder of run directories, a journal file or an RDB URL), else the defaults (module docstring).

    Raises:
        ReuseError: a `reuse_from` entry that does not exist or is none of those (one line).
    """
    if reuse_from is None:
        if storage_url:
            return [Source(storage_url, redact(storage_url))]
        return neighbours(run_dir)
    out: list[Source] = []
    for item in reuse_from:
        out.extend(_named_source(str(item)))
    return out


def neighbours(run_dir: Path) -> list[Source]:
    """The run directories beside `run_dir` (its parent's `*/study.log`), itself left out."""
    run_dir = Path(run_dir).resolve()
    parent = run_dir.parent
    if not parent.is_dir():
        return []
    journals = sorted(p for p in parent.glob(f"*/{JOURNAL_NAME}") if p.parent.resolve() != run_dir)
    return [Source(str(p), str(p.parent)) for p in journals]


def _named_source(item: str) -> list[Source]:
    if "://" in item:
        return [Source(item, redact(item))]
    path = Path(item)
    if not path.exists():
        raise ReuseError(f"--reuse-from {item}: no such file or directory")
    if path.is_file():
        if not _looks_like_journal(path):
            raise ReuseError(f"--reuse-from {item}: not an Optuna journal file (a run directory's "
                             f"{JOURNAL_NAME}), a run directory, a folder of them or an RDB URL")
        return [Source(str(path), str(path))]
    if (path / JOURNAL_NAME).is_file():
        return [Source(str(path / JOURNAL_NAME), str(path))]
    below = sorted(path.glob(f"*/{JOURNAL_NAME}")) + sorted(path.glob(f"*/*/{JOURNAL_NAME}"))
    if not below:
        raise ReuseError(f"--reuse-from {item}: not a run directory (no {JOURNAL_NAME}), nor a folder "
                         "of run directories, a journal file or an RDB URL")
    return [Source(str(p), str(p.parent)) for p in below]


def _looks_like_journal(path: Path) -> bool:
    import json

    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
        record = json.loads(first) if first.strip() else {}
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and ("op_code" in record or not first.strip())


# --------------------------------------------------------------------------------- the store
def open_store(sources: list[Source], wanted: dict | None, score_metric: str | None,
               own: tuple[str, str] | None = None, strict: bool = False) -> Store:
    """The results in `sources` measured as `wanted` (`measurement`) for `score_metric`.

    Args:
        own: (storage, study name) of the study itself, never read as an earlier one.
        strict: a source that cannot be opened raises (named with `--reuse-from`); else it is
            skipped with its reason (a neighbour may be anything).

    Raises:
        ReuseError: with `strict`, a source that cannot be read (one line).
    """
    store = Store()
    if wanted is None or score_metric is None:
        return store
    for source in sources:
        try:
            studies = _studies(source)
        except (StorageError, ReuseError) as e:
            if strict:
                raise ReuseError(f"--reuse-from {source.label}: {e}") from None
            store.skipped[source.label] = f"not readable ({preview(str(e), 120)})"
            continue
        for study in studies:
            if own is not None and _same_storage(source.storage, own[0]) and study.study_name == own[1]:
                continue
            _add_study(store, source, study, wanted, score_metric)
    return store


def _studies(source: Source) -> list:
    import optuna

    opened, _, _, _ = open_storage(storage=source.storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [optuna.load_study(study_name=n, storage=opened) for n in study_names(opened)]


def _same_storage(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a == b
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _add_study(store: Store, source: Source, study, wanted: dict, score_metric: str) -> None:
    label = f"{study.study_name} ({source.label})"
    attrs = study.user_attrs
    stored = measurement(attrs.get("evaluator"), attrs.get("seed"))
    why = differences(stored, wanted)
    if why:
        store.skipped[label] = "; ".join(why)
        return
    metric = _score_index(study, score_metric)
    if metric is None:
        store.skipped[label] = f"its objectives do not include {score_metric}"
        return
    store.studies.append(label)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        result = _result(t, metric, study.study_name, source.label)
        if result is not None:
            store.results.setdefault(result.config_hash, result)


def _score_index(study, score_metric: str) -> int | None:
    names = [o.get("name") for o in (study.user_attrs.get("objectives") or []) if isinstance(o, dict)]
    names = names or list(study.metric_names or [])
    return names.index(score_metric) if score_metric in names else None


def _result(t: FrozenTrial, metric: int, study_name: str, label: str) -> Result | None:
    """The trial's result when it is a full-fidelity training's (module docstring), else None."""
    ua = t.user_attrs
    chash, fidelity = ua.get("config_hash"), ua.get("fidelity", 1.0)
    if not chash or ua.get("reused_from") is not None or ua.get("preset") or not t.params:
        return None
    if not isinstance(fidelity, (int, float)) or float(fidelity) != 1.0:
        return None
    score = t.values[metric] if t.values and len(t.values) > metric else None
    if score is None or not math.isfinite(float(score)):
        return None
    origin = ua.get(ATTR) if isinstance(ua.get(ATTR), dict) else \
        {"study": study_name, "storage": label, "trial": t.number}
    kept = {k: ua[k] for k in RESULT_ATTRS if k in ua}
    return Result(chash, float(score), kept, dict(t.params), dict(t.distributions), dict(origin))


# ---------------------------------------------------------------------------------- warm start
def warm_start(store: Store, space, pricer, seen: set[str]) -> list[tuple[dict, dict, str]]:
    """(params, distributions, config hash) in this study's space of every stored result it does
    not hold yet (`seen`) whose config the space can draw and that is within the budgets
    (`pricer.judge`, exact costs and a latency model's screen): the study's first trials, each a
    reused result, so the sampler's model and the front start from them."""
    from .frontier import DecisionTrial
    import random

    import space as space_pkg

    out = []
    rng = random.Random(0)
    for chash, result in store.results.items():
        if chash in seen:
            continue
        draw = DecisionTrial(rng, result.params)
        try:
            config = space.suggest(draw)
        except (space_pkg.SpaceError, ValueError):
            continue
        if config.config_hash() != chash:     # not in this space (or drawn otherwise in it)
            continue
        reason, _, _ = pricer.judge(config)
        if reason is None:
            out.append((draw.params, draw.distributions, chash))
    return out
