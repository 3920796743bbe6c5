"""The second real image set for the supernet's fidelity runs (issue 19): photo patches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nas.sample_sets import PHOTO_PATCHES_SIZES, write_photo_patches
from support.benchmarks import load_benchmark


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


def test_photo_regions_are_six_surfaces_with_disjoint_splits(tmp_path):
    from nas.sample_sets import PHOTO_REGIONS, PHOTO_REGIONS_SIZES, write_photo_regions

    root = write_photo_regions(tmp_path / "regions", train_per_class=10, val_per_class=4)
    for split, per_class in (("train", 10), ("val", 4)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == sorted(PHOTO_REGIONS) and len(classes) == PHOTO_REGIONS_SIZES["classes"]
        assert all(len(list((root / split / c).glob("*.png"))) == per_class for c in classes)
    import csv

    rows = list(csv.DictReader((root / "positions.csv").open()))
    assert len(rows) == 6 * (10 + 4)
    for r in rows:   # every crop inside its class's rectangle
        _, top, bottom, left, right = PHOTO_REGIONS[r["class"]]
        assert top <= int(r["y"]) <= bottom - 16 and left <= int(r["x"]) <= right - 16, r
    train = [r for r in rows if r["split"] == "train"]
    for v in (r for r in rows if r["split"] == "val"):   # no validation pixel in a training crop
        for t in (t for t in train if t["class"] == v["class"]):
            assert abs(int(t["y"]) - int(v["y"])) >= 16 or abs(int(t["x"]) - int(v["x"])) >= 16, (v, t)
    # the crop is the photo's pixels at the recorded place
    from sklearn.datasets import load_sample_images

    photos = {p.split("/")[-1].split(".")[0]: im for im, p in zip(load_sample_images().images,
                                                                    load_sample_images().filenames)}
    first = rows[0]
    y, x = int(first["y"]), int(first["x"])
    image = np.asarray(Image.open(root / first["split"] / first["class"] / first["file"]))
    assert np.array_equal(image, photos[PHOTO_REGIONS[first["class"]][0]][y:y + 16, x:x + 16])
    again = write_photo_regions(tmp_path / "again", train_per_class=10, val_per_class=4)
    assert (again / "positions.csv").read_text() == (root / "positions.csv").read_text()   # seeded


def test_photo_regions_refuse_a_patch_larger_than_a_block_or_too_few_blocks(tmp_path):
    from nas.sample_sets import write_photo_regions

    with pytest.raises(ValueError, match="patch=40 does not fit a block of 24"):
        write_photo_regions(tmp_path / "p", patch=40)
    with pytest.raises(ValueError, match="region 'lake' .55x180. holds fewer than 3 blocks of 60"):
        write_photo_regions(tmp_path / "q", block=60)


def test_every_sample_set_is_accepted_by_the_cli_and_the_benchmark(tmp_path, monkeypatch):
    from nas import sample_sets
    from nas.commands.supernet import SAMPLE_SETS as CLI_SETS
    from nas.commands.supernet import parse_dataset

    module = load_benchmark("bench_proxy_fidelity")
    written = []
    for name in sample_sets.SAMPLE_SETS:   # record the writer called, write nothing
        monkeypatch.setitem(sample_sets.SAMPLE_SETS, name, lambda root, name=name: written.append(name) or root)
    assert set(CLI_SETS) == set(sample_sets.SAMPLE_SETS) == {"digits", "photo-patches", "photo-regions", "mnist-5k"}
    monkeypatch.chdir(tmp_path)
    for name in CLI_SETS:   # stored absolute on the card: a study may score from elsewhere
        assert parse_dataset(name, "out")["path"] == str(tmp_path / "out" / "data" / name)
        assert module.resolve_dataset(name, tmp_path)["path"].endswith(name)
    assert written == [n for n in CLI_SETS for _ in range(2)]
    assert parse_dataset("{kind: imagefolder, path: pets}", "out")["path"] == str(tmp_path / "pets")
