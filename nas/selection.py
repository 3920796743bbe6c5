"""Which trials to export: `--trial N`, `--best`, `--top K`, `--knee`, each optionally `--under`
extra budgets. Torch-free (the report marks the same picks in its tables).

Candidates for `--best`, `--top` and `--knee` are the trials that may be on the feasible Pareto
front (`nas.storage.front_candidates`: COMPLETE, not a preset, full fidelity, feasible, every
objective recorded) that also meet the `--under` budgets; the report's front uses the same rule,
so the two never disagree on a trial (a trial missing a budgeted metric is infeasible in both).

- **best**: the best by one metric (default the study's first maximised objective, else its
  first); ties go to the other objectives in order, then the lower trial number.
- **top K**: the first K in that order.
- **knee**: the knee point of the candidates' Pareto front, by the maximum-distance method:
  objectives are put in minimisation form and normalised to [0, 1] over the front; the knee is
  the front point farthest from the line (two objectives) or hyperplane (more) through the front's
  extreme points, on the side of the ideal point. This is the "knee as the point of maximum
  distance from the extremes' line/hyperplane" of Das (1999, "On characterizing the 'knee' of the
  Pareto curve based on normal-boundary intersection", Structural Optimization 18) and Zhang, Tian
  & Jin (2015, "A knee point-driven evolutionary algorithm for many-objective optimization", IEEE
  TEVC 19(6)); the 2-D case is also Kneedle's rule (Satopaa et al., 2011). Ties go to the smaller
  sum of normalised objectives, then the lower trial number.

Every refusal is one line saying why (`ExportError`).

    >>> from nas.storage import open_study
    >>> from nas.selection import select_trial, top_trials
    >>> study, _ = open_study("runs/demo")
    >>> trial, why = select_trial(study, knee=True, under={"latency_ms": 5})
    >>> [t.number for t, _ in top_trials(study, 3)]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from nas import storage
from nas.storage import DIRECTIONS, format_amount

__all__ = ["ExportError", "parse_budgets", "select_trial", "top_trials", "knee_index", "picks",
           "rank", "KNEE_METHOD"]

KNEE_METHOD = ("maximum distance to the line/hyperplane through the front's extreme points, "
               "objectives normalised to [0, 1] over the front (Das 1999; Zhang et al. 2015)")


class ExportError(ValueError):
    """A selection or export that cannot be done; the message is one line."""


def parse_budgets(text: str | Mapping[str, Any] | None) -> dict[str, float]:
    """`"flops=2e9,latency_ms=5"` (or a mapping) -> {"flops": 2e9, "latency_ms": 5.0}.

    Amounts take k/M/G/T suffixes (`500M`). Only minimised metrics can have an upper budget.
    """
    from nas.study import parse_amount

    if not text:
        return {}
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for pair in (p.strip() for p in str(text).split(",") if p.strip()):
            if "=" not in pair:
                raise ExportError(f"--under {pair!r}: expected NAME=NUMBER, e.g. flops=2e9")
            name, _, amount = pair.partition("=")
            items.append((name.strip(), amount.strip()))
    out = {}
    for name, amount in items:
        if name not in DIRECTIONS:
            raise ExportError(f"--under {name}: unknown metric (known: {', '.join(DIRECTIONS)})")
        if DIRECTIONS[name] != "minimize":
            raise ExportError(f"--under {name}: {name} is maximised; budgets are upper bounds on "
                              f"minimised metrics ({', '.join(storage.CONSTRAINT_METRICS)})")
        try:
            out[name] = parse_amount(amount)
        except ValueError as e:
            raise ExportError(f"--under {name}={amount}: {e}") from None
    return out


# ------------------------------------------------------------------------------- candidates
def _state_counts(trials) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _candidates(study, under: Mapping[str, float] | None):
    """(candidates, notes): front candidates within `under`; ExportError when none, saying why."""
    trials = study.get_trials(deepcopy=False)
    objectives = storage.study_objectives(study)
    budgets = storage.study_budgets(study)
    name = study.study_name
    complete = [t for t in trials if t.state.name == "COMPLETE" and not storage.is_preset(t)]
    if not complete:
        counts = _state_counts(trials)
        raise ExportError(f"no COMPLETE trial in study {name!r}" + (f" ({counts})" if counts else " (no trials)"))
    full = [t for t in complete if storage.full_fidelity(t)]
    if not full:
        raise ExportError(f"no full-fidelity COMPLETE trial in study {name!r} "
                          f"({len(complete)} COMPLETE, all below fidelity 1)")
    reasons: dict[str, int] = {}
    for t in full:
        ok, why = storage.feasibility(t, budgets, objectives)
        if not ok:
            reasons[why] = reasons.get(why, 0) + 1
    candidates = storage.front_candidates(full, objectives, budgets)
    if not candidates:
        detail = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        raise ExportError(f"no feasible COMPLETE trial in study {name!r}: none of the {len(full)} "
                          f"full-fidelity COMPLETE trials meets the budgets ({detail or 'objectives unrecorded'})")
    notes = []
    for metric, budget in (under or {}).items():
        known = [(storage.metric_value(t, metric, objectives), t) for t in candidates]
        recorded = [(v, t) for v, t in known if v is not None]
        if not recorded:
            raise ExportError(f"--under {metric}: no feasible trial records {metric}")
        if len(recorded) < len(known):
            notes.append(f"{len(known) - len(recorded)} without {metric} left out")
        kept = [t for v, t in recorded if v <= budget]
        if not kept:
            v, t = min(recorded, key=lambda vt: vt[0])
            raise ExportError(f"no feasible trial under {metric}<={format_amount(budget)}: the "
                              f"smallest {metric} is {format_amount(v)} (trial {t.number}) of "
                              f"{len(candidates)} candidates")
        candidates = kept
    return candidates, objectives, notes


def _rank_metric(study, objectives, objective):
    if objective is None:
        maximised = [o.name for o in objectives if o.direction == "maximize"]
        name = maximised[0] if maximised else objectives[0].name
        return name, dict(objectives)[name]
    if objective in dict(objectives):
        return objective, dict(objectives)[objective]
    if objective in DIRECTIONS:
        return objective, DIRECTIONS[objective]
    raise ExportError(f"--objective {objective}: not an objective of study {study.study_name!r} "
                      f"({', '.join(o.name for o in objectives)}) nor a known metric "
                      f"({', '.join(DIRECTIONS)})")


def rank(candidates, objectives, rank_by: str, direction: str):
    """[(value, trial)] best first: by `rank_by`, then the other objectives, then trial number
    (the one rule for "best": `export --best/--top`, the report's picks, the search's progress
    and summary)."""
    scored = [(storage.metric_value(t, rank_by, objectives), t) for t in candidates]
    scored = [(v, t) for v, t in scored if v is not None]
    sign = -1.0 if direction == "maximize" else 1.0

    def key(item):
        value, t = item
        rest = []
        for other in objectives:
            if other.name != rank_by:
                v = storage.metric_value(t, other.name, objectives)
                rest.append(math.inf if v is None else other.sign * v)
        return (sign * value, *rest, t.number)

    return sorted(scored, key=key)


def _under_text(under) -> str:
    budgets = ", ".join(f"{m}<={format_amount(b)}" for m, b in (under or {}).items())
    return f" under {budgets}" if budgets else ""


# -------------------------------------------------------------------------------- selection
def select_trial(study, *, trial: int | None = None, objective: str | None = None,
                 under: Mapping[str, float] | None = None, knee: bool = False):
    """The trial to export and one line saying why it was chosen.

    Args:
        study: an Optuna study written by `overlock-nas search` (docs/reference/storage.md).
        trial: a trial number; it must exist and be COMPLETE. None: choose among the candidates.
        objective: the metric to rank by (default: the first maximised objective, else the first).
        under: extra upper budgets {metric: amount} a candidate must meet.
        knee: choose the knee of the candidates' Pareto front instead of the best.

    Raises:
        ExportError: one line: no such trial, not COMPLETE, or no candidate and why.
    """
    if trial is not None:
        return _asked(study, trial)
    if knee:
        return _knee(study, under)
    return top_trials(study, 1, objective=objective, under=under)[0]


def _asked(study, number: int):
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        span = f"trials 0..{max(t.number for t in trials)}" if trials else "no trials"
        raise ExportError(f"trial {number} does not exist in study {study.study_name!r} ({span})")
    t = found[0]
    if t.state.name != "COMPLETE":
        reason = t.user_attrs.get("reason")
        raise ExportError(f"trial {number} is {t.state.name}" + (f" ({reason})" if reason else "")
                          + "; only COMPLETE trials can be exported")
    ok, why = storage.feasibility(t, storage.study_budgets(study), storage.study_objectives(study))
    return t, f"trial {number} as asked" + ("" if ok else f" (infeasible: {why})")


def top_trials(study, k: int, *, objective: str | None = None,
               under: Mapping[str, float] | None = None) -> list[tuple[Any, str]]:
    """The `k` best candidates by `objective` (see the module docstring), each with why; fewer
    when fewer candidates record the metric."""
    if k < 1:
        raise ExportError(f"--top {k}: K must be at least 1")
    candidates, objectives, notes = _candidates(study, under)
    rank_by, direction = _rank_metric(study, objectives, objective)
    ranked = rank(candidates, objectives, rank_by, direction)
    if not ranked:
        raise ExportError(f"--objective {rank_by}: none of the {len(candidates)} candidates records it")
    tail = (f" among {len(ranked)} feasible COMPLETE trials" + _under_text(under)
            + (f" ({'; '.join(notes)})" if notes else ""))
    out = []
    for place, (value, t) in enumerate(ranked[:k], start=1):
        what = f"best {rank_by}" if place == 1 else f"#{place} by {rank_by}"
        out.append((t, f"{what} ({direction[:3]}) = {value:.6g}{tail}"))
    return out


def knee_index(points) -> int:
    """Index of the knee of a Pareto front `points` (n, k), all objectives minimised (module
    docstring: maximum distance to the extremes' line / hyperplane, normalised objectives)."""
    import numpy as np

    y = np.asarray(points, dtype=float).reshape(len(points), -1)
    if len(y) <= 1:
        return 0
    low, high = y.min(axis=0), y.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    z = (y - low) / span
    extremes = z[[int(np.lexsort((z.sum(axis=1), z[:, j]))[0]) for j in range(z.shape[1])]]
    try:
        normal = np.linalg.solve(extremes, np.ones(z.shape[1]))  # the hyperplane normal . x = 1
    except np.linalg.LinAlgError:
        normal = np.ones(z.shape[1])                             # degenerate: sum(x) = 1
    distance = (1.0 - z @ normal) / np.linalg.norm(normal)      # > 0 on the ideal point's side
    order = np.lexsort((z.sum(axis=1), -distance))
    return int(order[0])


def _knee(study, under):
    candidates, objectives, notes = _candidates(study, under)
    if len(objectives) < 2:
        raise ExportError(f"--knee needs two or more objectives; study {study.study_name!r} has one "
                          f"({objectives[0].name}): use --best")
    front = _front(candidates, objectives)
    index = knee_index([storage.minimised(t, objectives) for t in front])
    t = front[index]
    values = ", ".join(f"{o.name} {storage.format_value(o.name, storage.metric_value(t, o.name, objectives))}"
                       for o in objectives)
    return t, (f"knee of the feasible Pareto front ({len(front)} trials{_under_text(under)}; "
               f"{values}; by {KNEE_METHOD})" + (f" ({'; '.join(notes)})" if notes else ""))


def _front(candidates, objectives):
    return storage.non_dominated(candidates, objectives)


def picks(study, k: int = 5, objective: str | None = None) -> dict[str, Any]:
    """What `export --best/--top/--knee` would choose, for the report's tables:
    {"rank_by": metric, "top": [trial numbers, best first], "knee": number or None}; empty
    lists / None when there is no candidate."""
    out: dict[str, Any] = {"rank_by": None, "top": [], "knee": None}
    try:
        top = top_trials(study, k, objective=objective)
    except ExportError:
        return out
    out["rank_by"] = _rank_metric(study, storage.study_objectives(study), objective)[0]
    out["top"] = [t.number for t, _ in top]
    if len(storage.study_objectives(study)) >= 2:
        out["knee"] = _knee(study, None)[0].number
    return out
