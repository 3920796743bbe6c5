"""Score one architecture with a trained supernet: inherit its weights, re-estimate batch norm,
validate.

A sub-network's batch-norm running averages in the supernet were accumulated while every other
sub-network (other widths, depths, region counts) ran through the same norms, so they describe a
mixture, not this network: OFA and BigNAS re-estimate them per sub-network on a few training
batches before evaluating. `score_subnet` does that on the *extracted* model (an
`overlock.OverLoCK` equal to `create_model(config)` with inherited weights), with the training
recipe's re-estimation (`nas.training`: a seeded random sample of the training split,
preprocessed as validation images are), and reports validation accuracy and mean cross-entropy; with
`bn_batches=0` it keeps the inherited running averages (the "without re-estimation" signal).

A process that scores many architectures (the `supernet` evaluator, loaded once per worker)
decodes and preprocesses the same images for every one of them; `keep_split` does it once and
keeps a split's model-input tensors in memory (`KeptSplit`), serving the very batches the split
serves without augmentation (same images, order and batches: a test compares them tensor for
tensor), so the per-architecture cost is the forward passes.

Scoring runs on the extracted model, not on `Supernet.set_active`: both give the same logits
(a difference of 0.0 on three architectures of the fidelity space), but the active forward
gathers and slices the shared tensors on every pass, which costs more than extracting once
(2026-12-02, one thread, 360 validation images at 32 px: 0.26-0.33 CPU-s extracted against
0.28-0.37 active, for an extraction of 0.03-0.04 CPU-s).
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

__all__ = ["score_subnet", "rescore", "KeptSplit", "keep_split"]

@torch.no_grad()
def score_subnet(supernet, config, data, *, bn_batches: int, batch_size: int = 64,
                 eval_batch_size: int = 256, seed: int = 0, device: str = "cpu") -> dict:
    """{"accuracy", "val_loss", "wall_s"} of `config`'s sub-network of `supernet` on `data.val`.

    `config` must already have the data set's classes and channels (`fit_to_data`). BN statistics
    are re-estimated on `bn_batches` random training batches (0 = keep the inherited ones).
    `data`'s splits may be streamed, in memory or `KeptSplit`s: the same batches either way.
    Raises ValueError (one line) when the supernet does not contain `config`.
    """
    t0 = time.perf_counter()
    model = supernet.extract(config).to(device)
    accuracy, val_loss = rescore(model, data, bn_batches=bn_batches, batch_size=batch_size,
                                 eval_batch_size=eval_batch_size, seed=seed, device=device)
    return {"accuracy": accuracy, "val_loss": val_loss, "wall_s": time.perf_counter() - t0}


@torch.no_grad()
def rescore(model, data, *, bn_batches: int, batch_size: int, eval_batch_size: int, seed: int,
            device: str | torch.device = "cpu") -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) on `data.val` of an extracted sub-network, its
    batch-norm statistics re-estimated in place first on `bn_batches` random training batches
    of `batch_size` drawn with `seed` (0 = keep the inherited ones): what a supernet score is,
    and what `export --from-supernet` writes beside the weights it keeps."""
    from nas.training import Recipe

    recipe = Recipe.from_settings({"batch_size": batch_size, "eval_batch_size": eval_batch_size,
                                   "bn_recalibration_batches": bn_batches})
    model.eval()
    recipe.reestimate_bn(model, data.train, seed=seed, device=device)
    return recipe.validate(model, data.val, device=device)


class KeptSplit:
    """A split's images decoded and preprocessed once, as validation images are (no augmentation),
    and kept as the model's input tensors; `batches` serves what the split it was built from
    serves without augmentation: the same images, labels, order and batches. An image the split
    could not read is left out of its batch as the split leaves it out, and counted in `len`
    as the split counts it (validation divides by `len`).

    Attributes: `images` (float (M, C, H, W), M = readable images), `labels` (M), `rows` (per
    index of the split: its row in `images`, -1 when unreadable), `resolution`, `kind`,
    `num_classes`, `channels`, `skipped` (the split's {index: reason})."""

    def __init__(self, images: Tensor, labels: Tensor, rows: Tensor, *, resolution, kind: str,
                 num_classes: int, skipped: dict | None = None):
        self.images, self.labels, self.rows = images, labels, rows
        self.resolution = tuple(resolution)
        self.kind = kind
        self.num_classes = num_classes
        self.channels = int(images.shape[1])
        self.skipped = dict(skipped or {})

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return self.images.element_size() * self.images.nelement()

    def steps(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment=False,
                device: str | torch.device = "cpu", drop_last: bool = False,
                memory_format=torch.contiguous_format, max_batches: int | None = None):
        """(images, labels) as `split.batches(...)` yields them with `augment=False`; the order
        is the same seeded permutation. Raises ValueError for an augmentation (a kept split holds
        evaluation images only)."""
        if augment:
            raise ValueError("a kept split holds evaluation images: it serves augment=False only")
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle \
            else torch.arange(n)
        count = self.steps(batch_size, drop_last)
        count = count if max_batches is None else min(count, max_batches)
        for b in range(count):
            rows = self.rows[order[b * batch_size:(b + 1) * batch_size]]
            rows = rows[rows >= 0]
            if len(rows) == 0:
                continue   # a batch of only unreadable images: the split skips it too
            x = self.images.index_select(0, rows).to(device, non_blocking=True)
            yield x.contiguous(memory_format=memory_format), self.labels[rows].to(device, non_blocking=True)

    def close(self) -> None:
        """Nothing to release (the split's loader workers were stopped when it was kept)."""


def split_nbytes(split) -> int:
    """Bytes a split's model-input tensors take (float32, every image at the split's resolution)."""
    h, w = split.resolution
    return len(split) * int(split.channels) * int(h) * int(w) * 4


def keep_split(split, batch_size: int = 256) -> KeptSplit:
    """Decode and preprocess every image of `split` once (its own `batches`, in order, without
    augmentation) and keep them (`KeptSplit`); stops the split's loader workers afterwards.

    Raises:
        RuntimeError: the split served another number of images than it holds readable ones.
    """
    xs, ys = [], []
    for x, y in split.batches(batch_size, shuffle=False, augment=False):
        xs.append(x)
        ys.append(y)
    n = len(split)
    skipped = dict(getattr(split, "skipped", {}) or {})
    readable = torch.tensor([i not in skipped for i in range(n)], dtype=torch.bool)
    rows = torch.full((n,), -1, dtype=torch.long)
    rows[readable] = torch.arange(int(readable.sum()))
    images = torch.cat(xs) if xs else torch.zeros(0, int(split.channels), *split.resolution)
    labels = torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)
    if len(images) != int(readable.sum()):
        raise RuntimeError(f"keep_split: the split served {len(images)} images, "
                           f"{int(readable.sum())} of its {n} are readable")
    kept = KeptSplit(images, labels, rows, resolution=split.resolution,
                     kind=getattr(split, "kind", "procedural"), num_classes=split.num_classes,
                     skipped=skipped)
    split.close()
    return kept
