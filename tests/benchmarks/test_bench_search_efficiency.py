"""The search-efficiency benchmark's machinery: landscapes, the exact front and its hypervolume
against brute force, and one end-to-end run through the real engine on the 72-config space."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_search_efficiency as bse  # noqa: E402
import landscapes  # noqa: E402

QUICK = "studies/spaces/quickstart.yaml"


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory):
    return bse.enumerate_space(QUICK, list(landscapes.LANDSCAPES), tmp_path_factory.mktemp("cache"))


def _brute_front(points: np.ndarray) -> np.ndarray:
    """Rows no other row dominates (minimisation), by comparing every pair."""
    keep = []
    for i, p in enumerate(points):
        dominated = any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(points) if j != i)
        if not dominated:
            keep.append(p)
    return np.unique(np.asarray(keep), axis=0)


def _brute_volume(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume as the sum of the grid cells (between distinct coordinates) some point dominates."""
    axes = [np.unique(np.concatenate([points[:, k], [ref[k]]])) for k in range(points.shape[1])]
    volume = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        low = np.array([axes[k][i] for k, i in enumerate(cell)])
        if np.any(np.all(points <= low, axis=1)):
            volume += float(np.prod([axes[k][i + 1] - axes[k][i] for k, i in enumerate(cell)]))
    return volume


@pytest.mark.parametrize("objectives", [("accuracy", "flops"), ("accuracy", "params", "flops")])
@pytest.mark.parametrize("landscape", list(landscapes.LANDSCAPES))
def test_exact_front_and_hypervolume_match_brute_force(quick_table, landscape, objectives):
    import space

    scenario = bse.Scenario("t", QUICK, objectives, {"flops": 20e6, "params": 1.2e6})
    exact = bse.exact_front(quick_table, scenario, landscape)
    # the same numbers from scratch: enumerate, price, score, filter, compare every pair
    s = space.load_space(REPO / QUICK)
    rows = []
    for config in s.enumerate():
        m = space.complexity(config).as_metrics()
        if m["flops"] <= 20e6 and m["params"] <= 1.2e6:
            acc = landscapes.LANDSCAPES[landscape](config)
            rows.append([-acc if o == "accuracy" else m[o] for o in objectives])
    points = np.asarray(rows, dtype=float)
    assert exact.size == 72 and exact.feasible == len(points)
    ref = points.max(axis=0)
    np.testing.assert_allclose(exact.reference, ref)
    np.testing.assert_allclose(np.unique(exact.front, axis=0), _brute_front(points))
    assert exact.hypervolume == pytest.approx(_brute_volume(points, ref), rel=1e-9)
    assert exact.hypervolume > 0


def test_landscapes_are_deterministic_bounded_and_differ(quick_table):
    accs = np.stack([quick_table[f"acc:{n}"] for n in landscapes.LANDSCAPES])
    assert np.all((accs > 0.3) & (accs < 1.0))
    assert len(np.unique(accs[0])) > 60          # not flat
    from scipy.stats import spearmanr

    for a, b in itertools.combinations(range(len(accs)), 2):
        assert spearmanr(accs[a], accs[b])[0] < 0.95     # different shapes, not one rescaled
    # the same value in a fresh process (the noise is seeded by the config hash, not by Python's)
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import space, landscapes; "
            "c = next(iter(space.load_space('studies/spaces/quickstart.yaml').enumerate())); "
            "print(repr([landscapes.LANDSCAPES[n](c) for n in landscapes.LANDSCAPES]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert eval(out.stdout) == list(accs[:, 0])


CHOICES = {"overview_depth": [1, 2, 3], "region_count": [5, 6, 7, 8], "dynamic_kernels": [[9, 7], [11, 7], [13, 7]],
           "small_kernel": [3, 5], "widths": [[48, 96, 192, 384], [64, 128, 256, 512]],
           "focus_depths": [[4, 1], [8, 2], [12, 3]]}


def interacting_pairs(fn, base) -> list[tuple[str, str]]:
    """Pairs (a, b) of fields where the best value of `a` changes with the value of `b`: what a
    landscape made of one compute term plus per-field terms can never show."""
    def acc(**fields):
        d = base.to_dict()
        d.update(fields)
        return fn(type(base).from_dict(d))

    found = []
    for a, b in itertools.permutations(CHOICES, 2):
        best = {json.dumps(vb): max(range(len(CHOICES[a])), key=lambda i: acc(**{a: CHOICES[a][i], b: vb}))
                for vb in CHOICES[b]}
        if len(set(best.values())) > 1:
            found.append((a, b))
    return found


@pytest.mark.parametrize("landscape", list(landscapes.LANDSCAPES))
def test_landscapes_have_interactions(landscape):
    """The best depth split, region count, kernel or width depends on another of them."""
    import space

    base = space.load_space(REPO / "studies/spaces/xt_t.yaml").sample(seed=3)
    pairs = interacting_pairs(landscapes.LANDSCAPES[landscape], base)
    assert len(pairs) >= 3, f"{landscape}: the best value of a field depends on another only for {pairs}"


def test_summarise_counts_draws_and_hypervolume():
    """Trained trials are COMPLETE and not reused; rejected draws are counted from the proposer's
    attribute and from PRUNED infeasible trials; the HV ratio grows with the trained ones."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    scenario = bse.Scenario("t", QUICK, ("accuracy", "flops"), {"flops": 10.0})
    exact = bse.ExactFront(np.array([-0.0, 10.0]), np.array([[-1.0, 0.0]]), 10.0, 5, 9)

    def trial(state, values=None, **attrs):
        return create_trial(state=state, values=values, params={"x": 1},
                            distributions={"x": IntDistribution(0, 2)}, user_attrs=attrs,
                            system_attrs={"constraints": [5.0]} if attrs.get("infeasible") else {})

    trials = [trial(TrialState.COMPLETE, [0.5, 5.0], rejected_draws={"flops": 2}),
              trial(TrialState.PRUNED, infeasible=True),
              trial(TrialState.COMPLETE, [0.5, 5.0], reused_from=0),
              trial(TrialState.COMPLETE, [1.0, 0.0])]
    for number, t in enumerate(trials):
        t.number = number
    r = bse.summarise(trials, scenario, exact, wall_s=1.0)
    assert r["trained"] == 2 and r["repeats"] == 1 and r["infeasible_trials"] == 1
    assert r["repeats_over_budget"] == 0
    assert r["rejected_draws"] == 2 and r["draws"] == 6 and r["over_budget"] == 3
    assert r["reasons"] == {"rejected:flops": 2, "trial:flops": 1}
    assert r["hv_ratio"] == pytest.approx([0.25, 1.0])
    assert optuna  # imported for create_trial's types


def test_benchmark_runs_through_the_engine_and_resumes(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    argv = ["--scenarios", "quickstart", "--landscapes", "bottleneck", "--strategies", "default",
            "--seeds", "1", "--trials", "12", "--results", str(results), "--cache-dir", str(tmp_path),
            "--workdir", str(tmp_path)]
    bse.main(argv)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["strategy"] for r in rows] == ["default", "random"]   # random beside every strategy
    for r in rows:
        assert r["trained"] == 12 == len(r["hv_ratio"])
        new_over_budget = r["infeasible_trials"] - r["repeats_over_budget"]
        assert r["trials"] == r["trained"] + new_over_budget + r["repeats"]
        # over budget: PRUNED trials (today), or draws the proposer rejected before creating a trial
        assert r["over_budget"] == r["infeasible_trials"] + r["rejected_draws"] > 0
        assert r["draws"] == r["trials"] + r["rejected_draws"]
        assert set(r["reasons"]) <= {f"{k}:{b}" for k in ("trial", "rejected") for b in ("flops", "params")}
        ratio = np.asarray(r["hv_ratio"])
        assert np.all(np.diff(ratio) >= -1e-12) and 0 < ratio[-1] <= 1 + 1e-9
    out = capsys.readouterr().out
    assert "| default | 1 |" in out and "| random | 1 |" in out and "trials over budget" in out
    bse.main(argv)                                   # everything is in the results file already
    assert len(results.read_text().splitlines()) == 2


def test_noise_is_a_seeded_standard_normal():
    draws = np.array([landscapes.noise(7, f"{i:016x}") for i in range(4000)])
    assert abs(draws.mean()) < 0.06 and abs(draws.std() - 1) < 0.05
    assert landscapes.noise(7, "ab") == landscapes.noise(7, "ab") != landscapes.noise(8, "ab")


def test_a_noisy_evaluator_adds_noise_of_the_given_size():
    import space

    config = space.load_space(REPO / QUICK).sample(seed=1)
    clean = landscapes.LandscapeEvaluator({"landscape": "ridge"})
    noisy = landscapes.LandscapeEvaluator({"landscape": "ridge", "noise_sd": 0.02})
    kw = dict(budget_epochs=1, device="cpu", workdir=None, resume_from=None)
    truth = clean.evaluate(config, seed=3, **kw)["score"]
    got = noisy.evaluate(config, seed=3, **kw)["score"]
    assert got == pytest.approx(truth + 0.02 * landscapes.noise(3, config.config_hash()))
    with pytest.raises(ValueError, match="noise_sd"):
        landscapes.LandscapeEvaluator({"landscape": "ridge", "noise_sd": -1})


def test_a_noisy_run_is_scored_by_the_true_accuracy_of_its_observed_front():
    """Two configs: the worse one (true) reads better (a lucky draw) at the same cost, so it alone
    is on the observed front; the ratio is its true accuracy's hypervolume, not the reading's."""
    import space
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    sp = space.load_space(REPO / QUICK)
    configs = [sp.sample(seed=s) for s in range(40)]
    truth = {c.config_hash(): landscapes.ridge(c) for c in configs}
    good, bad = max(configs, key=lambda c: truth[c.config_hash()]), min(configs, key=lambda c: truth[c.config_hash()])
    scenario = bse.Scenario("t", QUICK, ("accuracy", "flops"), {})
    ref = np.array([-0.0, 10.0])
    exact = bse.ExactFront(ref, np.array([[-truth[good.config_hash()], 1.0]]), 0.0, 2, 2)
    exact.hypervolume = truth[good.config_hash()] * 9.0

    def trial(config, observed):
        return create_trial(state=TrialState.COMPLETE, values=[observed, 1.0], params={"x": 1},
                            distributions={"x": IntDistribution(0, 2)}, user_attrs={"config": config.to_dict()})

    trials = [trial(good, truth[good.config_hash()]), trial(bad, 0.999)]
    ratio = bse.true_front_ratio(trials, scenario, exact, "ridge")
    assert ratio[0] == pytest.approx(1.0)
    assert ratio[1] == pytest.approx(truth[bad.config_hash()] / truth[good.config_hash()])


def test_the_summary_gives_the_gap_to_random_search_over_paired_seeds(tmp_path):
    """A strategy's line carries, per count, the mean over the seeds both ran of its ratio minus
    random search's, and the standard error; a seed random search did not run is left out. The
    default strategy is named by the sampler the scenario's study gets."""
    def run(strategy, seed, ratio):
        return {"scenario": "quickstart", "landscape": "l", "strategy": strategy, "seed": seed, "hv_ratio": ratio,
                "trained": len(ratio), "command": "x", "date": "d", "load": 1.0, "commit": "c"}
    rows = [run("default", 0, [0.5] * 10 + [0.8] * 15), run("default", 1, [0.4] * 10 + [0.9] * 15),
            run("default", 2, [0.1] * 25),                     # no random run with seed 2
            run("random", 0, [0.5] * 10 + [0.7] * 15), run("random", 1, [0.4] * 10 + [0.6] * 15)]
    args = type("Args", (), {"argv": [], "trials": 25, "study": None})()
    bse.write_summary(rows, args, tmp_path / "summary.jsonl")
    lines = {json.loads(line)["strategy"]: json.loads(line) for line in (tmp_path / "summary.jsonl").read_text().splitlines()}
    mine = lines["frontier"]
    assert mine["gap_10"] == 0.0 and mine["gap_10_se"] == 0.0
    assert mine["gap_25"] == pytest.approx(0.2) and mine["gap_25_se"] == pytest.approx(0.1)
    assert lines["random"]["gap_25"] is None
    assert bse.summary_label("quickstart", "default|parallel=16") == "frontier"
    assert bse.summary_label("quickstart", "random|rungs=1,4") == "random"
