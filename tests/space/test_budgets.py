"""One budgets module (space.budgets): which metrics are exact, and what a config or a stored
trial breaks; the pricer, the recorder, storage, space.feasibility and frontier all read it."""

import subprocess
import sys

import optuna

import space
from space import budgets
from nas_testing import REPO

SPACE = space.load_space(REPO / "studies/spaces/quickstart.yaml")


def test_the_exact_metrics_are_what_the_cost_model_gives():
    config = SPACE.sample(seed=0)
    assert tuple(space.complexity(config).as_metrics()) == budgets.EXACT_METRICS


def test_a_configs_violations_are_its_exact_budgets_only():
    config = SPACE.sample(seed=0)
    metrics = space.complexity(config).as_metrics()
    limits = {"latency_ms": 1.0, "params": metrics["params"] + 1, "flops": metrics["flops"] - 1}
    found = budgets.config_violations(config, limits)
    assert found == {"params": -1.0, "flops": 1.0}            # in budget order, no latency
    assert budgets.broken(found) == ["flops"] and not budgets.within(found)
    assert space.violations(config, limits) == found and not space.is_feasible(config, limits)
    assert budgets.within({}) and budgets.exact_budgets(None) == {}


def _stored(constraints: dict | None = None, listed: list | None = None):
    study = optuna.create_study()
    trial = study.ask()
    if listed is not None:
        from nas import _optuna

        _optuna.write_constraints(study, trial, listed)
    for name, value in (constraints or {}).items():
        trial.set_constraint(name, value)
    study.tell(trial, 1.0)
    return study.trials[0]


def test_a_stored_trials_violations_in_either_format():
    listed = _stored(listed=[-1.0, 2.0])
    assert budgets.trial_violations(listed, {"flops": 1, "params": 2}) == {"flops": -1.0, "params": 2.0}
    assert budgets.trial_violations(listed, {"flops": 1}) == {"0": -1.0, "1": 2.0}   # another length
    named = _stored(constraints={"flops": 0.5}, listed=[0.5])
    assert budgets.trial_violations(named, {"flops": 1}) == {"flops": 0.5}


def test_storage_and_the_driver_read_budgets_without_torch():
    code = ("import sys, nas.storage, nas.search.recorder, nas.search.contract, nas.study; "
            "assert 'torch' not in sys.modules and 'space.cost' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
