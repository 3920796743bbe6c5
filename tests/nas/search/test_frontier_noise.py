"""`frontier` with noisy readings: a candidate's expected improvement is discounted by how little
one more reading of it would teach the model (`augmentation`, Huang et al.'s augmented EI)."""

from __future__ import annotations

import math

import numpy as np

from nas.search.frontier import GaussianProcess, augmentation


def test_an_exact_objective_is_not_discounted_and_a_noisy_one_is_by_the_share_of_noise():
    sd = np.array([[0.0, 2.0], [5.0, 6.0], [7.0, 0.5]])      # column 0 exact (a cost), 1 noisy
    factor = augmentation(sd, np.array([0.0, 2.0]))
    assert math.isclose(factor[0], 1 - 1 / math.sqrt(2))     # posterior sd equal to the noise
    assert factor[2] < factor[0] < factor[1]                  # the better known, the less left
    assert np.all(augmentation(sd, np.zeros(2)) == 1.0)       # noise-free readings: no discount


def test_a_config_among_many_noisy_readings_is_discounted_and_one_in_unseen_territory_is_not():
    """60 readings of one objective (in hundreds: the discount must compare like units) with noise
    of half the signal's spread, all at x < 0.5. The model knows x = 0.25 to within the noise and
    x = 0.9 not at all: one more reading teaches little at the first and much at the second."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (60, 1))
    y = 100 * (np.sin(3 * x[:, 0]) + 0.25 * rng.standard_normal(60))
    gp = GaussianProcess().fit(x, y)
    _, sd = gp.predict(np.array([[0.25], [0.9]]))
    assert 10 < gp.noise_sd < 50                              # 25 in the objective's units
    inside, outside = augmentation(sd[:, None], np.array([gp.noise_sd]))
    assert inside < 0.35 and outside > 0.5, (inside, outside)
