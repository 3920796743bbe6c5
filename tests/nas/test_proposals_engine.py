"""Proposals through the real engine: whatever the sampler (and the default), no trial of a study
is ever over an exact budget, and every new trial records the draws rejected before it."""

import optuna
import pytest

from nas import _optuna
from nas.engine import SearchEngine, open_storage
from nas.study import parse_study
from nas_testing import study_dict

BUDGET = 1.7e6      # MACs: only the 4 architectures with widths[3] = 32 are within it (of 12)


def run(tmp_path, sampler: dict | None, trials: int = 6) -> list:
    data = study_dict(tmp_path, objectives=["flops", "params"], evaluator=None,
                      constraints={"flops": BUDGET}, trials=trials, trials_count="trained")
    if sampler is None:
        data.pop("sampler")
    else:
        data["sampler"] = sampler
    spec = parse_study(data, label="t")
    result = SearchEngine(spec).run()
    assert not result.interrupted
    return optuna.load_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run")).get_trials()


@pytest.mark.parametrize("sampler", [{"name": "nsga2", "population_size": 4}, {"name": "tpe"},
                                     {"name": "random"}, {"name": "gp", "n_startup_trials": 3},
                                     {"name": "frontier", "n_startup": 2}, None],
                         ids=["nsga2", "tpe", "random", "gp", "frontier", "default"])
def test_no_trial_over_an_exact_budget_and_the_draws_are_recorded(tmp_path, local_ray, sampler):
    trials = run(tmp_path, sampler, trials=4)     # the 4 within the budget
    assert trials
    over = [(t.number, t.user_attrs.get("flops")) for t in trials if t.user_attrs.get("flops", 0) > BUDGET]
    assert over == []
    assert not any(t.user_attrs.get("infeasible") for t in trials)
    assert all(isinstance(t.user_attrs.get("rejected_draws"), dict) for t in trials)
    # two thirds of the space is over the budget: draws were rejected, none became a trial
    assert sum(t.user_attrs["rejected_draws"].get("flops", 0) for t in trials) > 0


def test_a_resumed_study_goes_on_proposing_within_the_budget(tmp_path, local_ray):
    sampler = {"name": "nsga2", "population_size": 2}
    first = run(tmp_path, sampler, trials=2)
    later = run(tmp_path, sampler, trials=4)
    assert [t.params for t in later[:len(first)]] == [t.params for t in first]
    assert all(t.user_attrs["flops"] <= BUDGET for t in later)
    assert all(_optuna.NSGA2_GENERATION_KEY in t.system_attrs for t in later)
