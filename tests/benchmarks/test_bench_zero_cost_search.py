"""The zero-cost search benchmark's machinery, without running a study (a naswot trial of xt_t
takes seconds): the study it runs, the timers it installs, and the hypervolume against the union
front of all runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_zero_cost_search as bz  # noqa: E402


@pytest.mark.parametrize("strategy, sampler", [("default", "frontier"), ("random", "random"),
                                               ("{name: tpe, multivariate: true}", "tpe")])
def test_the_study_is_the_zero_cost_study_file_with_the_strategy(tmp_path, strategy, sampler):
    from nas.study import parse_study

    spec = parse_study(bz.study_mapping(bz.bse.parse_strategy(strategy), 2, 50, tmp_path, quick=False),
                       label="t")
    assert spec.sampler_name == sampler      # `default` is frontier for [naswot, flops]
    assert list(spec.objectives) == ["naswot", "flops"] and spec.seed == 2 and spec.trials == 50
    assert spec.parallel == 1 and spec.trials_count == "trained"
    assert spec.constraints == {"flops": 4e9, "params": 20e6}
    assert spec.evaluator.name == "naswot" and spec.evaluator.settings == {"batch_size": 16, "resolution": 64}
    assert spec.space_dict["name"] == "xt-t"


def test_timers_count_every_proposer_and_put_the_methods_back():
    from nas.executor import Executor
    from nas.search import frontier, proposals

    before = (frontier.FrontierProposer.propose, proposals.ShadowProposer.propose,
              proposals.ShadowProposer.observe, Executor.wait)
    with bz.Timers() as timers:
        assert frontier.FrontierProposer.propose is not before[0]
        with pytest.raises(AttributeError):      # a call that fails is timed too
            proposals.ShadowProposer.propose(object(), None)
        Executor.wait(Executor(), [], timeout=0.01)
    assert len(timers.propose) == 1 and timers.wait > 0
    assert (frontier.FrontierProposer.propose, proposals.ShadowProposer.propose,
            proposals.ShadowProposer.observe, Executor.wait) == before


def test_hypervolume_is_against_the_union_front_of_all_runs():
    d = ["maximize", "minimize"]
    a = {"values": [[200, 4e9], [210, 3e9], [190, 1e9]], "directions": d, "target_trials": 50}
    b = {"values": [[205, 2e9]], "directions": d, "target_trials": 50}
    reference, union_hv = bz.union_front([a, b])
    # worst naswot (190) and largest flops (4 G) of any run; union front (210, 3G), (205, 2G), (190, 1G)
    np.testing.assert_allclose(reference, [-190, 4e9])
    assert union_hv == pytest.approx(20 * 1e9 + 15 * 1e9)
    hv = bz.hv_at(a, reference, union_hv, checkpoints=(1, 2, 25))
    assert hv["hv_1"] == 0.0                     # (200, 4G) alone: at the reference's flops
    assert hv["hv_2"] == pytest.approx(20 / 35, abs=1e-3)
    assert hv["hv_25"] is None and hv["hv_final"] == hv["hv_2"]
    assert bz.hv_at(b, reference, union_hv)["hv_final"] == pytest.approx(15 * 2 / 35, abs=1e-3)
