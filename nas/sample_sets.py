"""Small real image sets that installed packages ship, written as ImageFolders.

No data set can be downloaded at run time, yet tests and benchmarks need real images (not only the
procedural set) to show that the train evaluator's accuracy means something. scikit-learn ships
one: `load_digits`, 1,797 grey 8x8 scans of handwritten digits (10 classes). `write_digits` writes
it as a `train/<class>/*.png` + `val/<class>/*.png` folder (stratified 80/20: 1,437 / 360 images),
so it is read through the same `dataset: {kind: imagefolder, path: ...}` path a user's folder is.

    >>> from nas.sample_sets import write_digits
    >>> root = write_digits("/tmp/digits")                 # doctest: +SKIP
    >>> # evaluator: {name: train, dataset: {kind: imagefolder, path: /tmp/digits}}
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_digits", "DIGITS_SIZES"]

DIGITS_SIZES = {"train": 1437, "val": 360}


def write_digits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write scikit-learn's digits under `root` as `train/` and `val/` ImageFolders of 8x8 PNGs.

    Pixel values 0..16 are scaled to 0..255. The split is stratified and deterministic in `seed`.
    Does nothing if `root/train` and `root/val` are already complete. Returns `root` as a Path.

    Raises:
        ImportError: scikit-learn is not installed (it is in the `test` extra).
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    marker = root / ".complete"
    if marker.is_file():
        return root
    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    index = np.arange(len(images))
    train_idx, val_idx = train_test_split(index, test_size=val_fraction, random_state=seed,
                                          stratify=digits.target)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for i in sorted(idx.tolist()):
            folder = root / split / str(int(digits.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    marker.write_text("scikit-learn load_digits\n")
    return root
