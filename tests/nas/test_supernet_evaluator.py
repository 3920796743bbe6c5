"""The `supernet` evaluator (issue 19): inherited weights, batch norm re-estimated, in seconds."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nas.evaluators import TrialError, get_evaluator
from test_supernet_train import TINY_SPACE

DATA = {"kind": "procedural", "train_size": 32, "val_size": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny supernet trained one epoch (module-wide: about ten seconds on an idle CPU)."""
    from nas.supernet.train import train_supernet

    tmp = tmp_path_factory.mktemp("supernet")
    (tmp / "tiny.yaml").write_text(TINY_SPACE)
    train_supernet(tmp / "tiny.yaml", DATA, tmp / "sn", epochs=1, threads=1,
                   train_settings={"batch_size": 16, "eval_batch_size": 16, "bn_recalibration_batches": 1})
    return tmp


def configs(folder):
    from space import load_space

    space = load_space(folder / "tiny.yaml")
    return space, [space.sample(random.Random(i)) for i in range(3)]


def test_scores_a_config(trained):
    ev = get_evaluator("supernet", {"weights": str(trained / "sn"), "threads": 1})
    assert ev.metric == "accuracy" and ev.rungs == []
    assert ev.settings["dataset"]["train_size"] == 32 and ev.settings["resolution"] == [32, 32]
    _, (config, *_) = configs(trained)
    result = ev.evaluate(config, seed=0)
    assert 0.0 <= result["score"] <= 1.0 and result["history"] == [result["score"]]
    assert math.isfinite(result["val_loss"][0]) and result["val_loss"][0] > 0
    assert result["epochs"] == 0 and result["weights"] is None and result["wall_s"] > 0
    assert result["dataset"]["val_size"] == 16
    assert ev.evaluate(config, seed=0)["val_loss"] == result["val_loss"]   # deterministic per seed


def test_bn_re_estimation_changes_the_statistics(trained):
    """With re-estimation the sub-network's BN statistics are its own: the loss moves."""
    from nas.data import load_dataset
    from nas.evaluators import fit_to_data
    from nas.training import Recipe
    from overlock.supernet import Supernet

    net = Supernet.load(trained / "sn" / "supernet.safetensors")
    _, (config, *_) = configs(trained)
    data = load_dataset(DATA, (32, 32))
    model = net.extract(net.fit(fit_to_data(config, data)))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    Recipe.from_settings({"batch_size": 16, "bn_recalibration_batches": 2}).reestimate_bn(
        model, data.train, seed=0)
    assert any(not torch.allclose(b, m.running_mean) for b, m in zip(before, norms))

    scores = {}
    for batches in (0, 2):
        ev = get_evaluator("supernet", {"weights": str(trained / "sn"), "bn_recalibration_batches": batches,
                                        "batch_size": 16})
        scores[batches] = ev.evaluate(config, seed=0)["val_loss"][0]
    assert scores[0] != scores[2]


@pytest.mark.parametrize("settings, needle", [
    ({}, "weights is required"),
    ({"weights": "/nonexistent/supernet"}, "no supernet.safetensors and no card.json"),
    ({"weights": "SN", "bn_recalibration_batches": -1}, "bn_recalibration_batches=-1"),
    ({"weights": "SN", "epochs": 3}, "unknown setting 'epochs'"),
])
def test_bad_settings_are_one_line(trained, settings, needle):
    settings = {k: str(trained / "sn") if v == "SN" else v for k, v in settings.items()}
    with pytest.raises(ValueError) as info:
        get_evaluator("supernet", settings)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_config_outside_the_supernet_is_a_trial_error(trained):
    _, (config, *_) = configs(trained)
    ev = get_evaluator("supernet", {"weights": str(trained / "sn")})
    with pytest.raises(TrialError, match="not in"):
        ev.evaluate(config.replace(widths=[64, 128, 256, 256]), seed=0)


def test_a_study_file_takes_the_supernet_evaluator(trained):
    from nas.study import parse_study

    study = parse_study({
        "name": "supernet-scored", "space": str(trained / "tiny.yaml"), "objectives": ["accuracy", "flops"],
        "evaluator": {"name": "supernet", "weights": str(trained / "sn")}, "trials": 5})
    assert study.file.evaluator.metric == "accuracy"
    ev = get_evaluator(study.file.evaluator.name, study.file.evaluator.settings)
    assert ev.settings["weights"] == str(trained / "sn")


def test_the_supernet_gates_training(trained):
    """`proxy_gate: {proxy: supernet, weights: DIR}`: configs are scored by inherited weights and,
    once `min_trials` have a score, one below the bottom quantile is not trained."""
    from nas.gate import ProxyGate
    from nas.study import StudyFileError, parse_study

    base = {"name": "gated", "space": str(trained / "tiny.yaml"), "objectives": ["accuracy", "flops"],
            "evaluator": {"name": "train", "dataset": DATA}, "trials": 5}
    study = parse_study({**base, "proxy_gate": {"proxy": "supernet", "weights": str(trained / "sn"),
                                                "min_trials": 2, "drop_bottom": 0.5}})
    settings = study.proxy_gate
    gate = ProxyGate(settings.proxy, settings.drop_bottom, settings.min_trials, DATA,
                     settings.batch_size, None, settings.weights)
    space, _ = configs(trained)
    scored = [gate.check(space.sample(random.Random(i)), seed=0) for i in range(6)]
    assert all(score is not None and 0.0 <= score <= 1.0 for score, _ in scored)
    assert all(reason is None for _, reason in scored[:2])          # still learning the scores
    cut = [reason for _, reason in scored[2:] if reason is not None]
    assert all("supernet" in r and "not trained" in r for r in cut)
    with pytest.raises(StudyFileError, match="proxy_gate: weights"):
        parse_study({**base, "proxy_gate": {"proxy": "supernet"}})
    with pytest.raises(StudyFileError, match="proxy_gate: weights"):
        parse_study({**base, "proxy_gate": {"proxy": "synflow", "weights": "x"}})
