"""`frontier` beside successive halving: trials stopped early teach the score's model at the
fidelity they reached (they are half of a halving study's trials), and never stand on the front."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

import space
from nas.search.proposals import ProposalSampler, make_proposer
from nas_testing import REPO

optuna.logging.set_verbosity(optuna.logging.ERROR)
SPACE = space.load_space(REPO / "studies/spaces/quickstart.yaml")
OBJECTIVES, DIRECTIONS = ["accuracy", "flops"], ["maximize", "minimize"]


def accuracy(config) -> float:
    d = config.to_dict()
    return 0.5 + 0.01 * d["widths"][0] + 0.03 * sum(d["base_depths"])


def study_with(stop, objectives=OBJECTIVES):
    """A frontier study whose trials `stop(i)` says are stopped after rung 1 of 2."""
    proposer = make_proposer(SPACE, "frontier", {"n_startup": 4, "pool": 64}, 0, DIRECTIONS, objectives, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=DIRECTIONS, sampler=ProposalSampler(proposer))
    for i in range(12):
        trial = study.ask()
        config = SPACE.suggest(trial)
        flops = space.complexity(config).as_metrics()["flops"]
        rung1 = accuracy(config) - 0.1
        if stop(i):
            trial.set_user_attr("rung_scores", {"1": rung1})
            study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("rung_scores", {"1": rung1, "2": accuracy(config)})
            study.tell(trial, [accuracy(config), flops])
    return study, proposer


def test_the_model_learns_from_trials_stopped_early():
    study, proposer = study_with(lambda i: i % 2 == 1)
    score = OBJECTIVES.index("accuracy")
    assert proposer.score == score
    gp, _ = proposer._hyper[score]
    assert gp.n == 11                   # the 6 complete and the 5 stopped trials before the last ask
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 6 and all(t.values is None for t in pruned)


def test_a_study_whose_trials_were_all_stopped_still_proposes_new_architectures():
    study, _ = study_with(lambda i: True)
    hashes = [SPACE.suggest(optuna.trial.FixedTrial(t.params)).config_hash() for t in study.trials]
    assert len(set(hashes)) == len(hashes) == 12


def test_a_modelled_objective_with_no_reading_yet_gets_uniform_draws():
    """[accuracy, latency_ms]: every trial stopped early has an accuracy at its rung but no
    latency to model; the study goes on with uniform draws, not with a model of no data (whose
    all-NaN scores would pick a candidate at random, with RuntimeWarnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        study, _ = study_with(lambda i: True, objectives=["accuracy", "latency_ms"])
    assert len(study.trials) == 12


def test_scoring_fewer_candidates_than_a_proposal_adds_is_allowed():
    from nas.search.frontier import FrontierProposer

    proposer = make_proposer(SPACE, "frontier", {"scored": 8}, 0, DIRECTIONS, OBJECTIVES, {})
    assert isinstance(proposer, FrontierProposer)
    assert len(proposer._sample(list(range(100)))) == 8
