"""The `dataset:` settings and the `augment` setting: validated once, one-line errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

KINDS = ("procedural", "imagefolder", "cifar")
PROCEDURAL_CLASS_COUNT = 10
# keys that change how data is fetched, never which pixels a batch holds (a trial may resume
# with other values); `cache` is not one: a cached crop is resampled from the stored base image,
# an uncached one straight from the file (the same crop box, pixels within a grey level or two)
LOADER_KEYS = ("workers", "prefetch", "cache_dir")

# augmentation: the keys, the base values, and each kind's default (`augment: true`)
CROPS = ("random_resized", "padded", "none")
AUGMENT_BASE = {"hflip": True, "crop": "padded", "rrc_scale": (0.35, 1.0), "rrc_ratio": (0.75, 4 / 3),
                "randaugment": None, "mixup": 0.0, "cutmix": 0.0}
# Mirroring is only a default where every class is known to be mirror-invariant: the procedural
# shapes (symmetric by construction) and CIFAR's photographs. A folder may hold digits, letters,
# signs or scans where a mirrored image is another class or none (issue 12), so it is not
# flipped unless the study says `augment: {hflip: true}`.
DEFAULT_AUGMENT = {
    "procedural": {"hflip": True, "crop": "padded"},
    "cifar": {"hflip": True, "crop": "padded"},
    "imagefolder": {"hflip": False, "crop": "random_resized"},
}


class DataError(ValueError):
    """A data set that cannot be used: missing path, bad layout or bad setting (one line)."""


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
        train_per_class / val_per_class: folders: at most this many images of every class
            (a seeded choice; exclusive with train_size / val_size).
        class_list: imagefolder: a text file naming the classes to use, one directory name a line
            (e.g. the ImageNet-100 wnids out of ImageNet-1k); labels follow the file's order.
        seed: data seed (procedural generation, subset choice, held-out split).
        noise: procedural only: std of the pixel noise (images lie in [0, 1]).
        val_fraction: imagefolder without a val directory: fraction of each class held out.
        crop_ratio: imagefolder: evaluation centre crop = resolution / resize (the model card's
            crop_pct: 0.875 is the common default; OverLoCK's cards use 0.925-0.975).
        workers: loader worker processes (None = one less than the CPUs this process may use, at
            most 8; 0 = decode in the training process).
        prefetch: batches each worker prepares ahead.
        cache: imagefolder: decode once into a uint8 memmap at the resize size, shared by every
            process on the node and reused by later trials and studies.
        cache_dir: where that cache lives (None = `$OVERLOCK_NAS_CACHE/data`, else
            `~/.cache/overlock-nas/data`).
    """

    kind: str = "procedural"
    path: str | None = None
    num_classes: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    train_per_class: int | None = None
    val_per_class: int | None = None
    class_list: str | None = None
    seed: int = 0
    noise: float = 0.05
    val_fraction: float = 0.2
    crop_ratio: float = 0.875
    workers: int | None = None
    prefetch: int = 4
    cache: bool = False
    cache_dir: str | None = None

    def key(self) -> tuple:
        return tuple(getattr(self, f) for f in self.__dataclass_fields__ if not f.startswith("_"))

    def settings(self) -> dict:
        """The spec as a `dataset:` dict (defaults filled, None dropped)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__
                if not f.startswith("_") and getattr(self, f) is not None}


def _fields() -> list[str]:
    return [f for f in DatasetSpec.__dataclass_fields__ if not f.startswith("_")]


def parse_dataset_settings(settings: Mapping[str, Any] | None, *, check_path: bool = True) -> DatasetSpec:
    """Validate a `dataset:` settings dict; raises `DataError` naming the bad key or path."""
    settings = dict(settings or {})
    known = _fields()
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

    def fraction(name: str, default: float, low: float, high: float, closed_high: bool = False) -> float:
        value = settings.get(name, default)
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and low < value \
            and (value <= high if closed_high else value < high)
        if not ok:
            rule = f"in ({low}, {high}{']' if closed_high else ')'}"
            raise DataError(f"dataset.{name}={value!r} must be a number {rule}")
        return float(value)

    num_classes = integer("num_classes", 2, PROCEDURAL_CLASS_COUNT if kind == "procedural" else None)
    sizes = {name: integer(name, 1) for name in ("train_size", "val_size", "train_per_class", "val_per_class")}
    for split in ("train", "val"):
        if sizes[f"{split}_size"] is not None and sizes[f"{split}_per_class"] is not None:
            raise DataError(f"dataset.{split}_size and dataset.{split}_per_class exclude each other")
    seed = integer("seed", 0)
    noise = settings.get("noise", 0.05)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise DataError(f"dataset.noise={noise!r} must be a number in [0, 1]")
    val_fraction = fraction("val_fraction", 0.2, 0, 1)
    crop_ratio = fraction("crop_ratio", 0.875, 0, 1, closed_high=True)
    workers = integer("workers", 0)
    prefetch = integer("prefetch", 1) or 4
    cache = settings.get("cache", False)
    if not isinstance(cache, bool):
        raise DataError(f"dataset.cache={cache!r} must be true or false")
    path = settings.get("path")
    if kind == "procedural":
        if path is not None:
            raise DataError("dataset.path: a procedural data set has no path (set kind: imagefolder or cifar)")
        for name in ("train_per_class", "val_per_class", "class_list"):
            if settings.get(name) is not None:
                raise DataError(f"dataset.{name}: only for folder data sets (procedural uses train_size)")
        sizes["train_size"] = 512 if sizes["train_size"] is None else sizes["train_size"]
        sizes["val_size"] = 256 if sizes["val_size"] is None else sizes["val_size"]
    else:
        if not path:
            raise DataError(f"dataset.path is required for kind {kind!r}")
        path = os.path.expanduser(str(path))
        if check_path and not os.path.isdir(path):
            raise DataError(f"dataset.path={path!r} is not a directory")
    class_list = _path_setting(settings, "class_list", check_path, file=True)
    if class_list is not None and kind != "imagefolder":
        raise DataError("dataset.class_list: only for kind imagefolder")
    cache_dir = _path_setting(settings, "cache_dir", check_path=False, file=False)
    return DatasetSpec(kind=kind, path=path, num_classes=num_classes, **sizes, class_list=class_list,
                       seed=0 if seed is None else seed, noise=float(noise), val_fraction=val_fraction,
                       crop_ratio=crop_ratio, workers=workers, prefetch=prefetch, cache=cache,
                       cache_dir=cache_dir)


def _path_setting(settings, name: str, check_path: bool, file: bool) -> str | None:
    value = settings.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise DataError(f"dataset.{name}={value!r} must be a path")
    value = os.path.expanduser(value)
    if check_path and file and not os.path.isfile(value):
        raise DataError(f"dataset.{name}={value!r} is not a file")
    return value


# ---------------------------------------------------------------------------------- augment
def check_augment(value: Any, key: str = "augment") -> bool | dict:
    """Validate an `augment` setting: true (the data set's defaults), false (none) or a mapping
    of overrides {hflip, crop, rrc_scale, rrc_ratio, randaugment, mixup, cutmix}. Returns the
    bool or the normalised mapping (only the keys given); raises DataError naming the key."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, Mapping):
        raise DataError(f"{key}={value!r} must be true, false or a mapping of "
                        f"{', '.join(AUGMENT_BASE)}")
    out = {}
    for name, v in value.items():
        if name not in AUGMENT_BASE:
            raise DataError(f"{key}.{name}: unknown key (known: {', '.join(AUGMENT_BASE)})")
        out[name] = _check_augment_value(f"{key}.{name}", name, v)
    return out


def _check_augment_value(where: str, name: str, v: Any) -> Any:
    number = lambda x: not isinstance(x, bool) and isinstance(x, (int, float))  # noqa: E731
    if name == "hflip":
        if not isinstance(v, bool):
            raise DataError(f"{where}={v!r} must be true or false")
        return v
    if name == "crop":
        if v not in CROPS:
            raise DataError(f"{where}={v!r} must be one of {', '.join(CROPS)}")
        return v
    if name in ("rrc_scale", "rrc_ratio"):
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(number(x) for x in v) \
                or not 0 < v[0] <= v[1] or (name == "rrc_scale" and v[1] > 1):
            rule = "0 < low <= high <= 1" if name == "rrc_scale" else "0 < low <= high"
            raise DataError(f"{where}={v!r} must be [low, high] with {rule}")
        return [float(v[0]), float(v[1])]
    if name == "randaugment":
        if v is None or v is False:
            return None
        pair = [v.get("n"), v.get("m")] if isinstance(v, Mapping) else v
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 \
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair) \
                or not 1 <= pair[0] <= 6 or not 0 <= pair[1] <= 30:
            raise DataError(f"{where}={v!r} must be null or {{n: 1..6, m: 0..30}} (e.g. {{n: 2, m: 9}})")
        return {"n": pair[0], "m": pair[1]}
    if not number(v) or v < 0:  # mixup / cutmix: Beta(alpha, alpha), 0 = off
        raise DataError(f"{where}={v!r} must be a number >= 0 (Beta alpha; 0 = off)")
    return float(v)


def resolve_augment(value: bool | Mapping | None, kind: str) -> dict | None:
    """The full augmentation of one data-set kind: None for false, else base <- kind <- value."""
    if value is None or value is False:
        return None
    out = {**AUGMENT_BASE, **DEFAULT_AUGMENT.get(kind, {})}
    if isinstance(value, Mapping):
        out.update(check_augment(value))
    return out
