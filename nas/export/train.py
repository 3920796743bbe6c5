"""Training at export time: `--train` (the study's `train` evaluator, from scratch or from the
weights `--from-supernet` inherited) and `train_model`, a plain fine-tuning loop for an exported
model. Kept apart so that one shared training recipe can replace both (issue 25, item 2)."""

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
                device: str = "cpu") -> dict:
    """A plain fine-tuning loop (AdamW, cross-entropy, aux loss when the model returns one).

    Trains `model` in place on `nas.data`'s data set (`dataset` settings; None = procedural) at
    the model's resolution. `steps` stops early after that many optimiser steps.

    Returns:
        {"loss": [per-step training loss], "accuracy": validation top-1 after training}.
    """
    import torch.nn.functional as F

    from nas.data import load_dataset

    config = model.config
    data = load_dataset(dataset or {"kind": "procedural"}, config.resolution)
    if data.num_classes != config.num_classes:
        raise ExportError(f"the model has {config.num_classes} classes, the data set "
                          f"{data.num_classes}; load it with num_classes={data.num_classes}")
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    for epoch in range(epochs):
        for x, y in data.train.batches(batch_size, shuffle=True, seed=seed + epoch, device=device,
                                       drop_last=True):
            out = model(x)
            if isinstance(out, dict):
                loss = F.cross_entropy(out["main"], y) + 0.4 * F.cross_entropy(out["aux"], y)
            else:
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if steps is not None and len(losses) >= steps:
                break
        if steps is not None and len(losses) >= steps:
            break
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in data.val.batches(256, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return {"loss": losses, "accuracy": correct / max(len(data.val), 1)}
