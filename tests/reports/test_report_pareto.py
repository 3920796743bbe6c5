"""Non-dominated sorting and exact hypervolume against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reports.pareto import hypervolume, hypervolume_history, pareto_mask


def _brute_mask(y):
    return np.array([not any(np.all(y[j] <= y[i]) and np.any(y[j] < y[i]) for j in range(len(y)))
                     for i in range(len(y))])


def _grid_volume(points, ref):
    """Exact for integer points: count the unit cells some point dominates."""
    cells = itertools.product(*[range(int(r)) for r in ref])
    return sum(any(all(c >= p for c, p in zip(cell, q)) for q in points) for cell in cells)


@pytest.mark.parametrize("k", [2, 3])
def test_pareto_mask_matches_brute_force(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, 6, size=(80, k)).astype(float)  # ties and duplicates included
    assert (pareto_mask(y) == _brute_mask(y)).all()


def test_hypervolume_hand_cases():
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[1, 1, 1]], [2, 2, 2]) == pytest.approx(1.0)
    assert hypervolume([[0, 0, 1], [1, 1, 0]], [2, 2, 2]) == pytest.approx(5.0)
    assert hypervolume([[5, 5]], [4, 4]) == 0.0  # beyond the reference point: nothing


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_exact_on_integer_grids(k):
    rng = np.random.default_rng(10 + k)
    ref = [7] * k
    for _ in range(5):
        pts = rng.integers(0, 7, size=(12, k)).astype(float)
        assert hypervolume(pts, ref) == pytest.approx(_grid_volume(pts, ref))


def test_hypervolume_history_is_monotone_and_ends_at_the_total():
    rng = np.random.default_rng(3)
    pts = rng.random((60, 3))
    hist = hypervolume_history(pts, [1.1, 1.1, 1.1])
    assert np.all(np.diff(hist) >= -1e-12)
    assert hist[-1] == pytest.approx(hypervolume(pts, [1.1, 1.1, 1.1]))
    assert hist[0] == pytest.approx(np.prod(1.1 - pts[0]))
