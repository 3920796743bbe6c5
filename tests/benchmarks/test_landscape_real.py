"""Landscape (b) of the search-efficiency benchmark: the surrogate of real trainings loads from the
committed model, is deterministic, refuses configs outside what was trained, and the fitting
script reproduces the committed model from the committed table."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import fit_surrogate  # noqa: E402
import landscape_real  # noqa: E402
from surrogate_table import read_table  # noqa: E402

SPACE = REPO / "benchmarks" / "spaces" / "surrogate.yaml"


def _configs(n: int, seed: int = 0) -> list:
    import space

    s = space.load_space(SPACE)
    rng = random.Random(seed)
    return [s.sample(rng) for _ in range(n)]


def test_model_and_table_are_committed_and_agree():
    model = json.loads(landscape_real.MODEL.read_text())
    rows = read_table(fit_surrogate.TABLE)
    assert model["n"] == len(rows) >= 10
    assert model["table_sha256"] == fit_surrogate._digest(fit_surrogate.TABLE)
    for key in ("seed_vs_seed_rho", "chosen", "candidates"):
        assert key in model


def test_accuracy_is_deterministic_and_matches_the_batch_form():
    import space

    configs = _configs(40)
    costs = [space.complexity(c) for c in configs]
    one = [landscape_real.accuracy(c, k) for c, k in zip(configs, costs)]
    assert one == [landscape_real.accuracy(c, k) for c, k in zip(configs, costs)]
    assert one == [landscape_real.accuracy(c) for c in configs]          # cost computed when absent
    assert np.allclose(landscape_real.accuracy_many(configs, costs), one, rtol=0, atol=1e-12)
    assert all(0.0 < a < 1.0 for a in one)
    assert len(set(one)) > 10                                            # not a constant


def test_a_config_outside_the_trained_space_is_refused():
    import space

    xt_t = next(space.load_space(REPO / "studies" / "spaces" / "xt_t.yaml").enumerate())
    with pytest.raises(ValueError, match="outside the trained space"):
        landscape_real.accuracy(xt_t)


def test_fit_reproduces_the_committed_model_from_the_committed_table():
    stored = json.loads(landscape_real.MODEL.read_text())
    refit = fit_surrogate.refit_chosen(stored, read_table(fit_surrogate.TABLE))
    for key, value in refit.items():
        assert fit_surrogate.same_model(stored[key], value), key


@pytest.mark.slow
def test_full_refit_with_cross_validation_reproduces_the_committed_file():
    with pytest.raises(SystemExit) as exit_info:
        fit_surrogate.main(["--check"])
    assert exit_info.value.code == 0
