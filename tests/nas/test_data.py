"""Data sets: the procedural set is deterministic and balanced; folders load; errors name the path."""

import os
import pickle

import numpy as np
import pytest
import torch

from nas.data import DataError, load_dataset, parse_dataset_settings, procedural_images


def test_procedural_is_deterministic_balanced_and_seeded():
    settings = {"kind": "procedural", "train_size": 40, "val_size": 20, "seed": 3}
    a = load_dataset(settings, 32)
    b = load_dataset(dict(settings), (32, 32))
    c = load_dataset({**settings, "seed": 4}, 32)
    assert a.num_classes == 10 and len(a.train) == 40 and len(a.val) == 20
    assert a.train.images.shape == (40, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.train.images, a.val.images[:20].repeat(2, 1, 1, 1))
    assert torch.bincount(a.train.labels, minlength=10).tolist() == [4] * 10


def test_procedural_any_resolution_and_fewer_classes():
    data = load_dataset({"num_classes": 4, "train_size": 16, "val_size": 8}, (48, 80))
    x, y = next(data.train.batches(16))
    assert x.shape == (16, 3, 48, 80) and set(y.tolist()) <= {0, 1, 2, 3}
    assert abs(float(x.mean())) < 2.0   # normalised, not raw 0..255
    assert data.class_names == ("disk", "x_cross", "triangle", "ring")


def test_procedural_classes_differ_by_shape_not_colour():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(50)
    images = procedural_images(labels, (32, 32), g, noise=0.0).float()
    # mean colour carries (almost) no class information ...
    colour = images.mean(dim=(2, 3)).reshape(10, 50, 3).mean(1)
    assert float(colour.std(0).max()) < 20
    # ... while the per-class mean foreground layout does: disk vs frame differ at the centre
    mask_centre = (images[:, :, 12:20, 12:20] - images.mean(dim=(2, 3), keepdim=True)).abs().mean((1, 2, 3))
    per_class = mask_centre.reshape(10, 50).mean(1)
    assert per_class[0] > per_class[6]   # a disk fills its centre, a frame leaves it empty


def test_batches_order_and_augmentation_depend_only_on_seed():
    data = load_dataset({"train_size": 24, "val_size": 8}, 32)
    first = [(x.clone(), y.clone()) for x, y in data.train.batches(8, shuffle=True, seed=5, augment=True)]
    again = list(data.train.batches(8, shuffle=True, seed=5, augment=True))
    other = list(data.train.batches(8, shuffle=True, seed=6, augment=True))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    assert data.train.steps(10, drop_last=True) == 2 and len(list(data.train.batches(10, drop_last=True))) == 2


def _write_images(root, classes, per_class, size=(20, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(os.path.join(root, c, f"{i}.png"))


def test_imagefolder_with_held_out_split(tmp_path):
    _write_images(tmp_path, ["cat", "dog", "eel"], 5)
    data = load_dataset({"kind": "imagefolder", "path": str(tmp_path), "val_fraction": 0.4}, 32)
    assert data.num_classes == 3 and data.class_names == ("cat", "dog", "eel")
    assert len(data.train) == 9 and len(data.val) == 6
    x, _ = next(data.train.batches(9, augment=True))
    assert x.shape == (9, 3, 32, 32) and data.in_chans == 3
    assert torch.bincount(data.val.labels).tolist() == [2, 2, 2]


def test_imagefolder_with_train_and_val_dirs_and_subsets(tmp_path):
    _write_images(tmp_path / "train", ["a", "b"], 6)
    _write_images(tmp_path / "val", ["a", "b"], 3)
    data = load_dataset({"kind": "imagefolder", "path": str(tmp_path), "train_size": 4}, (32, 48))
    assert len(data.train) == 4 and torch.bincount(data.train.labels).tolist() == [2, 2]
    assert len(data.val) == 6 and next(data.val.batches(6))[0].shape == (6, 3, 32, 48)


def _write_cifar(root, n_train=20, n_test=10, classes=10):
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        batch = {b"data": rng.integers(0, 255, size=(n, 3072), dtype=np.uint8),
                 b"labels": [i % classes for i in range(n)]}
        with open(os.path.join(root, name), "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar_folder(tmp_path):
    _write_cifar(tmp_path)
    data = load_dataset({"kind": "cifar", "path": str(tmp_path), "val_size": 5}, 32)
    assert data.num_classes == 10 and len(data.train) == 20 and len(data.val) == 5
    x, y = next(data.val.batches(5))
    assert x.shape == (5, 3, 32, 32)
    with pytest.raises(DataError, match="num_classes=7"):
        load_dataset({"kind": "cifar", "path": str(tmp_path), "num_classes": 7}, 32)


@pytest.mark.parametrize("settings, message", [
    ({"kind": "imagefolder", "path": "/no/such/dir"}, "dataset.path='/no/such/dir' is not a directory"),
    ({"kind": "cifar"}, "dataset.path is required"),
    ({"kind": "lmdb"}, "dataset.kind='lmdb'"),
    ({"train_size": 0}, "dataset.train_size=0"),
    ({"colour": "red"}, "dataset.colour: unknown key"),
    ({"num_classes": 11}, "dataset.num_classes=11"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(DataError) as info:
        parse_dataset_settings(settings)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_folder_without_classes_is_an_error(tmp_path):
    with pytest.raises(DataError, match="one sub-directory per class"):
        load_dataset({"kind": "imagefolder", "path": str(tmp_path)}, 32)
    with pytest.raises(DataError, match="no CIFAR batches"):
        load_dataset({"kind": "cifar", "path": str(tmp_path)}, 32)
