"""Splits held in memory (the procedural set, CIFAR) and the `Dataset` pair of splits.

Every split, in memory or streamed (`nas.data.stream.StreamSplit`), serves the same call:
`split.batches(batch_size, shuffle=, seed=, augment=, device=, drop_last=, memory_format=,
max_batches=)` yields normalised float (B, C, H, W) images and labels on `device` (soft targets
(B, classes) when mixup / cutmix is on); the order and every random draw depend only on `seed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .spec import DataError, resolve_augment
from .transforms import (batch_augment, flip_and_padded_crop, normalise, random_resized_crop,
                         seed_mix, to_model_input)


class MemorySplit:
    """One split: uint8 images (N, C, h, w) kept in memory, served resized and normalised."""

    def __init__(self, images: Tensor, labels: Tensor, resolution: tuple[int, int], kind: str = "procedural"):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.resolution = tuple(resolution)
        self.kind = kind
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.skipped: dict[int, str] = {}       # never any: the images were checked when made

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment=False,
                device: str | torch.device = "cpu", drop_last: bool = False,
                memory_format=torch.contiguous_format, max_batches: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) batches; the order and augmentation depend only on `seed`.

        `augment`: false, true (this kind's defaults) or a mapping of overrides (see
        `nas.data.check_augment`)."""
        aug = resolve_augment(augment, self.kind)
        device = torch.device(device)
        n = len(self)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for b, start in enumerate(range(0, self.steps(batch_size, drop_last) * batch_size, batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            idx = order[start:start + batch_size]
            x = to_model_input(self.images[idx].to(device), self.resolution, channels_last_input=False)
            y = self.labels[idx].to(device)
            if aug:
                if aug["crop"] == "random_resized":
                    x = random_resized_crop(x, aug, seed_mix(seed, b, 3))
                x = flip_and_padded_crop(x, generator, aug["hflip"], aug["crop"] == "padded")
                x, y = batch_augment(x, y, aug, self.num_classes, seed_mix(seed, b))
            yield normalise(x).contiguous(memory_format=memory_format), y

    def steps(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)

    def close(self) -> None:
        """Nothing to release (a streamed split stops its workers)."""


@dataclass
class Dataset:
    """Train and validation splits of one data set at one resolution."""

    train: "MemorySplit"
    val: "MemorySplit"
    num_classes: int
    class_names: tuple[str, ...]
    description: str

    @property
    def in_chans(self) -> int:
        return self.train.channels

    def skipped(self) -> dict[str, str]:
        """Unreadable images met so far ({path or "split:index": reason}); they were left out."""
        out = {}
        for split in (self.train, self.val):
            for i, reason in split.skipped.items():
                out[split.describe(i) if hasattr(split, "describe") else f"{i}"] = reason
        return out

    def close(self) -> None:
        self.train.close()
        self.val.close()
