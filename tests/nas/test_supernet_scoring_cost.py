"""Cheaper supernet scoring (issue 19, cost): the splits kept in memory serve exactly the batches
the data set serves, so scores do not change; `val_images` validates on a fixed subset; bad
settings are one line."""

from __future__ import annotations

import random

import pytest
import torch

from nas.data import _load_cached, load_dataset
from nas.data.procedural import write_imagefolder
from nas.evaluators import get_evaluator
from nas.supernet.score import KeptSplit, keep_split
from test_supernet_evaluator import DATA, configs, trained  # noqa: F401 - the module fixture


@pytest.fixture()
def fresh_data():
    """load_dataset caches per process: each test reads its splits afresh."""
    _load_cached.cache_clear()
    yield
    _load_cached.cache_clear()


@pytest.fixture(scope="module")
def folder_with_a_bad_image(tmp_path_factory):
    """A small streamed ImageFolder (JPEGs of 40x48) holding one file that does not decode."""
    root = tmp_path_factory.mktemp("folder")
    write_imagefolder(str(root), 6, size=(40, 48), num_classes=3, seed=0)
    (root / "disk" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    return {"kind": "imagefolder", "path": str(root), "workers": 0, "val_fraction": 0.25, "seed": 1}


def _same_batches(kept, fresh_split, **kwargs) -> int:
    got = list(kept.batches(**kwargs))
    want = list(fresh_split.batches(**kwargs))
    assert len(got) == len(want)
    for (x, y), (fx, fy) in zip(got, want):
        assert torch.equal(x, fx) and torch.equal(y, fy)
    return len(got)


@pytest.mark.parametrize("which", ["procedural", "folder"])
def test_a_kept_split_serves_the_batches_a_fresh_split_serves(which, folder_with_a_bad_image, fresh_data):
    settings = DATA if which == "procedural" else folder_with_a_bad_image
    unreadable = 0
    for split_name in ("train", "val"):
        kept = keep_split(getattr(load_dataset(settings, 32), split_name), batch_size=5)
        _load_cached.cache_clear()
        fresh = getattr(load_dataset(settings, 32), split_name)   # decoded again from the files
        assert isinstance(kept, KeptSplit) and len(kept) == len(fresh)
        served = 0
        for seed in (0, 1, 7):
            for size, most in ((4, 3), (6, None), (64, 1)):
                served += _same_batches(kept, fresh, batch_size=size, shuffle=True, seed=seed, max_batches=most)
        served += _same_batches(kept, fresh, batch_size=3)
        assert served > 10
        assert list(kept.skipped) == list(fresh.skipped)
        unreadable += len(kept) - len(kept.images)
    assert unreadable == (1 if which == "folder" else 0)   # left out of its batch, as streaming does


def test_a_kept_split_refuses_augmentation(fresh_data):
    kept = keep_split(load_dataset(DATA, 32).val)
    with pytest.raises(ValueError, match="augment=False only"):
        next(kept.batches(4, augment=True))


def test_kept_and_streamed_scoring_give_the_same_scores(trained, fresh_data):  # noqa: F811
    weights = str(trained / "sn")
    kept = get_evaluator("supernet", {"weights": weights, "batch_size": 8, "eval_batch_size": 8})
    streamed = get_evaluator("supernet", {"weights": weights, "batch_size": 8, "eval_batch_size": 8,
                                          "keep_data_mb": 0})
    _, chosen = configs(trained)
    for seed in (0, 3):
        for config in chosen:
            a, b = kept.evaluate(config, seed=seed), streamed.evaluate(config, seed=seed)
            assert (a["score"], a["val_loss"]) == (b["score"], b["val_loss"])
            assert a["dataset"] == b["dataset"]
    data = kept.data()
    assert isinstance(data.train, KeptSplit) and isinstance(data.val, KeptSplit)
    assert not isinstance(streamed.data().train, KeptSplit)


def test_a_split_over_the_memory_limit_is_streamed(trained, fresh_data):  # noqa: F811
    """300 training images at 32x32 are 3.5 MB: over a 1 MB limit, streamed; the 16 validation
    images are kept."""
    ev = get_evaluator("supernet", {"weights": str(trained / "sn"), "keep_data_mb": 1,
                                    "dataset": dict(DATA, train_size=300)})
    data = ev.data()
    assert not isinstance(data.train, KeptSplit) and isinstance(data.val, KeptSplit)
    _, (config, *_) = configs(trained)
    assert 0.0 <= ev.evaluate(config, seed=0)["score"] <= 1.0


def test_the_default_scoring_is_the_measured_one(trained, folder_with_a_bad_image):  # noqa: F811
    """docs/explanation/supernet.md "Cost": BN re-estimated on 4 x 32 images, at most 300 validation images,
    the data kept in memory; the settings whose ranking fidelity was measured equal to 4 x 64 and
    to every validation image. The card's data set here is procedural (its val_size is how many
    images it generates, not a subset): validated whole."""
    s = get_evaluator("supernet", {"weights": str(trained / "sn")}).settings
    assert (s["bn_recalibration_batches"], s["batch_size"], s["val_images"], s["keep_data_mb"]) == (4, 32, None, 256)
    folder = get_evaluator("supernet", {"weights": str(trained / "sn"), "dataset": folder_with_a_bad_image}).settings
    assert folder["val_images"] == 300 and folder["dataset"]["val_size"] == 300


@pytest.mark.parametrize("dataset, expected", [
    ({"kind": "imagefolder", "path": "/d"}, 300),                       # a subset of at most 300
    ({"kind": "imagefolder", "path": "/d", "val_size": 1000}, 300),
    ({"kind": "cifar", "path": "/d"}, 300),
    ({"kind": "imagefolder", "path": "/d", "val_size": 300}, None),     # already as small
    ({"kind": "imagefolder", "path": "/d", "val_size": 120}, None),
    ({"kind": "imagefolder", "path": "/d", "val_per_class": 20}, None),  # picked per class
    ({"kind": "procedural", "val_size": 1000}, None),                   # generated, not a subset
    ({"val_size": 1000}, None),                                         # procedural by default
])
def test_the_default_validation_subset(dataset, expected):
    from nas.evaluators.supernet import _default_val_images

    assert _default_val_images(dataset) == expected


def test_val_images_all_validates_every_image(trained, folder_with_a_bad_image):  # noqa: F811
    for every in ("all", None):
        s = get_evaluator("supernet", {"weights": str(trained / "sn"), "dataset": folder_with_a_bad_image,
                                       "val_images": every}).settings
        assert s["val_images"] is None and "val_size" not in s["dataset"]


def test_val_images_validates_on_a_fixed_subset(trained, fresh_data):  # noqa: F811
    weights = str(trained / "sn")
    ev = get_evaluator("supernet", {"weights": weights, "val_images": 8})
    assert ev.settings["dataset"]["val_size"] == 8
    _, (config, *_) = configs(trained)
    first = ev.evaluate(config, seed=0)
    assert first["dataset"]["val_size"] == 8 and len(ev.data().val) == 8
    assert ev.evaluate(config, seed=5)["dataset"] == first["dataset"]   # the same images every trial


@pytest.mark.parametrize("settings, needle", [
    ({"val_images": 0}, "val_images=0 must be an integer >= 1"),
    ({"val_images": 2.5}, "val_images=2.5 must be an integer"),
    ({"val_images": 17}, "val_images=17 is more than the data set's val_size=16"),
    ({"val_images": 4, "dataset": "FOLDER"}, "val_per_class=2 are exclusive"),
    ({"keep_data_mb": -1}, "keep_data_mb=-1 must be an integer >= 0"),
    ({"keep_data_mb": True}, "keep_data_mb=True"),
])
def test_bad_cost_settings_are_one_line(trained, folder_with_a_bad_image, settings, needle):  # noqa: F811
    if settings.get("dataset") == "FOLDER":
        settings = dict(settings, dataset=dict(folder_with_a_bad_image, val_per_class=2))
    with pytest.raises(ValueError) as info:
        get_evaluator("supernet", {"weights": str(trained / "sn"), **settings})
    assert needle in str(info.value) and "\n" not in str(info.value)
