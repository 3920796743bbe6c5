"""Training at export time: `--train` (the study's `train` evaluator, from scratch or from the
weights `--from-supernet` inherited) and `train_model` (fine-tuning an exported model in Python).
Both train with the project's one recipe, `nas.training.Recipe`: the evaluator runs it, and
`train_model` calls it directly with the study's settings or the recipe's defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from overlock import OverLoCKConfig
from nas.export.inherit import check_classes
from nas.export.weights import model_from_weights
from nas.selection import ExportError
from nas.storage import jsonable as _jsonable
from nas.storage import one_line as _one_line

__all__ = ["TrainSpec", "parse_dataset", "train_with_evaluator", "train_model"]


@dataclass
class TrainSpec:
    """An optional training schedule run at export time (from scratch, seeded).

    Args:
        epochs: epochs of the full schedule.
        dataset: a `dataset:` settings dict of `nas.data` (None: the study's, else procedural).
        device: where to train.
        settings: further `train` evaluator settings (lr, batch_size, ...); the study's own train
            settings are the base.
    """

    epochs: int = 10
    dataset: Mapping[str, Any] | None = None
    device: str = "cpu"
    settings: Mapping[str, Any] = field(default_factory=dict)


def parse_dataset(text: str | None) -> dict | None:
    """`--dataset`: `procedural`, `imagefolder:PATH`, `cifar:PATH`, a directory (CIFAR batches
    are recognised, anything else is an image folder) or a YAML mapping
    (`{kind: procedural, train_size: 2048}`)."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{"):
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ExportError(f"--dataset {text!r}: not a YAML mapping ({_one_line(e)})") from None
        if not isinstance(value, dict):
            raise ExportError(f"--dataset {text!r}: not a mapping")
        return value
    if text == "procedural":
        return {"kind": "procedural"}
    for kind in ("imagefolder", "cifar"):
        if text.startswith(kind + ":"):
            return {"kind": kind, "path": text[len(kind) + 1:]}
    if os.path.isdir(text):
        is_cifar = any(os.path.isfile(os.path.join(text, f)) for f in ("data_batch_1", "train"))
        return {"kind": "cifar" if is_cifar else "imagefolder", "path": text}
    raise ExportError(f"--dataset {text!r}: expected procedural, imagefolder:PATH, cifar:PATH, a "
                      "directory or a YAML mapping")


def train_with_evaluator(study, config: OverLoCKConfig, spec: TrainSpec, seed: int, workdir: str,
                         log: Callable[[str], None], start=None):
    """Train `config` with the study's `train` evaluator; (model, info). From scratch, or with
    `start` = (model, weights record, SupernetStart) from those inherited weights (fine-tuning;
    the data set defaults to the supernet's when the study's evaluator is not `train`)."""
    from nas.evaluators import TrialError, get_evaluator

    stored = study.user_attrs.get("evaluator")
    base = {}
    if isinstance(stored, Mapping) and stored.get("name", "train") == "train":
        base = {k: v for k, v in stored.items() if k != "name"}
    settings = {**base, **dict(spec.settings), "epochs": int(spec.epochs), "rungs": None,
                "save_weights": True}
    if spec.dataset is not None:
        settings["dataset"] = dict(spec.dataset)
    elif start is not None and "dataset" not in base:
        settings["dataset"] = start[2].card["dataset_settings"]
    try:
        evaluator = get_evaluator("train", settings)
    except ValueError as e:
        raise ExportError(f"--train: {e}") from None
    init_state = None
    if start is not None:
        check_classes(start[2], evaluator.settings["dataset"], config.resolution, "the --train data set")
        init_state = start[0].state_dict()
    log(f"training {config.config_hash()} for {spec.epochs} epochs on "
        f"{evaluator.settings['dataset'].get('kind')} ({spec.device}) "
        f"{'from the inherited weights' if start is not None else 'from scratch'} ...")
    try:
        result = evaluator.evaluate(config, budget_epochs=None, device=spec.device, seed=seed,
                                    workdir=workdir, resume_from=None, weights_name="export-train",
                                    init_state=init_state)
    except TrialError as e:
        raise ExportError(f"--train failed: {e.reason}") from None
    model = model_from_weights(config, Path(result["weights"]), "the --train run")
    info = {"source": "train", "seed": seed, "evaluator": "train",
            "settings": _jsonable(evaluator.settings), "score": result["score"],
            "history": result["history"], "train_loss": result.get("train_loss"),
            "epochs": result["epochs"], "wall_s": result.get("wall_s")}
    if start is not None:
        info.update(start="supernet", supernet=start[1]["supernet"])
    return model, info


def train_model(model: torch.nn.Module, dataset: Mapping[str, Any] | None = None, *, epochs: int = 1,
                steps: int | None = None, lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                device: str = "cpu", settings: Mapping[str, Any] | None = None) -> dict:
    """Fine-tune `model` in place with the project's training recipe (`nas.training.Recipe`, the
    `train` evaluator's: its loss with the aux head weighted by `aux_weight`, AdamW, warm-up +
    cosine over `epochs`, the data set kind's augmentation, batch norm re-estimated before
    validating).

    Trains on `nas.data`'s data set (`dataset` settings; None = procedural) at the model's
    resolution. `settings`: recipe settings (`nas.training.SCHEMA`), e.g. a study's `train`
    evaluator settings (its other keys are ignored); a key it leaves out takes the recipe's
    default (aux_weight 0.4, the weight export has always trained the aux head with). `lr` and
    `batch_size` override the settings' own. `steps` stops early after that many optimiser steps.

    Returns:
        {"loss": [per-step training loss], "accuracy": validation top-1 after training,
        "val_loss": mean validation cross-entropy}.
    Raises:
        ExportError: the data set's classes differ from the model's; a bad setting; a loss that
        stopped being finite.
    """
    from nas.data import load_dataset
    from nas.training import NonFiniteLoss, Recipe

    config = model.config
    data = load_dataset(dataset or {"kind": "procedural"}, config.resolution)
    if data.num_classes != config.num_classes:
        raise ExportError(f"the model has {config.num_classes} classes, the data set "
                          f"{data.num_classes}; load it with num_classes={data.num_classes}")
    try:
        recipe = Recipe.from_settings({**dict(settings or {}), "lr": lr, "batch_size": batch_size})
    except ValueError as e:
        raise ExportError(f"train_model: {e}") from None
    model.to(device)
    optimizer = recipe.optimizer(model)
    schedule = recipe.schedule(data.train.steps(batch_size, drop_last=True), epochs)
    losses: list[float] = []
    for epoch in range(epochs):
        left = None if steps is None else steps - len(losses)
        if left is not None and left <= 0:
            break
        try:
            recipe.train_epoch(model, optimizer, data.train, epoch, seed=seed, schedule=schedule,
                               device=device, max_steps=left, step_losses=losses)
        except NonFiniteLoss as e:
            raise ExportError(f"train_model: {e}") from None
    recipe.reestimate_bn(model, data.train, seed=seed, device=device)
    accuracy, val_loss = recipe.validate(model, data.val, device=device)
    return {"loss": losses, "accuracy": accuracy, "val_loss": val_loss}
