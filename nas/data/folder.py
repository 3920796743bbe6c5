"""An ImageFolder as a compact file table, and the subsets NAS proxies train on.

`FileTable` keeps every path of a split in one numpy byte buffer with offsets and the labels in
an int32 array: a few dozen bytes an image and three objects in all, so loader workers forked
from the trainer share it page for page (a list of Python strings would be copied into every
worker by reference counting) and memory does not grow with the data set.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from .spec import DataError, DatasetSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
VAL_DIRS = ("val", "validation", "test")


@dataclass(frozen=True)
class FileTable:
    """The images of one split: `root`, relative paths (bytes buffer + offsets) and labels."""

    root: str
    blob: np.ndarray      # uint8, every relative path in UTF-8, back to back
    offsets: np.ndarray   # int64, len + 1
    labels: np.ndarray    # int32

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode())

    def take(self, index: np.ndarray) -> "FileTable":
        index = np.asarray(index, dtype=np.int64)
        names = [self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes() for i in index]
        return _table(self.root, names, self.labels[index])

    def digest(self) -> str:
        """The decode cache's key: a hash of the root, the relative paths, the labels, and each
        file's size and modification time, so an image replaced under the same name (or a
        folder restored from a backup) is decoded again rather than read stale from the cache.
        One stat per file: 0.39 s per 100,000 files on this machine's disk (page cache warm).
        """
        h = hashlib.sha256(os.path.abspath(self.root).encode())
        h.update(self.offsets.tobytes())
        h.update(self.blob.tobytes())
        h.update(self.labels.tobytes())
        h.update(self.stamps().tobytes())
        return h.hexdigest()[:20]

    def stamps(self) -> np.ndarray:
        """(size, mtime in ns) of every file, int64 (n, 2); (-1, -1) for a file that is gone."""
        out = np.full((len(self), 2), -1, dtype=np.int64)
        for i in range(len(self)):
            try:
                st = os.stat(self.path(i))
            except OSError:
                continue
            out[i] = (st.st_size, st.st_mtime_ns)
        return out


def _table(root: str, names: list[bytes], labels) -> FileTable:
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(n) for n in names])
    blob = np.frombuffer(b"".join(names), dtype=np.uint8).copy()
    return FileTable(root, blob, offsets, np.asarray(labels, dtype=np.int32))


def read_class_list(path: str) -> list[str]:
    """Class directory names, one a line; blank lines and `#` comments ignored."""
    try:
        with open(path, encoding="utf-8") as fh:
            names = [line.split("#", 1)[0].strip() for line in fh]
    except OSError as e:
        raise DataError(f"dataset.class_list={path!r}: {e.strerror or e}") from None
    names = [n for n in names if n]
    if len(names) < 2:
        raise DataError(f"dataset.class_list={path!r} names {len(names)} classes (need >= 2)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"dataset.class_list={path!r} names {dup!r} twice")
    return names


def scan(root: str, classes: list[str] | None = None, setting: str = "dataset.path") -> tuple[list[str], FileTable]:
    """Classes (sorted sub-directories, or `classes` in that order) and their images under root.

    Raises DataError (one line) for fewer than two classes, a listed class that is missing, or
    a class without images."""
    present = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        classes = present
    else:
        missing = [c for c in classes if c not in set(present)]
        if missing:
            raise DataError(f"dataset.class_list: class {missing[0]!r} is not a directory of {root!r}"
                            f" ({len(missing)} missing)")
    if len(classes) < 2:
        raise DataError(f"{setting}={root!r} needs one sub-directory per class (found {len(classes)})")
    names: list[bytes] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _images_under(root, name)
        if not found:
            raise DataError(f"{setting}={root!r}: class {name!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        names.extend(found)
        labels.extend([label] * len(found))
    return list(classes), _table(root, names, labels)


def _images_under(root: str, class_name: str) -> list[bytes]:
    out = []
    for dirpath, dirnames, files in os.walk(os.path.join(root, class_name)):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        out.extend(os.path.join(rel, f).encode() for f in sorted(files)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return out


# ------------------------------------------------------------------------------ subsets
def balanced_subset(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Indices of a deterministic, class-balanced (round-robin) subset of `size` items."""
    n = len(labels)
    if size is None or size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    # rank of each item within its class, in permuted order -> take low ranks of every class first
    shuffled = labels[perm]
    rank = torch.empty(n, dtype=torch.long)
    for c in shuffled.unique():
        pos = (shuffled == c).nonzero().flatten()
        rank[pos] = torch.arange(len(pos))
    order = torch.argsort(rank * (int(labels.max()) + 1) + shuffled, stable=True)
    return perm[order[:size]].sort().values


def per_class_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of at most `per_class` items of every class, a seeded choice, in file order."""
    if per_class is None:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    shuffled = labels[perm]
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for c in shuffled.unique():
        pos = (shuffled == c).nonzero().flatten()[:per_class]
        keep[perm[pos]] = True
    return keep.nonzero().flatten()


def subset(labels: torch.Tensor, size: int | None, per_class: int | None, seed: int) -> torch.Tensor:
    return per_class_subset(labels, per_class, seed) if per_class is not None \
        else balanced_subset(labels, size, seed)


def folder_splits(spec: DatasetSpec) -> tuple[list[str], FileTable, FileTable]:
    """Class names and the train / val file tables of an ImageFolder `spec` (subsets applied).

    Layouts: `path/<class>/...` (then `val_fraction` of every class is held out, seeded), or
    `path/train/<class>` with `path/val|validation|test/<class>`."""
    root = spec.path
    val_dir = next((os.path.join(root, d) for d in VAL_DIRS if os.path.isdir(os.path.join(root, d))), None)
    train_dir = os.path.join(root, "train") if os.path.isdir(os.path.join(root, "train")) else root
    if train_dir == root and val_dir is not None:
        raise DataError(f"dataset.path={root!r} has a {os.path.basename(val_dir)!r} directory but no 'train'")
    wanted = read_class_list(spec.class_list) if spec.class_list else None
    classes, table = scan(train_dir, wanted)
    labels = torch.from_numpy(table.labels.astype(np.int64))
    if val_dir is not None:
        if wanted is None and classes != sorted(e.name for e in os.scandir(val_dir)
                                                if e.is_dir() and not e.name.startswith(".")):
            raise DataError(f"dataset.path={root!r}: classes of {os.path.basename(val_dir)!r} differ from 'train'")
        _, val_table = scan(val_dir, classes)
        val_labels = torch.from_numpy(val_table.labels.astype(np.int64))
        train_idx = subset(labels, spec.train_size, spec.train_per_class, spec.seed)
        val_idx = subset(val_labels, spec.val_size, spec.val_per_class, spec.seed + 1)
    else:
        g = torch.Generator().manual_seed(spec.seed)
        is_val = torch.zeros(len(labels), dtype=torch.bool)
        for c in range(len(classes)):
            pos = (labels == c).nonzero().flatten()
            pos = pos[torch.randperm(len(pos), generator=g)]
            is_val[pos[:max(1, round(len(pos) * spec.val_fraction))]] = True
        train_pool, val_pool = (~is_val).nonzero().flatten(), is_val.nonzero().flatten()
        if len(train_pool) == 0:
            raise DataError(f"dataset.val_fraction={spec.val_fraction} leaves no training images in {root!r}")
        train_idx = train_pool[subset(labels[train_pool], spec.train_size, spec.train_per_class, spec.seed)]
        val_idx = val_pool[subset(labels[val_pool], spec.val_size, spec.val_per_class, spec.seed + 1)]
        val_table = table
    return classes, table.take(train_idx.numpy()), val_table.take(val_idx.numpy())
