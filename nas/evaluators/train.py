"""Proxy training: a short, honest training run whose validation accuracy scores an architecture.

Recipe (the official OverLoCK recipe, shortened): AdamW (no weight decay on norms, biases and
other 1-D parameters), linear warm-up then cosine decay per step over the *full* budget, label
smoothing, the auxiliary-head loss `main + aux_weight * aux` (OverLoCK trains with an aux
classifier on the Overview-Net), AMP (bf16, else fp16 with a grad scaler) on GPU, optional
channels_last, cuDNN autotuning (`cudnn.benchmark`) on GPU, and top-1 validation accuracy after
every epoch.

Successive halving: the learning-rate schedule and the data order depend only on (seed, epoch,
step) and the full budget, and the optimiser state is saved beside the weights, so training to
rung 1 and resuming to rung 2 gives the same model as training straight to rung 2.

Files written under `workdir` (atomic): `<name>.safetensors` (model weights; metadata: config,
epochs, score) and `<name>.state.pt` (optimiser, grad scaler, history: what resuming needs).
"""

from __future__ import annotations

import math
import os
import pickle
import time
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .base import (Evaluator, Setting, TrialError, boolean, choice, dataset, dataset_record, fit_to_data,
               integer, number, resolution, resolve_settings)

SCHEMA = {
    "dataset": Setting({"kind": "procedural"}, dataset),
    "epochs": Setting(10, integer(1)),
    "rungs": Setting(None, lambda k, v: v),           # checked against epochs below
    "batch_size": Setting(64, integer(1)),
    "eval_batch_size": Setting(256, integer(1)),
    "lr": Setting(1e-3, number(0, low_open=True)),
    "min_lr": Setting(1e-5, number(0)),
    "weight_decay": Setting(0.05, number(0)),
    "warmup_epochs": Setting(1.0, number(0)),
    "label_smoothing": Setting(0.1, number(0, 1)),
    "aux_weight": Setting(0.4, number(0)),
    "drop_path_rate": Setting(0.0, number(0, 1)),
    "grad_clip": Setting(None, number(0, low_open=True)),
    "augment": Setting(True, lambda k, v: _augment_setting(k, v)),
    "amp": Setting("auto", choice("auto", "bf16", "fp16", "off")),
    "channels_last": Setting(False, boolean),
    "threads": Setting(None, integer(1)),
    "resolution": Setting(None, resolution),
    "save_weights": Setting(True, boolean),
    "bn_recalibration_batches": Setting(4, integer(0)),
}

# settings that must not change between the rungs of one trial
_RESUME_FINGERPRINT = ("dataset", "epochs", "batch_size", "lr", "min_lr", "weight_decay",
                       "warmup_epochs", "label_smoothing", "aux_weight", "drop_path_rate", "augment",
                       "resolution")


def _augment_setting(key: str, value: Any):
    """true (the data set's defaults), false, or a mapping of overrides (nas.data.check_augment)."""
    from nas.data import DataError, check_augment

    try:
        return check_augment(value, key)
    except DataError as e:
        raise ValueError(str(e)) from None


def _resolved_augment(value, data) -> dict | None:
    """The augmentation training really used (the data set kind's defaults filled in)."""
    from nas.data import resolve_augment

    aug = resolve_augment(value, getattr(data.train, "kind", "procedural"))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in aug.items()} if aug else None


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


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
        optimizer = self._optimizer(model)
        amp_dtype = self._amp_dtype(device)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None

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

        steps = data.train.steps(s["batch_size"], drop_last=True)
        schedule = (steps, full * steps, round(s["warmup_epochs"] * steps))   # steps: per epoch, total, warmup
        t0 = time.perf_counter()
        for epoch in range(start_epoch, target):
            losses.append(self._train_epoch(model, optimizer, scaler, data.train, epoch, seed, schedule,
                                            device, amp_dtype, memory_format))
            self._recalibrate_bn(model, data.train, device, amp_dtype, memory_format,
                                 seed=_mix(seed, epoch, 2))
            accuracy, val_loss = self._validate(model, data.val, device, amp_dtype, memory_format)
            # a streamed split's workers restart on its next pass (a fork, well under a second),
            # so validation's loader processes are not kept alive beside training's all epoch
            data.val.close()
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
            "dataset": dataset_record(s["dataset"], data, res, _resolved_augment(s["augment"], data)),
            "data_skipped": len(skipped),             # unreadable images left out (never a crash)
            **({"data_skipped_first": next(iter(skipped.items()))} if skipped else {}),
            "wall_s": wall,
        }

    def _train_epoch(self, model, optimizer, scaler, train, epoch: int, seed: int, schedule: tuple,
                     device, amp_dtype, memory_format) -> float:
        """One epoch of training (learning rate per step from `schedule`); its mean loss.
        TrialError when the loss stops being finite."""
        s = self.settings
        steps, total_steps, warmup_steps = schedule
        model.train()
        torch.manual_seed(_mix(seed, epoch))  # drop path: a function of (seed, epoch) only
        epoch_loss, n = 0.0, 0
        batches = train.batches(s["batch_size"], shuffle=True, seed=_mix(seed, epoch, 1),
                                augment=s["augment"], device=device, drop_last=True,
                                memory_format=memory_format)
        for i, (x, y) in enumerate(batches):
            lr = _lr_at(epoch * steps + i, total_steps, warmup_steps, s["lr"], s["min_lr"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x)
                loss = self._loss(out, y)
            if not torch.isfinite(loss):
                raise TrialError(f"loss became {loss.item()} at epoch {epoch + 1} step {i + 1} "
                                 f"(lr {lr:.3g})")
            self._step(model, optimizer, scaler, loss)
            epoch_loss += loss.item() * len(y)
            n += len(y)
        return epoch_loss / max(n, 1)

    def _step(self, model, optimizer, scaler, loss) -> None:
        """Back-propagate `loss` and step (loss scaling under fp16 AMP, gradient clipping)."""
        clip = self.settings["grad_clip"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()

    def _optimizer(self, model) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or p.numel() == max(p.shape) else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.settings["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.settings["lr"], betas=(0.9, 0.999))

    def _amp_dtype(self, device: torch.device):
        amp = self.settings["amp"]
        if amp == "off" or (amp == "auto" and device.type != "cuda"):
            return None
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _loss(self, out, y):
        smoothing = self.settings["label_smoothing"]
        if isinstance(out, dict):
            loss = F.cross_entropy(out["main"].float(), y, label_smoothing=smoothing)
            if "aux" in out and self.settings["aux_weight"] > 0:
                loss = loss + self.settings["aux_weight"] * F.cross_entropy(
                    out["aux"].float(), y, label_smoothing=smoothing)
            return loss
        return F.cross_entropy(out.float(), y, label_smoothing=smoothing)

    @torch.no_grad()
    def _recalibrate_bn(self, model, split, device, amp_dtype, memory_format, seed: int) -> None:
        """Re-estimate batch-norm statistics on a random sample of training images before validating.

        After a few dozen steps the running averages (momentum 0.1) still carry their initial
        values, so eval-mode accuracy lags the network (every trial scores ~chance after epoch 1);
        exact averages over a sample fix that, as in once-for-all's BN calibration. The sample is
        drawn at random (seeded) from the whole split and preprocessed as validation images are:
        folders list their images class by class, and statistics taken from the first batches in
        file order describe one or two classes only (issue 12: -30 points, +-0.2 swings). Only the
        norms switch to training mode: drop path and dropout stay off, the aux head still runs so
        its norms are re-estimated too.
        """
        n = self.settings["bn_recalibration_batches"]
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if n == 0 or not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        model.eval()
        model.training = True  # the root only: OverLoCK runs its aux head in training mode
        for m in norms:
            m.train()
        try:
            batches = split.batches(self.settings["batch_size"], shuffle=True, seed=seed, device=device,
                                    memory_format=memory_format, max_batches=n)
            for x, _ in batches:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    model(x)
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            model.eval()

    @torch.no_grad()
    def _validate(self, model, split, device, amp_dtype, memory_format) -> tuple[float, float]:
        """(top-1 accuracy, mean cross-entropy) on `split`."""
        model.eval()
        correct, loss_sum = 0, 0.0
        for x, y in split.batches(self.settings["eval_batch_size"], device=device,
                                  memory_format=memory_format):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        n = max(len(split), 1)
        return correct / n, loss_sum / n

    def _fingerprint(self) -> dict:
        from nas.data import LOADER_KEYS

        out = {k: self.settings[k] for k in _RESUME_FINGERPRINT}
        # worker count, prefetch and the decode cache change how batches are made, not what they hold
        out["dataset"] = {k: v for k, v in out["dataset"].items() if k not in LOADER_KEYS}
        return out

    def _save(self, model, optimizer, scaler, config, workdir, name, epochs, history, losses, val_losses):
        from safetensors.torch import save_file

        os.makedirs(workdir, exist_ok=True)
        weights = os.path.join(workdir, f"{name}.safetensors")
        state = os.path.join(workdir, f"{name}.state.pt")
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        metadata = {"format": "overlock-nas/train", "config": config.to_json(indent=None),
                    "epochs": str(epochs), "score": repr(history[-1] if history else float("nan"))}
        _atomic_write(weights, lambda p: save_file(tensors, p, metadata=metadata))
        payload = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                   "epochs": epochs, "history": history, "train_loss": losses, "val_loss": val_losses,
                   "fingerprint": self._fingerprint(), "config_hash": config.config_hash()}
        _atomic_write(state, lambda p: torch.save(payload, p))
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


def _lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to `peak`, then cosine down to `floor` at `total` steps."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from integers (no Python hash randomisation)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) % (1 << 64)
    return h & ((1 << 63) - 1)
