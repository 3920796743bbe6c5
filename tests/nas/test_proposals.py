"""Proposals (nas.search.proposals): no trial is ever created over an exact budget, whatever the
sampler, and each sampler is told the draws it had rejected in the form it learns from."""

import warnings

import optuna
import pytest
from optuna.trial import TrialState

import space
from nas import _optuna
from nas.search.frontier import DecisionTrial
from nas.search.proposals import (REJECTED_ATTR, SHADOW_REJECTED_KEY, Proposals, ProposalSampler,
                                  ShadowProposer, describe_rejected, make_proposer)
from nas.study import default_sampler
from nas_testing import REPO

optuna.logging.set_verbosity(optuna.logging.ERROR)
SPACE = space.load_space(REPO / "studies/spaces/quickstart.yaml")     # 72 architectures
BUDGETS = {"flops": 12e6, "params": 1.0e6}                          # about a third within both
OBJECTIVES = ["accuracy", "flops"]
DIRECTIONS = ["maximize", "minimize"]
SAMPLERS = {"nsga2": {"population_size": 4}, "tpe": {"n_startup_trials": 4, "multivariate": True},
            "random": {}, "gp": {"n_startup_trials": 4}, "frontier": {"n_startup": 4, "pool": 64}}
GENERATION = _optuna.NSGA2_GENERATION_KEY


def accuracy(config) -> float:
    """A deterministic stand-in for training: grows with width and depth, kernels interact."""
    d = config.to_dict()
    return 0.5 + 0.01 * d["widths"][0] + 0.03 * sum(d["base_depths"]) \
        + 0.02 * (d["region_count"] == 3) * (d["dynamic_kernels"][0] == 7)


def new_study(sampler: str, seed: int = 0, storage=None, name: str = "s"):
    options = SAMPLERS.get(sampler, {})
    if sampler == "default":     # what a study file without `sampler` gets
        sampler, options = default_sampler(OBJECTIVES)
    proposer = make_proposer(SPACE, sampler, options, seed, DIRECTIONS, OBJECTIVES, BUDGETS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=DIRECTIONS, sampler=ProposalSampler(proposer),
                                    storage=storage, study_name=name, load_if_exists=True)
    return study, proposer


def run_trials(study, n: int) -> list:
    """Ask, build, price and tell `n` trials the way the engine does (constraints as the list)."""
    configs = []
    for _ in range(n):
        trial = study.ask()
        config = SPACE.suggest(trial)
        cost = space.complexity(config).as_metrics()
        study._storage.set_trial_system_attr(trial._trial_id, "constraints",
                                             [cost[k] - b for k, b in BUDGETS.items()])
        study.tell(trial, [accuracy(config), cost["flops"]])
        configs.append((trial.number, config))
    return configs


@pytest.mark.parametrize("sampler", list(SAMPLERS) + ["default"])
def test_no_trial_is_created_over_an_exact_budget(sampler):
    study, _ = new_study(sampler)
    configs = run_trials(study, 14)
    over = [(n, k) for n, c in configs for k, v in space.complexity(c).as_metrics().items()
            if k in BUDGETS and v > BUDGETS[k]]
    assert over == [], f"{sampler}: trials created over a budget: {over}"
    rejected = [t.user_attrs[REJECTED_ATTR] for t in study.trials]
    assert sum(sum(r.values()) for r in rejected) > 0     # two thirds of the space is over budget
    assert set().union(*rejected) <= {"flops", "params"}


def fake_latency(config) -> float:
    """ms of a stand-in device: 15-18 ms over the configs within BUDGETS, a quarter at each."""
    return 0.5 * config.widths[0] + 2.0 * sum(config.base_depths) + 1.0 * config.focus_depths[0]


@pytest.mark.parametrize("sampler", list(SAMPLERS) + ["default"])
def test_no_trial_is_created_over_a_latency_budget_a_measurement_first_put_it_over(sampler):
    """`latency_confirm` stands in for the engine's measure-before-trial (LatencyPricer.confirm):
    it sees only configs within the exact budgets, each about to become a trial; the ones it
    measures over the 16.5 ms budget are rejected draws (`latency_measured`), never trials."""
    budget, confirmed = 16.5, []

    def confirm(config):
        confirmed.append(config.config_hash())
        assert space.is_feasible(config, BUDGETS)      # exact budgets are checked first
        ms = fake_latency(config)
        return ("latency_measured", ms) if ms > budget else None

    options = SAMPLERS.get(sampler, {})
    if sampler == "default":
        sampler, options = default_sampler(OBJECTIVES)
    proposer = make_proposer(SPACE, sampler, options, 0, DIRECTIONS, OBJECTIVES,
                             {**BUDGETS, "latency_ms": budget}, latency_confirm=confirm,
                             latency_odds=lambda c: float(fake_latency(c) <= budget + 1.0))
    proposals = Proposals(proposer)
    study = optuna.create_study(directions=DIRECTIONS, sampler=proposals.sampler)
    for _ in range(10):
        trial = proposals.ask(study)
        config = SPACE.suggest(trial)
        assert fake_latency(config) <= budget, f"{sampler}: trial {trial.number} over the latency budget"
        cost = space.complexity(config).as_metrics()
        study._storage.set_trial_system_attr(trial._trial_id, "constraints",
                                             [cost[k] - b for k, b in BUDGETS.items()] + [0.0])
        study.tell(trial, [accuracy(config), cost["flops"]])
    assert proposals.rejected.get("latency_measured", 0) > 0 and len(confirmed) >= 10


class _Stuck(optuna.samplers.BaseSampler):
    """A sampler that proposes one architecture for ever (as GPSampler can, docs/explanation/search.md)."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, distribution):
        return distribution.to_external_repr(0) if hasattr(distribution, "choices") else distribution.low


def test_a_sampler_that_keeps_repeating_an_architecture_is_redirected_to_new_ones():
    from nas.search.proposals import MAX_REPEATS

    proposer = make_proposer(SPACE, "random", {}, 0, DIRECTIONS, OBJECTIVES, {})
    proposer.shadow.sampler = _Stuck()
    proposals = Proposals(proposer)
    study = optuna.create_study(directions=DIRECTIONS, sampler=proposals.sampler)
    hashes = []
    for _ in range(3 * (MAX_REPEATS + 2)):
        trial = proposals.ask(study)
        config = SPACE.suggest(trial)
        hashes.append(config.config_hash())
        study.tell(trial, [accuracy(config), space.complexity(config).flops])
    # one new architecture after every MAX_REPEATS repeats of the stuck one, never a repeat of it
    new = [i for i, h in enumerate(hashes) if h not in hashes[:i]]
    assert new == [k * (MAX_REPEATS + 1) for k in range(len(hashes) // (MAX_REPEATS + 1) + 1)][:len(new)]
    assert len(new) == 4 and all(h == hashes[0] for i, h in enumerate(hashes) if i not in new)


def shadow_rejected(proposer: ShadowProposer) -> list:
    return [t for t in proposer.shadow.get_trials(deepcopy=False)
            if SHADOW_REJECTED_KEY in t.system_attrs]


def test_nsga2_generations_are_made_of_real_trials_only():
    """A rejected child is told FAIL, which Optuna's plain NSGAIISampler never counts: every
    generation is population_size real trials, and so is every population it selects from."""
    study, proposer = new_study("nsga2")
    assert type(proposer.shadow.sampler) is optuna.samplers.NSGAIISampler
    run_trials(study, 10)
    proposer.sync(study)
    rejected = shadow_rejected(proposer)
    assert rejected, "no draw was rejected"
    assert all(t.state == TrialState.FAIL for t in rejected)
    # a generation is population_size (4) real trials: 0-3 generation 0, 4-7 generation 1
    generations = [t.system_attrs[GENERATION] for t in study.trials]
    assert generations[:8] == [0] * 4 + [1] * 4, generations
    sampler = proposer.shadow.sampler
    for generation in (0, 1):
        population = sampler.get_population(proposer.shadow, generation)
        assert len(population) == 4 and not any(SHADOW_REJECTED_KEY in t.system_attrs for t in population)
    parents = sampler.get_parent_population(proposer.shadow, 1)
    assert len(parents) == 4 and all(SHADOW_REJECTED_KEY not in t.system_attrs for t in parents)


@pytest.mark.parametrize("sampler, state", [("tpe", TrialState.PRUNED), ("gp", TrialState.COMPLETE),
                                            ("random", TrialState.PRUNED)])
def test_rejected_draws_are_told_in_the_form_the_sampler_reads(sampler, state):
    study, proposer = new_study(sampler)
    run_trials(study, 8)
    rejected = shadow_rejected(proposer)
    assert rejected
    # (GP: PRUNED until a trial has finished and lends its values; COMPLETE after)
    assert any(t.state == state for t in rejected)
    for t in rejected:
        assert sum(v for v in t.constraints.values() if v > 0) > 0


def test_the_shadow_mirrors_finished_trials_and_resume_rebuilds_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study, _ = new_study("nsga2", storage=storage)
    run_trials(study, 6)
    first = [(t.params, t.system_attrs[GENERATION]) for t in study.trials]
    again, proposer = new_study("nsga2", seed=1, storage=storage)     # a new process
    run_trials(again, 3)
    mirrored = [t for t in proposer.shadow.trials if SHADOW_REJECTED_KEY not in t.system_attrs]
    assert [(t.params, t.system_attrs[GENERATION]) for t in mirrored[:6]] == first
    # generation 1 goes on from the stored generations (trials 4-7), it does not restart at 0
    assert [t.system_attrs[GENERATION] for t in again.trials][4:8] == [1, 1, 1, 1]


def test_a_queued_trial_keeps_its_params_and_records_no_draws():
    study, _ = new_study("tpe")
    run_trials(study, 3)
    params = study.trials[0].params
    study.enqueue_trial(params)
    trial = study.ask()
    assert trial.params == {} and REJECTED_ATTR not in trial.user_attrs
    SPACE.suggest(trial)
    assert trial.params == params


def test_frontier_never_proposes_an_architecture_twice():
    study, _ = new_study("frontier")
    configs = run_trials(study, 16)
    hashes = [c.config_hash() for _, c in configs]
    assert len(set(hashes)) == len(hashes)


def test_a_decision_trial_rebuilds_a_trials_config_from_its_params():
    import random

    study, _ = new_study("random")
    for number, config in run_trials(study, 5):
        params = study.trials[number].params
        assert SPACE.suggest(DecisionTrial(random.Random(0), params)).config_hash() == config.config_hash()


def test_the_summary_gives_the_share_of_draws_rejected_per_reason():
    trials = [optuna.trial.create_trial(state=TrialState.COMPLETE, values=[1.0],
                                        user_attrs={REJECTED_ATTR: r})
              for r in ({"flops": 2}, {}, {"flops": 1, "params": 1})]
    line = describe_rejected(trials)
    assert line == "draws rejected before training: 4 of 7 (57.1%): flops 42.9%, params 14.3%"
    assert describe_rejected([optuna.trial.create_trial(state=TrialState.COMPLETE, values=[1.0])]) is None


def test_the_drivers_ask_creates_a_trial_holding_its_params_and_draws():
    proposer = make_proposer(SPACE, "tpe", {}, 0, DIRECTIONS, OBJECTIVES, BUDGETS)
    proposals = Proposals(proposer)
    study = optuna.create_study(directions=DIRECTIONS, sampler=proposals.sampler)
    for _ in range(6):
        trial = proposals.ask(study)
        stored = study._storage.get_trial(trial._trial_id)
        assert stored.params and REJECTED_ATTR in stored.user_attrs      # one write holds both
        config = SPACE.suggest(trial)
        assert config.config_hash() == proposals.sampler.last.config.config_hash()
        assert space.is_feasible(config, BUDGETS)
        study.tell(trial, [accuracy(config), space.complexity(config).flops])


def test_frontier_stops_with_one_line_when_every_feasible_architecture_was_tried():
    from nas.search.proposals import ProposalError

    study, _ = new_study("frontier")
    feasible = sum(space.is_feasible(c, BUDGETS) for c in SPACE.enumerate())
    run_trials(study, feasible)
    assert len({t.user_attrs.get("config_hash") or tuple(sorted(t.params.items())) for t in study.trials}) == feasible
    with pytest.raises(ProposalError, match="every architecture of the space within the budgets"):
        study.ask()
