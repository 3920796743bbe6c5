"""`frontier`'s start-up: random search's draws on the same seed, never an architecture twice."""

from __future__ import annotations

import warnings

import optuna

import space
from nas.search.proposals import ProposalSampler, make_proposer
from nas_testing import REPO

optuna.logging.set_verbosity(optuna.logging.ERROR)
OBJECTIVES, DIRECTIONS = ["accuracy", "flops"], ["maximize", "minimize"]


def run(space_, sampler: str, options: dict, seed: int, n: int, budgets: dict | None = None) -> list[str]:
    """The config hashes of a study's first `n` trials, each told a made-up accuracy."""
    proposer = make_proposer(space_, sampler, options, seed, DIRECTIONS, OBJECTIVES, budgets or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=DIRECTIONS, sampler=ProposalSampler(proposer))
    hashes = []
    for _ in range(n):
        trial = study.ask()
        config = space_.suggest(trial)
        d = config.to_dict()
        study.tell(trial, [0.5 + 0.01 * d["widths"][0], space.complexity(config).as_metrics()["flops"]])
        hashes.append(config.config_hash())
    return hashes


def test_the_start_up_draws_what_random_search_draws_on_the_same_seed():
    xt_t = space.load_space(REPO / "studies/spaces/xt_t.yaml")
    budgets = {"flops": 4e9}                  # a budget that rejects some draws, as studies do
    for seed in (0, 7):
        frontier = run(xt_t, "frontier", {"n_startup": 6, "pool": 32, "candidates": 8}, seed, 8, budgets)
        random_search = run(xt_t, "random", {}, seed, 8, budgets)
        assert frontier[:6] == random_search[:6]
        assert frontier[6:] != random_search[6:]          # then the model proposes
    assert run(xt_t, "frontier", {"n_startup": 6}, 0, 6, budgets) != run(xt_t, "frontier", {"n_startup": 6}, 1, 6, budgets)


def test_the_start_up_never_proposes_an_architecture_twice():
    """On a 72-config space random search repeats architectures (the engine reuses their results);
    frontier's start-up takes a new one instead, so every trial is a new architecture."""
    small = space.load_space(REPO / "studies/spaces/quickstart.yaml")
    random_search = run(small, "random", {}, 3, 40)
    assert len(set(random_search)) < 40
    frontier = run(small, "frontier", {"n_startup": 40}, 3, 40)
    assert len(set(frontier)) == 40
