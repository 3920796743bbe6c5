"""Budgets: which metrics are known exactly before training, and what a config or a trial breaks.

A study's budgets are `{metric: amount}` (its study file's `constraints`); a value is within its
budget when it is <= the amount. A budget's *violation* is `value - amount`, Optuna's constraint
convention: feasible iff every violation is <= 0.

The exact cost metrics are what the analytic cost model (`space.complexity(config).as_metrics()`)
gives for a config before anything is built or trained: a budget on one of them is checked
exactly and for free. Any other budget (`latency_ms`) is known once measured or predicted.

The one place these rules are written: the proposer's `Pricer` and the frontier strategy (draws
over an exact budget never become trials), the driver's recorder (the constraint values it
stores), `nas.storage` (a stored trial's feasibility) and `space.feasibility` (a space's feasible
fraction). Imports nothing: `nas.storage` and the search driver read it without torch.

    >>> violations({"flops": 3e9, "params": 2e6}, {"flops": 2e9, "latency_ms": 5.0})
    {'flops': 1000000000.0}
    >>> broken({"flops": 1e9, "params": -5.0})
    ['flops']
"""

from __future__ import annotations

from typing import Mapping

# the metrics `space.Cost.as_metrics()` gives, known exactly before training (docs/storage.md)
EXACT_METRICS = ("flops", "flops_paper", "params", "memory_mb")


def exact_budgets(budgets: Mapping[str, float] | None) -> dict[str, float]:
    """The budgets on exact cost metrics (flops, params, memory; not latency), as floats."""
    return {k: float(v) for k, v in (budgets or {}).items() if k in EXACT_METRICS}


def violations(metrics: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """{budget: value - amount} of the budgets whose metric `metrics` holds, in budget order."""
    return {n: metrics[n] - b for n, b in budgets.items() if n in metrics}


def config_violations(config, budgets: Mapping[str, float], batch: int = 1) -> dict[str, float]:
    """{metric: value - amount} of `config` for each exact budget (the analytic cost model)."""
    from .cost import complexity

    return violations(complexity(config, batch=batch).as_metrics(), exact_budgets(budgets))


def broken(found: Mapping[str, float]) -> list[str]:
    """The budgets a `violations` result breaks (violation > 0), in its order."""
    return [n for n, v in found.items() if v > 0]


def within(found: Mapping[str, float]) -> bool:
    """Every violation of `found` is <= 0 (an empty one is within)."""
    return all(v <= 0 for v in found.values())


def trial_violations(trial, budgets: Mapping[str, float]) -> dict[str, float]:
    """{metric: value - amount} a stored Optuna trial holds (its public `constraints`).

    Named constraints (`Trial.set_constraint`, studies begun by earlier versions) when present;
    else the list `system_attrs["constraints"]` (Optuna reads it as constraints '0', '1', ...), in
    the order of the study's `budgets`; a list of another length keeps Optuna's keys.
    """
    stored = trial.constraints
    named = {k: float(v) for k, v in stored.items() if not str(k).isdigit()}
    if named:
        return named
    listed = [float(v) for k, v in sorted(stored.items(), key=lambda kv: int(kv[0]))]
    return dict(zip(budgets, listed)) if len(listed) == len(budgets) else \
        {str(k): float(v) for k, v in stored.items()}
