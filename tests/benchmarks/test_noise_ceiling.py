"""benchmarks/noise_ceiling.py: what a searcher that trained exactly the exact front would score
when a run is scored by the true accuracy of its observed (noisy) front."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import noise_ceiling  # noqa: E402

# minimisation form: (-accuracy, params); a front of three and one config behind the middle one
FRONT = np.array([[-0.70, 1.0], [-0.80, 2.0], [-0.90, 3.0]])
BEHIND = np.array([[-0.78, 2.0]])                    # as costly as the middle one, less accurate
REFERENCE = np.array([-0.6, 4.0])
EXACT_HV = 0.1 * 3 + 0.1 * 2 + 0.1 * 1


def test_without_noise_the_front_scores_one():
    rng = np.random.default_rng(0)
    ratio = noise_ceiling.exported_ratio(FRONT, 0.0, 0, REFERENCE, EXACT_HV, rng, draws=3)
    assert np.allclose(ratio, 1.0)


def test_a_lucky_reading_behind_the_front_displaces_a_front_config():
    """With noise, the config behind the front reads above the middle one in some draws: the
    export holds it instead, and scores its true accuracy, below 1."""
    rng = np.random.default_rng(0)
    points = np.vstack([FRONT, BEHIND])
    ratio = noise_ceiling.exported_ratio(points, 0.03, 0, REFERENCE, EXACT_HV, rng, draws=400)
    assert 0.9 < ratio.mean() < 1.0 and ratio.min() < 0.99


def test_sets_hold_the_front_and_grow_with_the_neighbours():
    rng = np.random.default_rng(1)
    points = np.column_stack([-rng.random(300), rng.random(300)])
    front = set(noise_ceiling.front_with_neighbours(points, 0))
    one = set(noise_ceiling.front_with_neighbours(points, 1))
    assert front < one and len(one) <= 2 * len(front)
    first = noise_ceiling.layers(points, 50)
    assert len(first) == 50 and front <= set(first)
