"""The train evaluator's accuracy on real images (issue 12): correct, stable, and labelled.

Real images: scikit-learn's digits written as an ImageFolder (nas.sample_sets), read through the
same `dataset: {kind: imagefolder, path: ...}` path as a user's folder.
"""

import math

import pytest
import torch

from overlock import OverLoCK, OverLoCKConfig

pytest.importorskip("sklearn")

from nas.data import MemorySplit, load_dataset, resolve_augment  # noqa: E402
from nas.evaluators import get_evaluator  # noqa: E402
from nas.training import Recipe  # noqa: E402
from nas.sample_sets import DIGITS_SIZES, write_digits  # noqa: E402

TINY32 = dict(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1), widths=(16, 32, 64, 64),
              focus_heads=(1, 1), head_width=64, reparam_kernels=(5, 5, 7, 7), dynamic_kernels=(7, 5),
              small_kernel=3, region_count=3, resolution=(32, 32), num_classes=10)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return str(write_digits(tmp_path_factory.mktemp("digits")))


def _norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def _oracle_accuracy(model, data) -> float:
    """Validation accuracy with batch-norm statistics averaged over the *whole* training split
    (unaugmented): the number the evaluator's few-batch re-estimate stands in for."""
    for m in _norms(model):
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _ in data.train.batches(256):
        model(x)
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.val.batches(256))
    return correct / len(data.val)


def test_digits_folder_is_the_documented_split(digits):
    data = load_dataset({"kind": "imagefolder", "path": digits}, 32)
    assert (len(data.train), len(data.val), data.num_classes) == (DIGITS_SIZES["train"], DIGITS_SIZES["val"], 10)


def test_real_images_give_a_correct_stable_accuracy(digits, tmp_path):
    """Regression for issue 12: with defaults, the score is the model's real accuracy (batch-norm
    statistics of the whole class mix), high, and does not swing between epochs. Before the fix
    the statistics came from the first training batches in file order (classes 0 and 1 only)."""
    settings = {"dataset": {"kind": "imagefolder", "path": digits}, "epochs": 4, "lr": 2e-3,
                "warmup_epochs": 0.5}
    ev = get_evaluator("train", settings)
    config = OverLoCKConfig(**TINY32)
    result = ev.evaluate(config, budget_epochs=None, seed=0, workdir=str(tmp_path))
    history = result["history"]

    from safetensors.torch import load_file

    model = OverLoCK(config)
    model.load_state_dict(load_file(result["weights"]))
    oracle = _oracle_accuracy(model, load_dataset(settings["dataset"], 32))
    assert abs(history[-1] - oracle) <= 0.03, (history, oracle)
    assert history[-1] >= 0.85, history
    drops = [a - b for a, b in zip(history[1:], history[2:])]
    assert max(drops) <= 0.05, history   # no swing once training is under way


def test_recalibration_sees_every_class_of_a_sorted_folder():
    """Folders list images class by class: the re-estimate must not read the first batches."""
    dark = torch.zeros(256, 3, 8, 8, dtype=torch.uint8)
    light = torch.full((256, 3, 8, 8), 255, dtype=torch.uint8)
    split = MemorySplit(torch.cat([dark, light]), torch.tensor([0] * 256 + [1] * 256), (8, 8), kind="imagefolder")
    bn = torch.nn.BatchNorm2d(3)
    recipe = Recipe.from_settings({"batch_size": 32, "bn_recalibration_batches": 4})
    recipe.reestimate_bn(torch.nn.Sequential(bn), split, seed=0)
    # dark images normalise to -2, light to +2: a mixed sample averages near 0
    assert bn.running_mean.abs().max() < 0.8, bn.running_mean


def test_recalibration_is_deterministic_and_covers_the_aux_head():
    """Drop path stays off while statistics are re-estimated (same seed -> same statistics), and
    the aux head's norm is re-estimated, not left at its reset value."""
    config = OverLoCKConfig(**TINY32)
    model = OverLoCK(config, drop_path_rate=0.5)
    data = load_dataset({"kind": "procedural", "train_size": 64, "val_size": 16}, 32)
    recipe = Recipe.from_settings({"batch_size": 16, "bn_recalibration_batches": 2})
    stats = []
    for _ in range(2):
        recipe.reestimate_bn(model, data.train, seed=3)
        stats.append([m.running_var.clone() for m in _norms(model)])
    for a, b in zip(*stats):
        torch.testing.assert_close(a, b)
    aux_bn = model.aux_head[0]
    assert not torch.allclose(aux_bn.running_var, torch.ones_like(aux_bn.running_var))
    assert not model.training and all(not m.training for m in model.modules())


def test_flip_is_a_per_data_set_choice():
    assert resolve_augment(True, "imagefolder")["hflip"] is False      # orientation may be the class
    assert resolve_augment({"hflip": True}, "imagefolder")["hflip"] is True
    assert resolve_augment(True, "cifar")["hflip"] is True              # natural photographs
    assert resolve_augment(True, "procedural")["hflip"] is True         # mirror-symmetric classes


def test_score_names_its_data_set(digits, tmp_path):
    """Issue 12 §4: the result says which images the accuracy comes from (the engine stores it as
    the trial's `dataset` attr; the report and the model card show it)."""
    config = OverLoCKConfig(**TINY32)
    ev = get_evaluator("train", {"dataset": {"kind": "imagefolder", "path": digits, "train_size": 40,
                                             "val_size": 20}, "epochs": 1, "save_weights": False})
    record = ev.evaluate(config, budget_epochs=None, seed=0, workdir=str(tmp_path))["dataset"]
    assert record["kind"] == "imagefolder" and record["path"] == digits
    assert (record["classes"], record["train_size"], record["val_size"], record["resolution"]) == (10, 40, 20, [32, 32])
    assert record["augment"]["hflip"] is False
    assert digits in record["description"] and "32x32" in record["description"]

    proxy = get_evaluator("synflow", {"dataset": {"kind": "procedural", "train_size": 32, "val_size": 16}})
    record = proxy.evaluate(config, seed=0)["dataset"]
    assert record["kind"] == "procedural" and record["classes"] == 10 and "procedural" in record["description"]
    assert math.isfinite(proxy.evaluate(config, seed=0)["score"])
