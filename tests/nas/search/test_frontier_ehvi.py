"""`frontier`'s acquisition: the exact expected hypervolume improvement, checked against an
independent computation (exact hypervolumes from `reports.pareto`, integrated over the one
Gaussian objective by quadrature), for 2 and 3 objectives and candidates inside, outside and on
the edge of the front."""

from __future__ import annotations

import numpy as np
import pytest

from nas.search.frontier import ehvi
from reports.pareto import hypervolume


def expected_hvi_by_quadrature(front, ref, mean, sd, cost, nodes=4001):
    """E[HV(front + (U, cost)) - HV(front)], U ~ N(mean, sd), by the trapezoid rule over +-8 sd."""
    base = hypervolume(front, ref)
    u = np.linspace(mean - 8 * sd, mean + 8 * sd, nodes)
    gain = np.array([hypervolume(np.vstack([front, np.r_[x, cost]]), ref) - base for x in u])
    density = np.exp(-0.5 * ((u - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
    return np.trapezoid(gain * density, u)


def front_points(rng, n, cost_dims):
    x = rng.random((n, cost_dims))
    return np.c_[1.0 - x.sum(1) / cost_dims + 0.05 * rng.random(n), x]


@pytest.mark.parametrize("cost_dims", [1, 2])
def test_ehvi_equals_the_integrated_hypervolume_improvement(cost_dims):
    rng = np.random.default_rng(cost_dims)
    front = front_points(rng, 12, cost_dims)
    ref = np.array([1.3] + [1.1] * cost_dims)
    n = 10
    cost = np.vstack([rng.random((n - 3, cost_dims)),
                      front[0, 1:],                     # a cost equal to a front point's
                      np.full(cost_dims, 1.05),          # costs near the reference point
                      np.full(cost_dims, 1.2)])          # outside the reference box: no gain
    mean, sd = 0.2 + rng.random(n), 0.02 + 0.2 * rng.random(n)
    got = ehvi(front, ref, mean, sd, cost)
    want = [expected_hvi_by_quadrature(front, ref, m, s, c) for m, s, c in zip(mean, sd, cost)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert got[-1] == 0.0 and got.max() > 0


def test_ehvi_with_no_front_is_the_box_times_the_expected_gain_below_the_reference():
    ref = np.array([1.0, 2.0, 3.0])
    got = ehvi(np.empty((0, 3)), ref, np.array([0.5]), np.array([1e-12]), np.array([[1.0, 1.0]]))
    np.testing.assert_allclose(got, [0.5 * 1.0 * 2.0])


def test_ehvi_chunks_agree_with_one_pass():
    """Candidates are scored in chunks of `max_cells` cells: the chunking must not change a value."""
    rng = np.random.default_rng(7)
    front = front_points(rng, 20, 2)
    ref = np.array([1.3, 1.1, 1.1])
    cost, mean, sd = rng.random((50, 2)), rng.random(50), 0.1 * rng.random(50)
    np.testing.assert_array_equal(ehvi(front, ref, mean, sd, cost, max_cells=500),
                                  ehvi(front, ref, mean, sd, cost))
