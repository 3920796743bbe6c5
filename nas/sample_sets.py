"""Small real image sets that installed packages ship, written as ImageFolders.

No data set can be downloaded at run time, yet tests and benchmarks need real images (not only the
procedural set) to show that the train evaluator's accuracy means something. scikit-learn ships
one: `load_digits`, 1,797 grey 8x8 scans of handwritten digits (10 classes). `write_digits` writes
it as a `train/<class>/*.png` + `val/<class>/*.png` folder (stratified 80/20: 1,437 / 360 images),
so it is read through the same `dataset: {kind: imagefolder, path: ...}` path a user's folder is.

    >>> from nas.sample_sets import write_digits
    >>> root = write_digits("/tmp/digits")                 # doctest: +SKIP
    >>> # evaluator: {name: train, dataset: {kind: imagefolder, path: /tmp/digits}}

A second, harder set from real photographs: scikit-learn also ships two photos
(`load_sample_images`: china.jpg and flower.jpg, 427x640 RGB). `write_photo_patches` cuts each into
a grid of regions, one class per region (12 classes), and samples square patches from them: the
class is told by the region's colours and textures (roof tiles, leaves, sky, petals...). Train and
validation patches come from disjoint blocks of each region, so no validation pixel is seen in
training.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_digits", "DIGITS_SIZES", "write_photo_patches", "PHOTO_PATCHES_SIZES"]

DIGITS_SIZES = {"train": 1437, "val": 360}
PHOTO_PATCHES_SIZES = {"train": 1440, "val": 360, "classes": 12}


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


def write_photo_patches(root: str | os.PathLike, grid: tuple[int, int] = (2, 3), patch: int = 32,
                        train_per_class: int = 120, val_per_class: int = 30, blocks: int = 3,
                        seed: int = 0) -> Path:
    """Write patches of scikit-learn's two sample photos under `root` as `train/` and `val/`
    ImageFolders: one class per cell of a `grid` (rows, columns) over each photo.

    Each cell is divided into `blocks` x `blocks` blocks; the blocks with (row + column) % blocks == 0
    hold the validation patches, the others the training patches, so the two splits share no
    pixel. A patch is a `patch` x `patch` RGB crop at a seeded random position inside one block.
    With the defaults: 12 classes, 1,440 train / 360 val patches of 32x32. Deterministic in
    `seed`; does nothing if `root/.complete` exists. `root/positions.csv` records where in its
    photo each patch was cut (split, class, file, y, x). Returns `root` as a Path.

    Raises:
        ValueError: a block smaller than the patch.
        ImportError: scikit-learn is not installed (it is in the `test` extra).
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = Path(root)
    marker = root / ".complete"
    if marker.is_file():
        return root
    photos = load_sample_images()
    rng = np.random.default_rng(seed)
    rows, cols = grid
    positions = ["split,class,file,y,x"]   # where each patch was cut (photo pixels): provenance
    for photo, name in zip(photos.images, photos.filenames):
        stem = Path(name).stem
        cell_h, cell_w = photo.shape[0] // rows, photo.shape[1] // cols
        block_h, block_w = cell_h // blocks, cell_w // blocks
        if min(block_h, block_w) < patch:
            raise ValueError(f"patch={patch} does not fit a {block_h}x{block_w} block "
                             f"(grid {rows}x{cols}, blocks {blocks})")
        for r in range(rows):
            for c in range(cols):
                cell = photo[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w]
                where = {"val": [], "train": []}
                for i in range(blocks):
                    for j in range(blocks):
                        where["val" if (i + j) % blocks == 0 else "train"].append((i, j))
                for split, count in (("train", train_per_class), ("val", val_per_class)):
                    folder = root / split / f"{stem}_r{r}c{c}"
                    folder.mkdir(parents=True, exist_ok=True)
                    for k in range(count):
                        i, j = where[split][k % len(where[split])]
                        y = i * block_h + int(rng.integers(0, block_h - patch + 1))
                        x = j * block_w + int(rng.integers(0, block_w - patch + 1))
                        Image.fromarray(np.ascontiguousarray(cell[y:y + patch, x:x + patch])).save(
                            folder / f"{k:04d}.png")
                        positions.append(f"{split},{folder.name},{k:04d}.png,{r * cell_h + y},{c * cell_w + x}")
    (root / "positions.csv").write_text("\n".join(positions) + "\n")
    marker.write_text("scikit-learn load_sample_images patches\n")
    return root
