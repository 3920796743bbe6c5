"""The second real image set for the supernet's fidelity runs (issue 19): photo patches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nas.sample_sets import PHOTO_PATCHES_SIZES, write_photo_patches


def test_photo_patches_are_an_image_folder_with_disjoint_splits(tmp_path):
    root = write_photo_patches(tmp_path / "photos", train_per_class=12, val_per_class=4)
    for split, per_class in (("train", 12), ("val", 4)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert len(classes) == PHOTO_PATCHES_SIZES["classes"]
        assert classes[0] == "china_r0c0" and classes[-1] == "flower_r1c2"
        assert all(len(list((root / split / c).glob("*.png"))) == per_class for c in classes)
    image = np.asarray(Image.open(root / "train" / "china_r0c0" / "0000.png"))
    assert image.shape == (32, 32, 3) and image.std() > 0
    import csv

    rows = list(csv.DictReader((root / "positions.csv").open()))
    assert len(rows) == 12 * (12 + 4)
    train = [r for r in rows if r["split"] == "train"]
    for v in (r for r in rows if r["split"] == "val"):   # no validation pixel in a training patch
        for t in train:
            if t["class"] == v["class"]:
                dy, dx = abs(int(t["y"]) - int(v["y"])), abs(int(t["x"]) - int(v["x"]))
                assert dy >= 32 or dx >= 32, (v, t)
    assert write_photo_patches(root) == root   # complete: written once


def test_a_patch_larger_than_a_block_is_refused(tmp_path):
    with pytest.raises(ValueError, match="patch=80 does not fit"):
        write_photo_patches(tmp_path / "p", patch=80)


def test_the_data_pipeline_reads_it(tmp_path):
    from nas.data import load_dataset

    root = write_photo_patches(tmp_path / "photos", train_per_class=4, val_per_class=2)
    data = load_dataset({"kind": "imagefolder", "path": str(root)}, 32)
    assert data.num_classes == 12 and len(data.train) == 48 and len(data.val) == 24
