"""CIFAR-style folders of python pickles (CIFAR-10: data_batch_* + test_batch; CIFAR-100: train +
test, fine labels), as the authors distribute them; kept in memory (`MemorySplit`)."""

from __future__ import annotations

import glob
import math
import os
import pickle

import torch
from torch import Tensor

from .folder import subset
from .memory import Dataset, MemorySplit
from .spec import DataError, DatasetSpec


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"cannot read CIFAR batch {path!r}: {e}") from None


def _cifar_arrays(files: list[str]) -> tuple[Tensor, Tensor]:
    import numpy as np

    data, labels = [], []
    for path in files:
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in _unpickle(path).items()}
        label_key = next((k for k in ("labels", "fine_labels") if k in batch), None)
        if "data" not in batch or label_key is None:
            raise DataError(f"CIFAR batch {path!r} has no 'data' / 'labels' entries")
        data.append(np.asarray(batch["data"], dtype=np.uint8))
        labels.extend(int(v) for v in batch[label_key])
    array = np.concatenate(data)
    side = int(round(math.sqrt(array.shape[1] / 3)))
    if side * side * 3 != array.shape[1]:
        raise DataError(f"CIFAR rows of {array.shape[1]} values are not 3 x side x side images")
    return torch.from_numpy(array.reshape(-1, 3, side, side).copy()), torch.tensor(labels)


def load_cifar(spec: DatasetSpec, resolution) -> Dataset:
    root = spec.path
    train_files = sorted(glob.glob(os.path.join(root, "data_batch_*")))
    test_files = [os.path.join(root, "test_batch")]
    if not train_files and os.path.isfile(os.path.join(root, "train")):   # CIFAR-100
        train_files, test_files = [os.path.join(root, "train")], [os.path.join(root, "test")]
    if not train_files:
        raise DataError(f"dataset.path={root!r} has no CIFAR batches (data_batch_* + test_batch, "
                        "or train + test)")
    missing = [p for p in test_files if not os.path.isfile(p)]
    if missing:
        raise DataError(f"dataset.path={root!r} lacks {os.path.basename(missing[0])!r}")
    train_images, train_labels = _cifar_arrays(train_files)
    val_images, val_labels = _cifar_arrays(test_files)
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    check_classes(spec, num_classes)
    ti = subset(train_labels, spec.train_size, spec.train_per_class, spec.seed)
    vi = subset(val_labels, spec.val_size, spec.val_per_class, spec.seed + 1)
    names = tuple(str(i) for i in range(num_classes))
    meta = os.path.join(root, "batches.meta")
    if os.path.isfile(meta):
        raw = _unpickle(meta).get(b"label_names")
        if raw and len(raw) == num_classes:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
    return Dataset(MemorySplit(train_images[ti], train_labels[ti], resolution, "cifar"),
                   MemorySplit(val_images[vi], val_labels[vi], resolution, "cifar"), num_classes, names,
                   f"cifar {root}, {num_classes} classes")


def check_classes(spec: DatasetSpec, found: int) -> None:
    if spec.num_classes is not None and spec.num_classes != found:
        raise DataError(f"dataset.num_classes={spec.num_classes} but {spec.path!r} has {found} classes")
