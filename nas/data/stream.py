"""Streaming splits: image files decoded by loader worker processes, batch by batch.

A `StreamSplit` serves the same `batches(...)` call as an in-memory split. Behind it one torch
DataLoader per split, built on first use and kept (persistent workers): worker processes decode
and crop items (`nas.data.decode`, `nas.data.transforms`), batches come back through shared
memory, pinned when the device is CUDA, `prefetch` batches ahead per worker. What a worker holds
does not grow with the data set: the file table is three numpy arrays shared with the parent,
and an item is decoded when it is asked for (or read from the decode cache's memmap).

Determinism: the batch sampler (in the training process) draws the order from `seed` and hands
each worker (index, augmentation, seed, position); a worker seeds its crop / flip draws from
(seed, position). So batches depend only on the seed, never on the worker count or timing, and
rung resume stays exact. An unreadable image is dropped from its batch and recorded in
`skipped` (index -> reason); it never stops the trial.
"""

from __future__ import annotations

import gc
import math
import os
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..latency._malloc import release_large_blocks
from .cache import CachedSplit
from .decode import UnreadableImage, read_base, read_image
from .folder import FileTable
from .spec import DataError, resolve_augment
from .transforms import batch_augment, item, normalise, seed_mix, to_model_input

BASE = "base"   # item mode for the decode cache: the base image itself


def default_workers() -> int:
    """One less than the CPUs this trial may use, at most 8 (the trainer keeps a core). The CPUs
    are this process's affinity, capped by OMP_NUM_THREADS when set (Ray sets it to a task's
    `num_cpus`, so trials sharing a node do not each start a worker per core)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cpus = min(cpus, int(omp))
    return max(0, min(8, cpus - 1))


class ItemSource(torch.utils.data.Dataset):
    """What a worker runs: item -> (uint8 (H, W, 3) image, label, index, error or "")."""

    def __init__(self, table: FileTable, base: tuple[int, int], size: tuple[int, int],
                 cached: CachedSplit | None = None):
        self.table = table
        self.base = tuple(base)
        self.size = tuple(size)
        self.cached = cached
        self.bad = frozenset(cached.bad.tolist()) if cached is not None else frozenset()

    def __len__(self) -> int:
        return len(self.table)

    def source(self, index: int):
        """The cached base image (array), else the decoded file (PIL image)."""
        if self.cached is not None:
            if index in self.bad:
                raise UnreadableImage(self.cached.errors.get(index) or f"{self.table.path(index)}: unreadable")
            return self.cached.images[index]
        return read_image(self.table.path(index), self.base)

    def __getitem__(self, entry):
        index, augment, seed, position = entry if isinstance(entry, tuple) else (entry, None, 0, 0)
        label = int(self.table.labels[index])
        shape = self.base if augment == BASE else self.size
        try:
            if augment == BASE:
                out = read_base(self.table.path(index), self.base)
            else:
                rng = np.random.default_rng((seed, position)) if augment else None
                out = item(self.source(index), self.base, self.size, augment, rng)
        except UnreadableImage as e:
            return torch.zeros(*shape, 3, dtype=torch.uint8), label, index, str(e)
        except (OSError, ValueError) as e:   # a file that decodes but fails to resample
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            return torch.zeros(*shape, 3, dtype=torch.uint8), label, index, f"{self.table.path(index)}: {reason}"
        return torch.from_numpy(np.require(out, np.uint8, ["C", "W", "O"])), label, index, ""


class BatchPlan:
    """The batch sampler: lists of items for one pass, set by `StreamSplit.batches` before each
    pass and drawn lazily (no per-epoch list of a million tuples)."""

    def __init__(self):
        self.order = np.zeros(0, dtype=np.int64)
        self.batch_size = 1
        self.batch_count = 0
        self.augment = None
        self.seed = 0

    def __len__(self) -> int:
        return self.batch_count

    def __iter__(self):
        order, size, augment, seed = self.order, self.batch_size, self.augment, self.seed
        for b in range(self.batch_count):
            positions = range(b * size, min((b + 1) * size, len(order)))
            yield [(int(order[p]), augment, seed, p) for p in positions]


class StreamSplit:
    """One split of an image folder, decoded on demand by loader workers.

    Attributes: `table` (the files), `resolution`, `base` (the stored / decoded size before the
    crop), `labels` (int64 tensor), `skipped` ({index: reason} met so far), `cache_state`
    ("built", "reused" or None)."""

    kind = "imagefolder"
    channels = 3

    def __init__(self, table: FileTable, resolution: tuple[int, int], base: tuple[int, int],
                 num_classes: int, *, workers: int | None = None, prefetch: int = 4,
                 cached: CachedSplit | None = None):
        self.table = table
        self.resolution = tuple(resolution)
        self.base = tuple(base)
        self.num_classes = num_classes
        self.workers = default_workers() if workers is None else workers
        self.prefetch = prefetch
        self.source = ItemSource(table, base, resolution, cached)
        self.cache_state = cached.state if cached is not None else None
        self.skipped: dict[int, str] = dict(cached.errors) if cached is not None else {}
        self._plan = BatchPlan()
        self._pass = 0
        self._loader = None
        self._pinned = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> Tensor:
        return torch.from_numpy(self.table.labels.astype(np.int64))

    def describe(self, index: int) -> str:
        return self.table.path(index)

    def steps(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment=False,
                device: str | torch.device = "cpu", drop_last: bool = False,
                memory_format=torch.contiguous_format, max_batches: int | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) on `device`, normalised; see `nas.data.memory` for the contract.

        Unreadable images are left out of their batch (a batch of only unreadable images is
        skipped) and recorded in `skipped`."""
        aug = resolve_augment(augment, self.kind)
        device = torch.device(device)
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle \
            else torch.arange(n)
        count = self.steps(batch_size, drop_last)
        plan = self._plan
        plan.order, plan.batch_size, plan.seed = order.numpy(), batch_size, seed
        plan.batch_count = count if max_batches is None else min(count, max_batches)
        plan.augment = _worker_augment(aug)
        self._pass += 1
        this_pass = self._pass
        for b, (images, labels, index, errors) in enumerate(self._loader_for(device)):
            if self._pass != this_pass:
                raise RuntimeError("a split serves one pass at a time: a newer batches() call "
                                   "restarted its loader while this one was still being read")
            keep = self._keep(index, errors)
            if keep is not None:
                if not keep.any():
                    continue
                images, labels = images[keep], labels[keep]
            # NHWC uint8 is channels_last already: lay it out as the model wants while it is 1 byte
            # a value, then one float conversion (no float copy afterwards)
            x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
            y = labels.to(device, non_blocking=True)
            x = to_model_input(x, self.resolution, channels_last_input=False)
            x, y = batch_augment(x, y, aug, self.num_classes, seed_mix(seed, b))
            yield normalise(x).contiguous(memory_format=memory_format), y
        if self.skipped and len(self.skipped) >= n:
            first = next(iter(self.skipped.values()))
            raise DataError(f"all {n} images of {self.table.root!r} are unreadable (first: {first})")

    def decode_base(self, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """Every base image in file order, for the decode cache: (indices, images, errors)."""
        plan = self._plan
        plan.order, plan.batch_size, plan.seed = np.arange(len(self)), batch_size, 0
        plan.batch_count, plan.augment = self.steps(batch_size), BASE
        try:
            for images, _, index, errors in self._loader_for(torch.device("cpu")):
                yield index.numpy(), images.numpy(), list(errors)
        finally:
            self.close()   # the workers that decoded are not the ones that will read the cache

    def _keep(self, index: Tensor, errors: list[str]):
        if not any(errors):
            return None
        for i, reason in zip(index.tolist(), errors):
            if reason:
                self.skipped.setdefault(i, reason)
        return torch.tensor([not e for e in errors])

    def _loader_for(self, device: torch.device):
        pin = device.type == "cuda"
        if self._loader is None or self._pinned != pin:
            self.close()
            workers = self.workers
            self._loader = torch.utils.data.DataLoader(
                self.source, batch_sampler=self._plan, num_workers=workers, pin_memory=pin,
                persistent_workers=workers > 0, prefetch_factor=self.prefetch if workers else None,
                worker_init_fn=_init_worker if workers else None)
            self._pinned = pin
        return self._loader

    def close(self) -> None:
        """Stop the worker processes (they restart on the next `batches` call)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):
        return {**self.__dict__, "_loader": None, "_pinned": None}


def _init_worker(_worker_id: int) -> None:
    """Keep a decode worker's memory the size of what it holds.

    - Large blocks go back to the system when freed (`release_large_blocks`). Otherwise decoded
      images (a 500x375 JPEG is 550 KiB) come from the heap once glibc has raised its mmap
      threshold, and the freed space stays the worker's: 60-180 MiB of growth in single passes
      over 900 images, measured here; 0-12 MiB with the threshold fixed.
    - Its garbage collector skips what it inherited from the trainer (`gc.freeze`): a forked worker
      shares the trainer's heap copy-on-write, and a full collection writes every object's header,
      making each page of that heap the worker's own copy.
    """
    gc.freeze()
    release_large_blocks()


def _worker_augment(aug: dict | None) -> dict | None:
    """The item-side part of an augmentation (crop and flip), as a small picklable dict."""
    if not aug:
        return None
    return {k: aug[k] for k in ("hflip", "crop", "rrc_scale", "rrc_ratio")}
