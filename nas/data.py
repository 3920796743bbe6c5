"""Image data sets for proxy training and zero-cost proxies.

Three kinds, selected by a `dataset:` settings dict:

- `procedural` (default): a built-in image set generated in memory from a seed. Ten classes of
  shapes and textures (disk, x-cross, triangle, ring, plus, dot grid, square frame, horizontal /
  vertical stripes, checkerboard): a lighter object of random colour, position and size on a
  darker background of random colour with shading and pixel noise, so the class is carried by
  shape alone and a network must really learn it (the filled shapes and the crosses take longer
  than the textures, which leaves room to tell architectures apart). Deterministic: the same
  seed, size and resolution give the same tensors in every process. Any resolution.
- `imagefolder`: a local directory with one sub-directory per class (`path/<class>/*.jpg`), or
  `path/train/<class>` and `path/val/<class>` (`val` may also be named `validation` or `test`).
  Without a val split, `val_fraction` of every class is held out (deterministic).
- `cifar`: a CIFAR-style folder of python pickles: CIFAR-10 (`data_batch_*` + `test_batch`) or
  CIFAR-100 (`train` + `test`, fine labels), as distributed by the authors.

    >>> from nas.data import load_dataset
    >>> data = load_dataset({"kind": "procedural", "train_size": 512, "val_size": 256}, resolution=32)
    >>> images, labels = next(data.train.batches(64, shuffle=True, seed=0))
    >>> images.shape, data.num_classes
    (torch.Size([64, 3, 32, 32]), 10)

Images are served as normalised float tensors (mean 0.5, std 0.25 per channel) at the requested
resolution; `Split.batches(..., augment=True)` adds a random horizontal flip and a padded random
crop (the usual small-image augmentation).
"""

from __future__ import annotations

import functools
import glob
import math
import os
import pickle
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DataError", "DatasetSpec", "Dataset", "Split", "load_dataset", "parse_dataset_settings",
           "procedural_images", "PROCEDURAL_CLASSES"]

KINDS = ("procedural", "imagefolder", "cifar")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
PROCEDURAL_CLASSES = ("disk", "x_cross", "triangle", "ring", "plus", "dots", "frame",
                      "h_stripes", "v_stripes", "checker")
MEAN, STD = 0.5, 0.25
# procedural nuisance variation (units: the short side spans [-1, 1])
JITTER = 0.5             # shape centre uniform in +-JITTER/2
RADIUS = (0.45, 0.75)    # shape radius range
CONTRAST = (0.35, 0.65)  # RGB distance of foreground from background
GRADIENT = 0.2           # amplitude of a linear background shading
BACKGROUND_MAX = 0.5     # background channels uniform in [0, BACKGROUND_MAX]


class DataError(ValueError):
    """A data set that cannot be used: missing path, bad layout or bad setting (one line)."""


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class DatasetSpec:
    """A validated `dataset:` settings dict.

    Args:
        kind: "procedural", "imagefolder" or "cifar".
        path: directory of an imagefolder / cifar data set (unused for procedural).
        num_classes: procedural: number of classes (2-10); folders: must match the data if given.
        train_size: images used for training (procedural: generated; folders: a deterministic
            class-balanced subset, None = all).
        val_size: images used for validation (as train_size).
        seed: data seed (procedural generation, subset choice, held-out split).
        noise: procedural only: std of the pixel noise (images lie in [0, 1]).
        val_fraction: imagefolder without a val directory: fraction of each class held out.
    """

    kind: str = "procedural"
    path: str | None = None
    num_classes: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    seed: int = 0
    noise: float = 0.05
    val_fraction: float = 0.2

    def key(self) -> tuple:
        return (self.kind, os.path.abspath(self.path) if self.path else None, self.num_classes,
                self.train_size, self.val_size, self.seed, self.noise, self.val_fraction)


def parse_dataset_settings(settings: Mapping[str, Any] | None, *, check_path: bool = True) -> DatasetSpec:
    """Validate a `dataset:` settings dict; raises `DataError` naming the bad key or path."""
    settings = dict(settings or {})
    known = {f for f in DatasetSpec.__dataclass_fields__}
    for key in settings:
        if key not in known:
            raise DataError(f"dataset.{key}: unknown key (known: {', '.join(sorted(known))})")
    kind = settings.get("kind", "procedural")
    if kind not in KINDS:
        raise DataError(f"dataset.kind={kind!r} must be one of {', '.join(KINDS)}")

    def integer(name: str, low: int, high: int | None = None) -> int | None:
        value = settings.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            rule = f">= {low}" if high is None else f"in {low}..{high}"
            raise DataError(f"dataset.{name}={value!r} must be an integer {rule}")
        return value

    num_classes = integer("num_classes", 2, len(PROCEDURAL_CLASSES) if kind == "procedural" else None)
    train_size = integer("train_size", 1)
    val_size = integer("val_size", 1)
    seed = integer("seed", 0)
    noise = settings.get("noise", 0.05)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise DataError(f"dataset.noise={noise!r} must be a number in [0, 1]")
    val_fraction = settings.get("val_fraction", 0.2)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise DataError(f"dataset.val_fraction={val_fraction!r} must be a number in (0, 1)")
    path = settings.get("path")
    if kind == "procedural":
        if path is not None:
            raise DataError("dataset.path: a procedural data set has no path (set kind: imagefolder or cifar)")
        train_size = 512 if train_size is None else train_size
        val_size = 256 if val_size is None else val_size
    else:
        if not path:
            raise DataError(f"dataset.path is required for kind {kind!r}")
        path = os.path.expanduser(str(path))
        if check_path and not os.path.isdir(path):
            raise DataError(f"dataset.path={path!r} is not a directory")
    return DatasetSpec(kind=kind, path=path, num_classes=num_classes, train_size=train_size,
                       val_size=val_size, seed=0 if seed is None else seed, noise=float(noise),
                       val_fraction=float(val_fraction))


# --------------------------------------------------------------------------------- containers
class Split:
    """One split: uint8 images (N, C, h, w) kept in memory, served resized and normalised."""

    def __init__(self, images: Tensor, labels: Tensor, resolution: tuple[int, int]):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.resolution = tuple(resolution)

    def __len__(self) -> int:
        return len(self.labels)

    def _prepare(self, images: Tensor, device, augment: bool, generator) -> Tensor:
        x = images.to(device).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.resolution:
            x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.resolution[1])
        if augment:
            x = _augment(x, generator)
        return x.sub_(MEAN).div_(STD)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment: bool = False,
                device: str | torch.device = "cpu", drop_last: bool = False,
                memory_format=torch.contiguous_format) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) batches; the order and augmentation depend only on `seed`."""
        n = len(self)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            x = self._prepare(self.images[idx], device, augment, generator)
            yield x.contiguous(memory_format=memory_format), self.labels[idx].to(device)

    def steps(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flip and a reflect-padded random crop (pad = 1/8 of the size)."""
    B, _, H, W = x.shape
    flip = torch.rand(B, generator=generator) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    pad = max(1, min(H, W) // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


@dataclass
class Dataset:
    """Train and validation splits of one data set at one resolution."""

    train: Split
    val: Split
    num_classes: int
    class_names: tuple[str, ...]
    description: str

    @property
    def in_chans(self) -> int:
        return self.train.images.shape[1]


# -------------------------------------------------------------------------------- procedural
def _smooth_step(signed_distance: Tensor, softness: float) -> Tensor:
    """Anti-aliased inside mask (1 inside, 0 outside) of a shape given by its signed distance."""
    return torch.sigmoid(-signed_distance / softness)


def procedural_images(labels: Tensor, resolution: tuple[int, int], generator: torch.Generator,
                      noise: float = 0.05) -> Tensor:
    """Render one image per label (class index into PROCEDURAL_CLASSES) as uint8 (N, 3, H, W).

    Every image: a dark random background colour, a lighter random foreground colour (brighter by
    CONTRAST in RGB distance), a shape of random centre (JITTER) and radius (RADIUS, in units of
    half the short side), a random period and phase for the textures, a linear shading across the
    image (GRADIENT) and Gaussian pixel noise. All random draws use `generator`.
    """
    N = len(labels)
    H, W = resolution
    g = generator
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    # normalised coordinates: the short side spans [-1, 1]
    s = min(H, W)
    ys = (torch.arange(H) + 0.5 - H / 2) / (s / 2)
    xs = (torch.arange(W) + 0.5 - W / 2) / (s / 2)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    cy = (u(N) - 0.5) * JITTER * (H / s)
    cx = (u(N) - 0.5) * JITTER * (W / s)
    radius = RADIUS[0] + (RADIUS[1] - RADIUS[0]) * u(N)
    dy = (yy[None] - cy[:, None, None]) / radius[:, None, None]
    dx = (xx[None] - cx[:, None, None]) / radius[:, None, None]
    softness = 2.0 / s / radius[:, None, None]           # ~1 pixel, in shape units
    r = torch.sqrt(dy ** 2 + dx ** 2)
    box = torch.maximum(dy.abs(), dx.abs())
    period = 0.55 + 0.25 * u(N)[:, None, None]
    phase = u(N)[:, None, None] * period

    masks = torch.empty(N, H, W)
    for c, name in enumerate(PROCEDURAL_CLASSES):
        sel = (labels == c).nonzero().flatten()
        if len(sel) == 0:
            continue
        y, x, rr, bb, soft = dy[sel], dx[sel], r[sel], box[sel], softness[sel]
        if name == "disk":
            d = rr - 1
        elif name == "x_cross":  # the plus turned by 45 degrees
            u_, v_ = (x + y) * 0.7071, (x - y) * 0.7071
            d = torch.minimum(torch.maximum(u_.abs() - 0.25, v_.abs() - 1.0),
                              torch.maximum(v_.abs() - 0.25, u_.abs() - 1.0))
        elif name == "triangle":  # upward: below the two slanted edges and above the base
            d = torch.maximum(torch.maximum(y - 0.7, -0.866 * x - 0.5 * y - 0.45),
                              0.866 * x - 0.5 * y - 0.45)
        elif name == "ring":
            d = (rr - 0.75).abs() - 0.22
        elif name == "plus":
            d = torch.minimum(torch.maximum(x.abs() - 0.25, y.abs() - 1.0),
                              torch.maximum(y.abs() - 0.25, x.abs() - 1.0))
        elif name == "frame":
            d = (bb - 0.7).abs() - 0.2
        elif name in ("h_stripes", "v_stripes", "checker", "dots"):
            p, ph = period[sel], phase[sel]
            wave_y = torch.cos(2 * math.pi * (y + ph) / p)
            wave_x = torch.cos(2 * math.pi * (x + ph) / p)
            wave = {"h_stripes": wave_y, "v_stripes": wave_x, "checker": wave_y * wave_x,
                    "dots": wave_y + wave_x - 1.0}[name]
            # texture inside a soft-edged square patch
            inside = _smooth_step(bb - 0.95, soft)
            masks[sel] = inside * (wave > 0).float()
            continue
        else:  # pragma: no cover - the tuple above is exhaustive
            raise AssertionError(name)
        masks[sel] = _smooth_step(d, soft)

    # random colours, one polarity: a lighter object on a darker background, so the class is
    # in the shape (colours carry nothing) yet edges have a consistent sign
    background = u(N, 3) * BACKGROUND_MAX
    lift = CONTRAST[0] + (CONTRAST[1] - CONTRAST[0]) * u(N, 1)
    tint = 0.4 + 0.6 * u(N, 3)
    foreground = (background + lift * tint / tint.norm(dim=1, keepdim=True)).clamp(0, 1)
    gradient = (u(N, 1, 1) - 0.5) * GRADIENT * (yy[None] * torch.cos(u(N, 1, 1) * 6.28)
                                           + xx[None] * torch.sin(u(N, 1, 1) * 6.28))
    images = (background[:, :, None, None] * (1 - masks[:, None]) + foreground[:, :, None, None] * masks[:, None]
              + gradient[:, None])
    if noise > 0:
        images = images + noise * torch.randn(images.shape, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _procedural_split(n: int, num_classes: int, resolution, seed: int, noise: float) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes          # balanced
    labels = labels[torch.randperm(n, generator=g)]
    chunks = []
    for start in range(0, n, 1024):                 # bounded memory for large sets
        chunks.append(procedural_images(labels[start:start + 1024], resolution, g, noise))
    return Split(torch.cat(chunks) if chunks else torch.empty(0, 3, *resolution, dtype=torch.uint8),
                 labels, resolution)


def _load_procedural(spec: DatasetSpec, resolution) -> Dataset:
    num_classes = spec.num_classes or len(PROCEDURAL_CLASSES)
    # distinct streams for train and val, both a function of the data seed only
    train = _procedural_split(spec.train_size, num_classes, resolution, spec.seed * 2 + 1, spec.noise)
    val = _procedural_split(spec.val_size, num_classes, resolution, spec.seed * 2 + 2, spec.noise)
    return Dataset(train, val, num_classes, PROCEDURAL_CLASSES[:num_classes],
                   f"procedural shapes, {num_classes} classes, seed {spec.seed}")


# ----------------------------------------------------------------------------------- folders
def _balanced_subset(labels: Tensor, size: int | None, seed: int) -> Tensor:
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


def _read_image(path: str, size: tuple[int, int]) -> Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            # resize the short side to the target and centre-crop (the usual eval transform)
            H, W = size
            scale = max(H / im.height, W / im.width)
            new = (max(W, round(im.width * scale)), max(H, round(im.height * scale)))
            im = im.resize(new, Image.BILINEAR)
            left, top = (new[0] - W) // 2, (new[1] - H) // 2
            im = im.crop((left, top, left + W, top + H))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path!r}: {e}") from None
    return data.reshape(H, W, 3).permute(2, 0, 1)


def _scan_classes(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                     and not d.startswith("."))
    items = []
    for idx, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(os.path.join(root, name))):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    items.append((os.path.join(dirpath, f), idx))
    return classes, items


def _load_imagefolder(spec: DatasetSpec, resolution) -> Dataset:
    root = spec.path
    val_dir = next((os.path.join(root, d) for d in ("val", "validation", "test")
                    if os.path.isdir(os.path.join(root, d))), None)
    train_dir = os.path.join(root, "train") if os.path.isdir(os.path.join(root, "train")) else root
    if train_dir == root and val_dir is not None:
        raise DataError(f"dataset.path={root!r} has a {os.path.basename(val_dir)!r} directory but no 'train'")
    classes, items = _scan_classes(train_dir)
    if len(classes) < 2:
        raise DataError(f"dataset.path={train_dir!r} needs one sub-directory per class (found {len(classes)})")
    if not items:
        raise DataError(f"dataset.path={train_dir!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    labels = torch.tensor([label for _, label in items])
    if val_dir is not None:
        val_classes, val_items = _scan_classes(val_dir)
        if val_classes != classes:
            raise DataError(f"dataset.path={root!r}: classes of {os.path.basename(val_dir)!r} differ from 'train'")
        val_labels = torch.tensor([label for _, label in val_items])
        train_idx = _balanced_subset(labels, spec.train_size, spec.seed)
        val_idx = _balanced_subset(val_labels, spec.val_size, spec.seed + 1)
    else:
        g = torch.Generator().manual_seed(spec.seed)
        is_val = torch.zeros(len(items), dtype=torch.bool)
        for c in range(len(classes)):
            pos = (labels == c).nonzero().flatten()
            pos = pos[torch.randperm(len(pos), generator=g)]
            is_val[pos[:max(1, round(len(pos) * spec.val_fraction))]] = True
        train_pool, val_pool = (~is_val).nonzero().flatten(), is_val.nonzero().flatten()
        train_idx = train_pool[_balanced_subset(labels[train_pool], spec.train_size, spec.seed)]
        val_idx = val_pool[_balanced_subset(labels[val_pool], spec.val_size, spec.seed + 1)]
        val_items, val_labels = items, labels
    _check_classes(spec, len(classes))

    def split(pool, idx, pool_labels):
        images = [_read_image(pool[i][0], resolution) for i in idx.tolist()]
        return Split(torch.stack(images), pool_labels[idx], resolution)

    return Dataset(split(items, train_idx, labels), split(val_items, val_idx, val_labels), len(classes),
                   tuple(classes), f"imagefolder {root}, {len(classes)} classes")


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


def _load_cifar(spec: DatasetSpec, resolution) -> Dataset:
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
    _check_classes(spec, num_classes)
    ti = _balanced_subset(train_labels, spec.train_size, spec.seed)
    vi = _balanced_subset(val_labels, spec.val_size, spec.seed + 1)
    names = tuple(str(i) for i in range(num_classes))
    meta = os.path.join(root, "batches.meta")
    if os.path.isfile(meta):
        raw = _unpickle(meta).get(b"label_names")
        if raw and len(raw) == num_classes:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
    return Dataset(Split(train_images[ti], train_labels[ti], resolution),
                   Split(val_images[vi], val_labels[vi], resolution), num_classes, names,
                   f"cifar {root}, {num_classes} classes")


def _check_classes(spec: DatasetSpec, found: int) -> None:
    if spec.num_classes is not None and spec.num_classes != found:
        raise DataError(f"dataset.num_classes={spec.num_classes} but {spec.path!r} has {found} classes")


# -------------------------------------------------------------------------------------- entry
def load_dataset(settings: Mapping[str, Any] | DatasetSpec | None, resolution: int | tuple[int, int]) -> Dataset:
    """Load (or generate) a data set at `resolution`; cached per process.

    Args:
        settings: a `dataset:` dict (see `DatasetSpec`) or a parsed spec; None = procedural.
        resolution: training resolution, `int` or `(H, W)`. Procedural images are rendered at it;
            folder images are stored at it (folders: centre crop) so an epoch does no decoding.

    Raises:
        DataError: unknown key, bad value, missing path or unreadable data (one line).
    """
    spec = settings if isinstance(settings, DatasetSpec) else parse_dataset_settings(settings)
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    resolution = tuple(int(r) for r in resolution)
    if spec.path is not None and not os.path.isdir(spec.path):
        raise DataError(f"dataset.path={spec.path!r} is not a directory")
    return _load_cached(spec, resolution)


@functools.lru_cache(maxsize=4)
def _load_cached(spec: DatasetSpec, resolution: tuple[int, int]) -> Dataset:
    loader = {"procedural": _load_procedural, "imagefolder": _load_imagefolder, "cifar": _load_cifar}
    return loader[spec.kind](spec, resolution)
