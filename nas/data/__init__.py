"""Image data sets for proxy training and zero-cost proxies.

Three kinds, selected by a `dataset:` settings dict (`DatasetSpec` lists every key):

- `procedural` (default): the built-in set of shapes and textures, generated in memory from a
  seed at any resolution (`nas.data.procedural`); the quickstart's.
- `imagefolder`: a local directory with one sub-directory per class (`path/<class>/*.jpg`), or
  `path/train/<class>` and `path/val/<class>` (`val` may also be named `validation` or
  `test`). Without a val split, `val_fraction` of every class is held out (deterministic).
  Streamed: loader worker processes decode JPEGs with libjpeg-turbo (simplejpeg, DCT-scaled to
  the size needed), others with Pillow, on demand (`nas.data.stream`); optionally decoded once
  into a shared uint8 memmap (`cache: true`, `nas.data.cache`). Subsets: `train_size` /
  `val_size` (class-balanced), `train_per_class` / `val_per_class`, `class_list` (e.g.
  ImageNet-100 out of ImageNet-1k), all seeded by `seed`.
- `cifar`: a CIFAR-style folder of python pickles (CIFAR-10 or CIFAR-100), in memory.

    >>> from nas.data import load_dataset
    >>> data = load_dataset({"kind": "procedural", "train_size": 512, "val_size": 256}, resolution=32)
    >>> images, labels = next(data.train.batches(64, shuffle=True, seed=0))
    >>> images.shape, data.num_classes
    (torch.Size([64, 3, 32, 32]), 10)

Images are served as normalised float tensors (`(pixel / 255 - MEAN) / STD`, MEAN 0.5, STD 0.25
per channel) at the requested resolution, on the requested device. Evaluation images of a folder
are resized to `resolution / crop_ratio` and centre-cropped (the model card's transform).
`batches(..., augment=...)` takes false, true (the kind's defaults, `DEFAULT_AUGMENT`) or a
mapping of overrides: `hflip`, `crop` (random_resized | padded | none), `rrc_scale`,
`rrc_ratio`, `randaugment` ({n, m}, kornia), `mixup` / `cutmix` (Beta alpha; soft targets).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping


from .memory import Dataset, MemorySplit
from .procedural import PROCEDURAL_CLASSES, procedural_images
from .spec import (AUGMENT_BASE, DEFAULT_AUGMENT, KINDS, LOADER_KEYS, DataError, DatasetSpec,
                   check_augment, parse_dataset_settings, resolve_augment)
from .transforms import MEAN, STD

Split = MemorySplit   # the name before streaming splits existed

__all__ = ["DataError", "DatasetSpec", "Dataset", "MemorySplit", "Split", "load_dataset",
           "parse_dataset_settings", "check_augment", "resolve_augment", "procedural_images",
           "PROCEDURAL_CLASSES", "DEFAULT_AUGMENT", "AUGMENT_BASE", "KINDS", "LOADER_KEYS", "MEAN", "STD",
           "dataset_record"]


def load_dataset(settings: Mapping[str, Any] | DatasetSpec | None, resolution: int | tuple[int, int]) -> Dataset:
    """Load (or generate) a data set at `resolution`; cached per process.

    Args:
        settings: a `dataset:` dict (see `DatasetSpec`) or a parsed spec; None = procedural.
        resolution: training resolution, `int` or `(H, W)`. Procedural images are rendered at it;
            folder images are decoded to it batch by batch (streamed).

    Raises:
        DataError: unknown key, bad value, missing path or unusable data (one line).
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
    from .cifar import load_cifar
    from .procedural import load_procedural

    loader = {"procedural": load_procedural, "imagefolder": load_imagefolder, "cifar": load_cifar}
    data = loader[spec.kind](spec, resolution)
    data.train.num_classes = data.val.num_classes = data.num_classes
    return data


def load_imagefolder(spec: DatasetSpec, resolution: tuple[int, int]) -> Dataset:
    """A streamed ImageFolder (see the module docstring); with `spec.cache`, decoded once."""
    from .cifar import check_classes
    from .folder import folder_splits

    classes, train_table, val_table = folder_splits(spec)
    check_classes(spec, len(classes))
    base = tuple(max(r, round(r / spec.crop_ratio)) for r in resolution)
    splits = [_stream_split(spec, table, resolution, base, len(classes), name)
              for table, name in ((train_table, "train"), (val_table, "val"))]
    subset = f", subset of {len(train_table)} / {len(val_table)} images" if any(
        v is not None for v in (spec.train_size, spec.train_per_class, spec.class_list)) else ""
    return Dataset(splits[0], splits[1], len(classes), tuple(classes),
                   f"imagefolder {spec.path}, {len(classes)} classes{subset}")


def _stream_split(spec: DatasetSpec, table, resolution, base, num_classes: int, name: str):
    from .cache import cache_dir, open_or_build
    from .stream import StreamSplit

    def split(cached=None):
        return StreamSplit(table, resolution, base, num_classes, workers=spec.workers,
                           prefetch=spec.prefetch, cached=cached)

    if not spec.cache:
        return split()
    folder = os.path.basename(os.path.normpath(spec.path)) or "data"
    stem = f"{folder}-{name}-{base[0]}x{base[1]}-{table.digest()}"
    cached = open_or_build(cache_dir(spec.cache_dir), stem, (len(table), *base, 3),
                           lambda: split().decode_base())
    return split(cached)


def dataset_record(settings: Mapping[str, Any], data, resolution, augment=None) -> dict:
    """What a score was measured on, stored with the trial (`dataset` user attr) and shown by the
    report and the model card: {"description" (one line), "kind", "path" (folders) or "seed"
    (procedural), "classes", "train_size", "val_size", "resolution" [H, W], "augment" (the
    resolved training augmentation, or None)}."""
    h, w = (int(v) for v in resolution)
    kind = settings.get("kind", "procedural")
    record = {"kind": kind, "classes": int(data.num_classes), "train_size": len(data.train),
              "val_size": len(data.val), "resolution": [h, w], "augment": augment}
    if settings.get("path"):
        record["path"] = str(settings["path"])
    else:
        record["seed"] = int(settings.get("seed", 0) or 0)
    record["description"] = (f"{data.description}; {len(data.train)} train / {len(data.val)} val "
                             f"images at {h}x{w}")
    return record
