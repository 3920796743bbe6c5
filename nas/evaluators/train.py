"""Proxy training: a short, honest training run whose validation accuracy scores an architecture.

The recipe is the project's one training recipe, `nas.training.Recipe` (the official OverLoCK
recipe, shortened): AdamW (no weight decay on norms, biases and other 1-D parameters), linear
warm-up then cosine decay per step over the *full* budget, label smoothing, the auxiliary-head
loss `main + aux_weight * aux`, AMP (bf16, else fp16 with a grad scaler) on GPU, batch norm
re-estimated before top-1 validation after every epoch. This module adds what a trial needs
around it: the trial's settings (rungs, data set, resolution, threads, channels_last, cuDNN
autotuning on GPU), checkpoints and resuming, and classifying failures as `TrialError`s.

Successive halving: the learning-rate schedule and the data order depend only on (seed, epoch,
step) and the full budget, and the optimiser state is saved beside the weights, so training to
rung 1 and resuming to rung 2 gives the same model as training straight to rung 2.

Files written under `workdir` (atomic): `<name>.safetensors` (model weights; metadata: config,
epochs, score) and `<name>.state.pt` (optimiser, grad scaler, history: what resuming needs).
"""

from __future__ import annotations

import io
import os
import pickle
import time
from typing import Any, Mapping

import torch

from nas.training import SCHEMA as RECIPE_SCHEMA
from nas.training import NonFiniteLoss, Recipe, resolved_augment
from nas.util import write_atomic

from .base import (Evaluator, Setting, TrialError, boolean, dataset, dataset_record, fit_to_data, integer,
                   number, resolution, resolve_settings)

# the trial's keys and the recipe's (nas.training.SCHEMA), in the order settings are stored
SCHEMA = {
    "dataset": Setting({"kind": "procedural"}, dataset),
    "epochs": Setting(10, integer(1)),
    "rungs": Setting(None, lambda k, v: v),           # checked against epochs below
    **{k: RECIPE_SCHEMA[k] for k in ("batch_size", "eval_batch_size", "lr", "min_lr", "weight_decay",
                                     "warmup_epochs", "label_smoothing", "aux_weight")},
    "drop_path_rate": Setting(0.0, number(0, 1)),
    **{k: RECIPE_SCHEMA[k] for k in ("grad_clip", "augment", "amp")},
    "channels_last": Setting(False, boolean),
    "threads": Setting(None, integer(1)),
    "resolution": Setting(None, resolution),
    "save_weights": Setting(True, boolean),
    "bn_recalibration_batches": RECIPE_SCHEMA["bn_recalibration_batches"],
}

# settings that must not change between the rungs of one trial
_RESUME_FINGERPRINT = ("dataset", "epochs", "batch_size", "lr", "min_lr", "weight_decay",
                       "warmup_epochs", "label_smoothing", "aux_weight", "drop_path_rate", "augment",
                       "resolution")


def _check_rungs(rungs: Any, epochs: int) -> list[int]:
    if rungs is None:
        return []
    if not isinstance(rungs, (list, tuple)) or not rungs:
        raise ValueError(f"rungs={rungs!r} must be a non-empty list of epoch counts, e.g. [1, 3, {epochs}]")
    for r in rungs:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"rungs={list(rungs)!r}: entry {r!r} must be an integer >= 1")
    if list(rungs) != sorted(set(rungs)):
        raise ValueError(f"rungs={list(rungs)!r} must be strictly increasing")
    if rungs[-1] > epochs:
        raise ValueError(f"rungs={list(rungs)!r}: last rung {rungs[-1]} exceeds epochs={epochs}")
    out = list(rungs)
    if out[-1] != epochs:
        out.append(epochs)  # the full budget is always the last rung
    return out


def _torch_bytes(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(error, oom_type) or (isinstance(error, RuntimeError)
                                          and "out of memory" in str(error).lower())


class TrainEvaluator(Evaluator):
    """Proxy training; see the module docstring. Settings (all optional):

    dataset ({kind: procedural}), epochs (10, the full budget), rungs (none; e.g. [1, 3] ->
    [1, 3, epochs]), batch_size (64), eval_batch_size (256), lr (1e-3), min_lr (1e-5),
    weight_decay (0.05), warmup_epochs (1.0), label_smoothing (0.1), aux_weight (0.4),
    drop_path_rate (0), grad_clip (none), augment (true: the data set kind's defaults,
    nas.data.DEFAULT_AUGMENT; false: none; or a mapping of overrides {hflip, crop: random_resized |
    padded | none, rrc_scale, rrc_ratio, randaugment: {n, m}, mixup, cutmix}), amp (auto: bf16 or
    fp16 on CUDA, off on CPU), channels_last (false), threads (torch threads; none = leave),
    resolution (training resolution; none = the config's), save_weights (true),
    bn_recalibration_batches (4: batch-norm statistics re-estimated before each validation on this
    many batches drawn at random from the training split, unaugmented; 0 = keep the running
    averages). Augmentation defaults per kind (docs/how-to/own-images.md): folders are never mirrored
    unless `augment: {hflip: true}`; CIFAR and the procedural set are.
    """

    name = "train"
    metric = "accuracy"

    def __init__(self, settings: Mapping[str, Any] | None = None):
        resolved = resolve_settings("train", settings, SCHEMA)
        resolved["rungs"] = _check_rungs(resolved["rungs"], resolved["epochs"])
        self.settings = resolved
        self.rungs = list(resolved["rungs"])
        self.recipe = Recipe(**{k: resolved[k] for k in RECIPE_SCHEMA})

    # ------------------------------------------------------------------------------- public
    def evaluate(self, config, *, budget_epochs: int | None, device: str = "cpu", seed: int = 0,
                 workdir: str, resume_from: str | None = None, weights_name: str | None = None,
                 init_state: Mapping[str, torch.Tensor] | None = None) -> dict:
        """Train `config` up to `budget_epochs` (None = the full `epochs`), resuming if asked.

        `init_state`: a state_dict the model starts from instead of its seeded initialisation
        (fine-tuning, e.g. `export --from-supernet --train`); loaded strictly, not with `resume_from`.

        Returns {"score" (last validation accuracy), "epochs", "history" (accuracy per epoch),
        "train_loss" and "val_loss" (mean cross-entropy per epoch), "weights" (path or None),
        "state" (path or None), "fidelity" (epochs / full epochs), "num_classes", "resolution", "wall_s"}.
        Raises TrialError (NaN/inf loss, out of memory, data problem, unusable resume files).
        """
        threads_before = torch.get_num_threads()
        cudnn_before = torch.backends.cudnn.benchmark
        # fixed batch shapes: on CUDA, cuDNN autotunes its conv kernels once and reuses them
        torch.backends.cudnn.benchmark = cudnn_before or torch.device(device).type == "cuda"
        try:
            return self._evaluate(config, budget_epochs, device, seed, workdir, resume_from, weights_name,
                                  init_state)
        except TrialError:
            raise
        except NonFiniteLoss as e:
            raise TrialError(str(e)) from e
        except Exception as e:  # noqa: BLE001 - classify, keep one line
            from nas.data import DataError

            if _is_oom(e):
                if str(device).startswith("cuda"):
                    torch.cuda.empty_cache()
                raise TrialError(f"out of memory on {device} (batch {self.settings['batch_size']}): "
                                 f"{str(e).splitlines()[0][:160]}") from e
            if isinstance(e, DataError):
                raise TrialError(f"data: {e}") from e
            raise
        finally:
            torch.set_num_threads(threads_before)  # `threads` holds for this trial only
            torch.backends.cudnn.benchmark = cudnn_before

    # ------------------------------------------------------------------------------ internals
    def _evaluate(self, config, budget_epochs, device, seed, workdir, resume_from, weights_name,
                  init_state=None):
        from overlock import OverLoCK
        from nas.data import load_dataset

        s = self.settings
        full = s["epochs"]
        target = full if budget_epochs is None else int(budget_epochs)
        if target < 1:
            raise ValueError(f"budget_epochs={budget_epochs!r} must be >= 1")
        target = min(target, full)
        if s["threads"]:
            torch.set_num_threads(s["threads"])
        device = torch.device(device)
        res = tuple(s["resolution"] or config.resolution)
        data = load_dataset(s["dataset"], res)
        train_config = fit_to_data(config, data)

        torch.manual_seed(seed)
        model = OverLoCK(train_config, drop_path_rate=s["drop_path_rate"]).to(device)
        if init_state is not None:
            _load_initial(model, init_state, resume_from)
        memory_format = torch.channels_last if s["channels_last"] else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        recipe = self.recipe
        optimizer = recipe.optimizer(model)
        amp_dtype = recipe.amp_dtype(device)
        scaler = recipe.grad_scaler(device, amp_dtype)

        history: list[float] = []
        losses: list[float] = []
        val_losses: list[float] = []
        start_epoch = 0
        if resume_from:
            start_epoch, history, losses, val_losses = self._resume(resume_from, model, optimizer,
                                                                    scaler, device)
        if start_epoch > target:
            raise TrialError(f"resume: {resume_from} is already trained {start_epoch} epochs, "
                             f"more than the budget {target}")

        schedule = recipe.schedule(data.train.steps(s["batch_size"], drop_last=True), full)
        t0 = time.perf_counter()
        for epoch in range(start_epoch, target):
            loss, accuracy, val_loss = recipe.run_epoch(model, optimizer, data, epoch, seed=seed,
                                                        schedule=schedule, device=device, amp_dtype=amp_dtype,
                                                        scaler=scaler, memory_format=memory_format)
            losses.append(loss)
            history.append(accuracy)
            val_losses.append(val_loss)
        wall = time.perf_counter() - t0

        skipped = data.skipped()
        weights = state = None
        if s["save_weights"]:
            name = weights_name or config.config_hash()
            weights, state = self._save(model, optimizer, scaler, train_config, workdir, name, target,
                                        history, losses, val_losses)
        return {
            "score": history[-1] if history else float("nan"),
            "epochs": target,
            "history": history,
            "train_loss": losses,
            "val_loss": val_losses,
            "weights": weights,
            "state": state,
            "fidelity": target / full,
            "num_classes": data.num_classes,
            "resolution": list(res),
            "dataset": dataset_record(s["dataset"], data, res, resolved_augment(s["augment"], data)),
            "data_skipped": len(skipped),             # unreadable images left out (never a crash)
            **({"data_skipped_first": next(iter(skipped.items()))} if skipped else {}),
            "wall_s": wall,
        }

    def _fingerprint(self) -> dict:
        from nas.data import LOADER_KEYS

        out = {k: self.settings[k] for k in _RESUME_FINGERPRINT}
        # worker count, prefetch and the decode cache change how batches are made, not what they hold
        out["dataset"] = {k: v for k, v in out["dataset"].items() if k not in LOADER_KEYS}
        return out

    def _save(self, model, optimizer, scaler, config, workdir, name, epochs, history, losses, val_losses):
        from safetensors.torch import save

        os.makedirs(workdir, exist_ok=True)
        weights = os.path.join(workdir, f"{name}.safetensors")
        state = os.path.join(workdir, f"{name}.state.pt")
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        metadata = {"format": "overlock-nas/train", "config": config.to_json(indent=None),
                    "epochs": str(epochs), "score": repr(history[-1] if history else float("nan"))}
        write_atomic(weights, save(tensors, metadata=metadata))
        payload = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                   "epochs": epochs, "history": history, "train_loss": losses, "val_loss": val_losses,
                   "fingerprint": self._fingerprint(), "config_hash": config.config_hash()}
        write_atomic(state, _torch_bytes(payload))
        return weights, state

    def _resume(self, path, model, optimizer, scaler, device):
        from safetensors.torch import load_file

        unreadable = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError,
                      *_safetensors_errors())

        state_path = state_path_for(path)
        if not os.path.isfile(path):
            raise TrialError(f"resume: weights {path} not found")
        if not os.path.isfile(state_path):
            raise TrialError(f"resume: optimiser state {state_path} not found")
        try:
            tensors = load_file(path, device=str(device))
            # plain types and tensors only: a state file never runs code when read
            payload = torch.load(state_path, map_location=device, weights_only=True)
        except unreadable as e:
            raise TrialError(f"resume: cannot read {path}: {str(e).splitlines()[0]}") from e
        if payload.get("config_hash") != model.config.config_hash():
            raise TrialError(f"resume: {path} belongs to another architecture")
        if payload.get("fingerprint") != self._fingerprint():
            mine = self._fingerprint()
            changed = sorted(k for k in mine if payload.get("fingerprint", {}).get(k) != mine[k])
            raise TrialError(f"resume: evaluator settings changed since {path} was written ({', '.join(changed)})")
        try:
            model.load_state_dict(tensors, strict=True)
            optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise TrialError(f"resume: {path} does not fit the model: {str(e).splitlines()[0][:160]}") from e
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        epochs = int(payload["epochs"])
        # a state written before validation losses were kept: NaN for its epochs
        val_losses = list(payload.get("val_loss", [float("nan")] * epochs))
        return epochs, list(payload["history"]), list(payload["train_loss"]), val_losses


def _load_initial(model, init_state, resume_from) -> None:
    """Start `model` from `init_state` (strict); TrialError (one line) when it does not fit."""
    if resume_from:
        raise ValueError("init_state and resume_from both set the starting weights; give one")
    try:
        model.load_state_dict(init_state, strict=True)
    except RuntimeError as e:
        raise TrialError(f"init_state does not fit the model: {' '.join(str(e).split())[:240]}") from e


def _safetensors_errors() -> tuple:
    import safetensors

    error = getattr(safetensors, "SafetensorError", None)
    return (error,) if isinstance(error, type) else ()


def state_path_for(weights_path: str) -> str:
    """The optimiser-state file saved beside `<name>.safetensors`."""
    base = weights_path[:-len(".safetensors")] if weights_path.endswith(".safetensors") else weights_path
    return base + ".state.pt"
