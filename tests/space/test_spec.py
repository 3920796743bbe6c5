import random

import optuna
import pytest

import overlock
import space
from space import SpaceError, load_space

SMALL = {
    "name": "small",
    "base": "overlock_xt",
    "fixed": {"resolution": 64, "num_classes": 10},
    "dimensions": {
        "w": {"choices": [16, 32]},
        "region_count": {"low": 3, "high": 7, "step": 2},
        "small_kernel": {"choices": [3, 5], "when": {"region_count": [5, 7]}, "default": 3},
    },
    "splits": [{"name": "deep", "total": {"choices": [3, 4]},
                "parts": ["overview_depth", "focus_depths[0]", "focus_depths[1]"], "min": 1}],
    "derived": {"widths": "[w, 2 * w, 4 * w, 4 * w]", "focus_heads": "[1, 1]",
                "base_depths": "[1, 1, 1]"},
}


def test_size_enumeration_and_sampling_agree():
    s = space.SearchSpace.from_dict(SMALL)
    configs = list(s.enumerate())
    # w: 2; region 3 -> 1 path, 5/7 -> 2 paths each: 5; splits: total 3 -> 1, total 4 -> 3
    assert s.size() == 2 * 5 * 4 == len(configs)
    hashes = {c.config_hash() for c in configs}
    rng = random.Random(0)
    for _ in range(50):
        c = s.sample(rng)
        assert c.config_hash() in hashes
        assert c.overview_depth + sum(c.focus_depths) in (3, 4)
        assert c.widths[1] == 2 * c.widths[0]
        if c.region_count == 3:
            assert c.small_kernel == 3


def test_seeded_sampling_is_reproducible():
    s = space.SearchSpace.from_dict(SMALL)
    assert [s.sample(7).config_hash() for _ in range(3)] == [s.sample(7).config_hash()] * 3


@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler(seed=0),
                                     optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
                                     optuna.samplers.NSGAIISampler(seed=0, population_size=4)])
def test_define_by_run_with_every_sampler(sampler):
    s = space.SearchSpace.from_dict(SMALL)
    hashes = {c.config_hash() for c in s.enumerate()}
    study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])

    def objective(trial):
        c = s.suggest(trial)
        assert c.config_hash() in hashes
        return c.region_count, sum(c.focus_depths)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=8)
    assert len(study.trials) == 8
    # conditional dimension only present when active
    for t in study.trials:
        assert ("small_kernel" in t.params) == (t.params["region_count"] in (5, 7))


def test_shipped_spaces_contain_their_presets():
    xt_t = load_space("studies/spaces/xt_t.yaml")
    wide = load_space("studies/spaces/wide.yaml")
    for name in ("overlock_xt", "overlock_t"):
        assert xt_t.contains(overlock.PRESETS[name])
    assert not xt_t.contains(overlock.PRESETS["overlock_s"])
    for name in overlock.PRESETS:
        assert wide.contains(overlock.PRESETS[name])
    assert not wide.contains(overlock.PRESETS["overlock_t"].replace(region_count=4))
    flops = [space.complexity(xt_t.sample(i)).flops for i in range(200)]
    assert max(flops) < 6.1e9


@pytest.mark.parametrize("patch,match", [
    ({"dimensions": {"bogus_field[0]": {"choices": [1]}}}, None),
    ({"dimensions": {"region_count": {"low": 5, "high": 3}}}, "high=3 < low=5"),
    ({"dimensions": {"region_count": {"chioces": [3]}}}, r"region_count\.chioces: unknown key"),
    ({"fixed": {"colour": 1}}, r"fixed\.colour: not an OverLoCKConfig field"),
    ({"base": "overlock_q"}, r"base: unknown preset 'overlock_q'"),
    ({"splits": [{"total": 20, "parts": ["overview_depth", "focus_depths[0]"], "max": 3}]},
     r"splits\[0\]\.total: 20\.\.20 cannot be split"),
    ({"derived": {"widths": "[w, w ** , 1]"}}, r"derived\.widths: .* is not a valid expression"),
    ({"derived": {"focus_heads": "[3, 3]"}}, "impossible space"),
    ({"colour": "red"}, r"space\.colour: unknown key"),
])
def test_bad_spaces_name_the_key(patch, match):
    raw = {**SMALL, **patch}
    with pytest.raises(SpaceError, match=match):
        space.SearchSpace.from_dict(raw)


def test_feasible_fraction_exact_and_estimated_and_constraint_aware_sampling():
    s = space.SearchSpace.from_dict(SMALL)
    weighted = [(space.complexity(c).flops, p) for c, p in s.enumerate_weighted()]
    assert sum(p for _, p in weighted) == pytest.approx(1.0)
    costs = sorted(f for f, _ in weighted)
    budget = costs[len(costs) // 2]
    exact = space.feasible_fraction(s, {"flops": budget})
    assert exact.exact
    assert exact.fraction == pytest.approx(sum(p for f, p in weighted if f <= budget))
    est = space.feasible_fraction(s, {"flops": budget}, max_enumerate=1, samples=400)
    assert not est.exact and est.ci95[0] <= exact.fraction <= est.ci95[1]
    for i in range(20):
        assert space.complexity(space.sample_feasible(s, {"flops": budget}, seed=i)).flops <= budget
    with pytest.raises(SpaceError, match="no config within budgets"):
        space.sample_feasible(s, {"flops": 1.0}, seed=0, max_tries=50)


def test_space_cli_json(tmp_path):
    import json

    from click.testing import CliRunner

    from nas.cli import main

    result = CliRunner().invoke(main, ["space", "studies/spaces/xt_t.yaml", "--budget", "flops=4e9",
                                       "--samples", "300", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["size"] == load_space("studies/spaces/xt_t.yaml").size()
    presets = {p["preset"]: p for p in doc["presets"]}
    assert presets["overlock_xt"]["in_space"] and presets["overlock_xt"]["within_budgets"]
    assert not presets["overlock_t"]["within_budgets"]
    assert 0 < doc["feasible_fraction"]["fraction"] < 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("dimensions: {region_count: {low: 9, high: 3}}\n")
    result = CliRunner().invoke(main, ["space", str(bad)])
    assert result.exit_code == 1 and "high=3 < low=9" in result.output   # an error in the file: 1
