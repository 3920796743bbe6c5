"""The `supernet` evaluator: score a trial by the weights it inherits from a trained supernet.

    evaluator: {name: supernet, weights: runs/supernet-digits}     # `overlock-nas supernet train`

For each trial: the trial's sub-network is extracted from the supernet (an `overlock.OverLoCK`
equal to `create_model(config)` with inherited weights), its batch-norm statistics are
re-estimated on `bn_recalibration_batches` random training batches (the sub-network's own
statistics, not the mixture the supernet accumulated), and its top-1 validation accuracy (the
score) and mean validation cross-entropy (`val_loss`) are measured: no training, seconds per
architecture at small resolution on a CPU. The supernet is loaded once per process and kept.

The data set defaults to the one the supernet was trained on (its card); another one must have
the same number of classes. Both splits are decoded and preprocessed once per process and kept in
memory as model-input tensors when each takes at most `keep_data_mb` MB (the same batches as
streaming them, `nas.supernet.score.KeptSplit`), so a worker scoring many architectures pays
only their forward passes. `val_images: N` validates on a fixed class-balanced subset of N
validation images (the data set's `val_size`; the same images for every trial). The default is
300 (a validation split of at most 300 images is validated whole; `val_images: all` validates
every image): on docs/explanation/supernet.md's sets 300 images ranked the architectures as the whole split
did, and a scoring's cost is its number of images, while a rung-1 epoch's grows with the training
split. Measured ranking fidelity and cost of each setting: docs/explanation/supernet.md.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import torch

from .base import (Evaluator, Setting, TrialError, dataset, dataset_record, fit_to_data, integer,
               resolution, resolve_settings)

DEFAULT_VAL_IMAGES = 300

SCHEMA = {
    "weights": Setting(None, lambda k, v: _weights_setting(k, v)),
    "dataset": Setting(None, dataset),
    "bn_recalibration_batches": Setting(4, integer(0)),
    # 4 x 32 re-estimation images ranked docs/explanation/supernet.md's 20 architectures as 4 x 64 did
    "batch_size": Setting(32, integer(1)),
    "eval_batch_size": Setting(256, integer(1)),
    "resolution": Setting(None, resolution),
    "threads": Setting(None, integer(1)),
    "keep_data_mb": Setting(256, integer(0)),
    # 300 class-balanced validation images ranked as the whole split on the digits (360) and on
    # photo-regions (1,200), docs/explanation/supernet.md; `all` (or null) validates every image
    "val_images": Setting(DEFAULT_VAL_IMAGES, lambda k, v: None if v in (None, "all") else integer(1)(k, v)),
}


def _weights_setting(key: str, value: Any) -> str:
    """A folder written by `overlock-nas supernet train` (or its supernet.safetensors)."""
    from nas.supernet import folder

    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{key}={value!r} must be the folder `overlock-nas supernet train --out` wrote")
    try:
        return folder.resolve(value)
    except folder.SupernetFolderError as e:
        raise ValueError(f"{key}={value!r}: {e}") from None


class SupernetEvaluator(Evaluator):
    """Inherited-weight scoring; see the module docstring. Settings: weights (required: the
    training folder), dataset (default: the card's), bn_recalibration_batches (4; 0 keeps the
    inherited running averages), batch_size (32, images a re-estimation batch), eval_batch_size (256),
    resolution (default: the card's), threads (torch threads; none = leave), keep_data_mb (256:
    keep each split's preprocessed images in memory when they take at most this many MB; 0 =
    stream them for every trial), val_images (300: a fixed class-balanced subset of at most 300
    validation images; N: of N, more than the split holds is refused; all: the whole split)."""

    name = "supernet"
    metric = "accuracy"

    def __init__(self, settings: Mapping[str, Any] | None = None):
        resolved = resolve_settings("supernet", settings, SCHEMA)
        if resolved["weights"] is None:
            raise ValueError("evaluator 'supernet': weights is required (the folder written by "
                             "`overlock-nas supernet train SPACE --out DIR`)")
        self.card = _read_card(resolved["weights"])
        if resolved["dataset"] is None:
            resolved["dataset"] = self.card["dataset_settings"]
        if "val_images" not in (settings or {}):
            resolved["val_images"] = _default_val_images(resolved["dataset"])
        if resolved["val_images"] is not None:
            resolved["dataset"] = _with_val_images(resolved["dataset"], resolved["val_images"])
        if resolved["resolution"] is None:
            resolved["resolution"] = list(self.card["resolution"])
        self.settings = resolved
        self.rungs = []
        self._kept: dict[tuple, Any] = {}   # (dataset, resolution) -> Dataset of KeptSplits

    def supernet(self):
        """The trained supernet, loaded once per process (reloaded if the file changed)."""
        from nas.supernet import folder

        try:
            return folder.load(self.settings["weights"])
        except folder.SupernetFolderError as e:
            raise TrialError(f"supernet: weights={self.settings['weights']!r}: {e}") from None

    def evaluate(self, config, *, budget_epochs: int | None = None, device: str = "cpu", seed: int = 0,
                 workdir: str | None = None, resume_from: str | None = None,
                 weights_name: str | None = None) -> dict:
        """{"score" (validation accuracy), "val_loss" [loss], "history" [accuracy], "epochs": 0,
        "weights": None, "fidelity": 1.0, "dataset", "wall_s", "supernet" (the folder)}.
        Raises TrialError: the config is not in the supernet, or the data does not fit it."""
        from nas.data import DataError, load_dataset
        from nas.supernet.score import score_subnet

        s = self.settings
        threads_before = torch.get_num_threads()
        t0 = time.perf_counter()
        try:
            if s["threads"]:
                torch.set_num_threads(s["threads"])
            data = self.data()
            net = self.supernet().to(device)
            if data.num_classes != self.card["num_classes"]:
                raise TrialError(f"supernet: {s['weights']} was trained on {self.card['num_classes']} "
                                 f"classes, the data set has {data.num_classes}")
            try:
                sub = net.fit(fit_to_data(config, data))
            except ValueError as e:
                raise TrialError(f"supernet: the config is not in {s['weights']}: {e}") from None
            result = score_subnet(net, sub, data, bn_batches=s["bn_recalibration_batches"],
                                  batch_size=s["batch_size"], eval_batch_size=s["eval_batch_size"],
                                  seed=seed, device=device)
        except DataError as e:
            raise TrialError(f"data: {e}") from e
        finally:
            torch.set_num_threads(threads_before)
        return {"score": result["accuracy"], "epochs": 0, "history": [result["accuracy"]],
                "val_loss": [result["val_loss"]], "weights": None, "fidelity": 1.0,
                "dataset": dataset_record(s["dataset"], data, s["resolution"]),
                "supernet": s["weights"], "wall_s": time.perf_counter() - t0}


    def data(self):
        """The data set; with keep_data_mb > 0 its splits that fit are decoded once and kept
        (`nas.supernet.score.keep_split`) for every later trial of this evaluator."""
        from nas.data import Dataset, load_dataset
        from nas.supernet.score import keep_split, split_nbytes

        s = self.settings
        data = load_dataset(s["dataset"], tuple(s["resolution"]))
        if not s["keep_data_mb"]:
            return data
        key = (json.dumps(s["dataset"], sort_keys=True, default=str), tuple(s["resolution"]))
        if key not in self._kept:
            limit = s["keep_data_mb"] * 2 ** 20
            train, val = (keep_split(split) if split_nbytes(split) <= limit else split
                          for split in (data.train, data.val))
            self._kept[key] = Dataset(train, val, data.num_classes, data.class_names, data.description)
        return self._kept[key]


def _default_val_images(dataset: Mapping[str, Any]) -> int | None:
    """The default validation subset for this data set: DEFAULT_VAL_IMAGES images, or None (the
    whole split) where the data set already fixes fewer, picks per class, or is generated
    (a procedural set's `val_size` is how many images it makes, not a subset)."""
    if dataset.get("kind", "procedural") == "procedural" or dataset.get("val_per_class") is not None:
        return None
    if dataset.get("val_size") is not None and dataset["val_size"] <= DEFAULT_VAL_IMAGES:
        return None
    return DEFAULT_VAL_IMAGES


def _with_val_images(dataset: Mapping[str, Any], count: int) -> dict:
    """The data set settings validating on `count` images (a class-balanced subset, `val_size`)."""
    out = dict(dataset)
    if out.get("val_per_class") is not None:
        raise ValueError(f"evaluator 'supernet': val_images={count} and the data set's val_per_class="
                         f"{out['val_per_class']} are exclusive (give one)")
    if out.get("val_size") is not None and count > out["val_size"]:
        raise ValueError(f"evaluator 'supernet': val_images={count} is more than the data set's "
                         f"val_size={out['val_size']}")
    out["val_size"] = count
    return out


def _read_card(weights: str) -> dict:
    from nas.supernet import folder

    try:
        return folder.read_card(weights)
    except folder.SupernetFolderError as e:
        raise ValueError(f"evaluator 'supernet': weights={weights!r}: {e}") from None
