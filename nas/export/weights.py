"""The weights an export starts from when nothing is trained or inherited at export time: the
trial's own trained weights (a safetensors file its evaluator saved), or freshly initialised ones
with a stated seed. `model_from_weights` also reads what `--train` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

import overlock
from overlock import ConfigError, OverLoCKConfig, hub
from nas.selection import ExportError
from nas.storage import one_line as _one_line

__all__ = ["model_from_weights", "trial_weights", "initial_weights"]


def model_from_weights(config: OverLoCKConfig, path: Path, what: str) -> overlock.OverLoCK:
    """A train-structure model holding the weights of `path` (safetensors only).

    The train evaluator adapts `num_classes` / `in_chans` to its data set and tags the file with
    the config it trained; that config is used when it differs from `config` only there.
    """
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ExportError(f"{what}: weights file {path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tags = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"{what}: {path} is not a readable safetensors file ({_one_line(e)})") from None
    if "config" in tags:
        try:
            trained = OverLoCKConfig.from_json(tags["config"])
        except (ConfigError, ValueError) as e:
            raise ExportError(f"{what}: {path} carries an invalid config ({e})") from None
        differs = {k for k, v in trained.to_dict().items() if config.to_dict()[k] != v}
        if differs - {"num_classes", "in_chans"}:
            raise ExportError(f"{what}: {path} holds weights of another architecture "
                              f"(differs in {', '.join(sorted(differs))})")
        config = trained
    model = overlock.OverLoCK(config)
    try:
        hub.load_state(model, tensors, path)
    except ConfigError as e:
        raise ExportError(f"{what}: {e}") from None
    return model


def trial_weights(trial, config: OverLoCKConfig, run_dir, log: Callable[[str], None]):
    """(model, weights record) from the trial's `weights` attribute (relative to `run_dir`)."""
    attrs = trial.user_attrs
    rel = Path(attrs["weights"])
    if rel.is_absolute():
        path = rel
    elif run_dir is None:
        raise ExportError(f"trial {trial.number}'s weights are at RUN_DIR/{rel}; pass RUN_DIR")
    else:
        path = Path(run_dir) / rel
    model = model_from_weights(config, path, f"trial {trial.number}")
    weights = {"source": "trial", "file": str(rel), "evaluator": attrs.get("evaluator"),
               "epochs": attrs.get("epochs"), "fidelity": attrs.get("fidelity")}
    log(f"weights: trial {trial.number}'s trained weights ({rel})")
    return model, weights


def initial_weights(config: OverLoCKConfig, seed: int, log: Callable[[str], None]):
    """(model, weights record): freshly initialised with `seed`."""
    torch.manual_seed(seed)
    model = overlock.OverLoCK(config)
    weights = {"source": "init", "seed": seed,
               "note": "freshly initialised (the trial's evaluator saved no weights): train "
                       "or fine-tune before use"}
    log(f"weights: freshly initialised, seed {seed} (the trial has no trained weights)")
    return model, weights
