"""The training recipe: how every trained number of the project is made.

One recipe, used by the `train` evaluator (`nas/evaluators/train.py`: a trial's proxy training,
its rungs and checkpoints), supernet training (`nas/supernet/train.py`: the sandwich rule on this
loop; `nas/supernet/score.py`: a sub-network's re-estimation and validation) and export's
fine-tuning (`train_model`). This module owns:

- the settings of a training run: `SCHEMA` (each key's default and check) and `Recipe`, the
  validated values (`Recipe.from_settings`);
- the loss (`Recipe.loss`): cross-entropy with label smoothing plus `aux_weight` times the
  auxiliary head's (OverLoCK trains an aux classifier on the Overview-Net);
- the optimiser (`Recipe.optimizer`): AdamW, no weight decay on norms, biases and other 1-D
  parameters;
- the schedule (`Recipe.schedule`, `lr_at`): linear warm-up then cosine decay, per step, over the
  *full* budget, so training to a rung and resuming gives the same model as training straight on;
- mixed precision (`Recipe.amp_dtype`): bf16, else fp16 with a grad scaler, on CUDA; off on CPU;
- the loop (`Recipe.epoch_batches`, `Recipe.train_epoch`, `Recipe.step`, `Recipe.run_epoch`):
  an epoch whose data order and drop-path draws depend only on (seed, epoch, step);
- batch-norm re-estimation (`reestimate_bn`, `Recipe.reestimate_bn`): the only one in the project;
- validation (`Recipe.validate`): top-1 accuracy and mean cross-entropy.

It owns no files (the evaluator's checkpoints and resume, the supernet's folder and card), no
model construction, and not which sub-networks a supernet step trains: callers build the model,
hand it here, and keep what they need.

    >>> recipe = Recipe.from_settings({"lr": 2e-3, "batch_size": 32})
    >>> optimizer = recipe.optimizer(model)
    >>> schedule = recipe.schedule(data.train.steps(recipe.batch_size, drop_last=True), epochs=5)
    >>> for epoch in range(5):                                                   # doctest: +SKIP
    ...     train_loss, accuracy, val_loss = recipe.run_epoch(model, optimizer, data, epoch,
    ...                                                       seed=0, schedule=schedule)

Bad settings raise a one-line ValueError naming the key (`nas.settings`); a loss that stops
being finite raises `NonFiniteLoss`. This module imports `nas.data` and `nas.settings`, never an
evaluator: the evaluators build on it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import torch
import torch.nn.functional as F

from nas.settings import Setting, choice, integer, number, resolve_settings
from nas.util import seed_mix

__all__ = ["SCHEMA", "Recipe", "Schedule", "NonFiniteLoss", "lr_at", "reestimate_bn", "resolved_augment",
           "seed_mix"]


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite; the message is one line naming where. The train
    evaluator reports it as the trial's `TrialError`."""


def _augment_setting(key: str, value: Any):
    """true (the data set's defaults), false, or a mapping of overrides (nas.data.check_augment)."""
    from nas.data import DataError, check_augment

    try:
        return check_augment(value, key)
    except DataError as e:
        raise ValueError(str(e)) from None


# The recipe's settings: the train evaluator's (with its trial-only keys) and supernet training's
SCHEMA = {
    "batch_size": Setting(64, integer(1)),
    "eval_batch_size": Setting(256, integer(1)),
    "lr": Setting(1e-3, number(0, low_open=True)),
    "min_lr": Setting(1e-5, number(0)),
    "weight_decay": Setting(0.05, number(0)),
    "warmup_epochs": Setting(1.0, number(0)),
    "label_smoothing": Setting(0.1, number(0, 1)),
    "aux_weight": Setting(0.4, number(0)),
    "grad_clip": Setting(None, number(0, low_open=True)),
    "augment": Setting(True, _augment_setting),
    "amp": Setting("auto", choice("auto", "bf16", "fp16", "off")),
    "bn_recalibration_batches": Setting(4, integer(0)),
}


class Schedule(NamedTuple):
    """Steps per epoch, total steps of the full budget, warm-up steps; `lr(epoch, i)` per step."""

    steps: int
    total: int
    warmup: int
    peak: float
    floor: float

    def lr(self, epoch: int, i: int) -> float:
        return lr_at(epoch * self.steps + i, self.total, self.warmup, self.peak, self.floor)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The validated settings of one training run (`SCHEMA`'s keys) and what they train with.

    Build it with `Recipe.from_settings(mapping)` (defaults filled in, bad values refused);
    the methods take the model, data split and device per call, so one recipe trains many models.
    """

    batch_size: int
    eval_batch_size: int
    lr: float
    min_lr: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    aux_weight: float
    grad_clip: float | None
    augment: Any
    amp: str
    bn_recalibration_batches: int

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, *, owner: str = "train") -> "Recipe":
        """The recipe of `settings` (the `SCHEMA` keys it has; other keys are ignored, so an
        evaluator's whole settings mapping may be passed). Raises ValueError naming a bad value."""
        given = {k: v for k, v in (settings or {}).items() if k in SCHEMA}
        return cls(**resolve_settings(owner, given, SCHEMA))

    def settings(self) -> dict:
        """{key: value} for every `SCHEMA` key."""
        return dataclasses.asdict(self)

    # -------------------------------------------------------------------- the pieces
    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW; norms, biases and other 1-D parameters without weight decay."""
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or p.numel() == max(p.shape) else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.999))

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        """Warm-up + cosine over `epochs` full epochs of `steps_per_epoch` steps."""
        return Schedule(steps_per_epoch, epochs * steps_per_epoch,
                        round(self.warmup_epochs * steps_per_epoch), self.lr, self.min_lr)

    def amp_dtype(self, device: torch.device | str) -> torch.dtype | None:
        """The autocast dtype on `device` (None: full precision)."""
        device = torch.device(device)
        if self.amp == "off" or (self.amp == "auto" and device.type != "cuda"):
            return None
        if self.amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if self.amp == "bf16" else torch.float16

    def grad_scaler(self, device: torch.device | str, amp_dtype: torch.dtype | None):
        """A grad scaler for fp16 on CUDA, else None."""
        needed = amp_dtype == torch.float16 and torch.device(device).type == "cuda"
        return torch.amp.GradScaler("cuda") if needed else None

    def loss(self, out, y: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy of the main head, plus `aux_weight` x the aux head's when
        the model returns {"main", "aux"}. `y`: class indices or class probabilities (mixup)."""
        if isinstance(out, dict):
            loss = F.cross_entropy(out["main"].float(), y, label_smoothing=self.label_smoothing)
            if "aux" in out and self.aux_weight > 0:
                loss = loss + self.aux_weight * F.cross_entropy(
                    out["aux"].float(), y, label_smoothing=self.label_smoothing)
            return loss
        return F.cross_entropy(out.float(), y, label_smoothing=self.label_smoothing)

    def step(self, model, optimizer, scaler, loss) -> None:
        """Back-propagate `loss` and step (loss scaling under fp16 AMP, gradient clipping)."""
        clip = self.grad_clip
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

    # ---------------------------------------------------------------------- the loop
    def epoch_batches(self, optimizer, split, epoch: int, *, seed: int, schedule: Schedule,
                      device: torch.device | str = "cpu",
                      memory_format=torch.contiguous_format) -> Iterator[tuple[int, float, Any, Any]]:
        """(step i, lr, images, labels) of epoch `epoch`, the optimiser's learning rate set to lr.

        Torch's global generator is seeded from (seed, epoch) (drop path) and the data order from
        (seed, epoch, 1): an epoch is the same whether training started at it or resumed there.
        """
        torch.manual_seed(seed_mix(seed, epoch))
        batches = split.batches(self.batch_size, shuffle=True, seed=seed_mix(seed, epoch, 1),
                                augment=self.augment, device=torch.device(device), drop_last=True,
                                memory_format=memory_format)
        for i, (x, y) in enumerate(batches):
            lr = schedule.lr(epoch, i)
            for group in optimizer.param_groups:
                group["lr"] = lr
            yield i, lr, x, y

    def train_epoch(self, model, optimizer, split, epoch: int, *, seed: int, schedule: Schedule,
                    device: torch.device | str = "cpu", amp_dtype=None, scaler=None,
                    memory_format=torch.contiguous_format, max_steps: int | None = None,
                    step_losses: list | None = None) -> float:
        """One epoch of training; its mean loss. `max_steps` ends it early (a fine-tuning budget
        in steps); `step_losses` receives each step's loss. NonFiniteLoss when the loss stops
        being finite."""
        device = torch.device(device)
        model.train()
        epoch_loss, n = 0.0, 0
        for i, lr, x, y in self.epoch_batches(optimizer, split, epoch, seed=seed, schedule=schedule,
                                              device=device, memory_format=memory_format):
            if max_steps is not None and i >= max_steps:
                break
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = self.loss(model(x), y)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch + 1} step {i + 1} "
                                 f"(lr {lr:.3g})")
            self.step(model, optimizer, scaler, loss)
            if step_losses is not None:
                step_losses.append(loss.item())
            epoch_loss += loss.item() * len(y)
            n += len(y)
        return epoch_loss / max(n, 1)

    def run_epoch(self, model, optimizer, data, epoch: int, *, seed: int, schedule: Schedule,
                  device: torch.device | str = "cpu", amp_dtype=None, scaler=None,
                  memory_format=torch.contiguous_format) -> tuple[float, float, float]:
        """Train one epoch on `data.train`, re-estimate batch norm, validate on `data.val`:
        (train loss, accuracy, validation loss)."""
        loss = self.train_epoch(model, optimizer, data.train, epoch, seed=seed, schedule=schedule,
                                device=device, amp_dtype=amp_dtype, scaler=scaler,
                                memory_format=memory_format)
        self.reestimate_bn(model, data.train, seed=seed_mix(seed, epoch, 2), device=device,
                           amp_dtype=amp_dtype, memory_format=memory_format)
        accuracy, val_loss = self.validate(model, data.val, device=device, amp_dtype=amp_dtype,
                                           memory_format=memory_format)
        # a streamed split's workers restart on its next pass (a fork, well under a second),
        # so validation's loader processes are not kept alive beside training's all epoch
        data.val.close()
        return loss, accuracy, val_loss

    # ------------------------------------------------------------- measuring a model
    @torch.no_grad()
    def reestimate_bn(self, model, split, *, seed: int, device: torch.device | str = "cpu",
                      amp_dtype=None, memory_format=torch.contiguous_format) -> int:
        """Re-estimate batch norm (`reestimate_bn`) on `bn_recalibration_batches` batches of
        `batch_size` drawn at random with `seed` from `split`, unaugmented (preprocessed as
        validation images are). 0 batches: the running averages are kept. Returns images seen.

        Why a random sample: folders list their images class by class, and statistics taken from
        the first batches in file order describe one or two classes only (issue 12: -30 points,
        +-0.2 swings)."""
        n = self.bn_recalibration_batches
        if n == 0:
            return 0
        batches = split.batches(self.batch_size, shuffle=True, seed=seed, device=torch.device(device),
                                memory_format=memory_format, max_batches=n)
        return reestimate_bn(model, batches, amp_dtype=amp_dtype)

    @torch.no_grad()
    def validate(self, model, split, *, device: torch.device | str = "cpu", amp_dtype=None,
                 memory_format=torch.contiguous_format) -> tuple[float, float]:
        """(top-1 accuracy, mean cross-entropy) on `split`, in batches of `eval_batch_size`."""
        device = torch.device(device)
        model.eval()
        correct, loss_sum = 0, 0.0
        for x, y in split.batches(self.eval_batch_size, device=device, memory_format=memory_format):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        n = max(len(split), 1)
        return correct / n, loss_sum / n


@torch.no_grad()
def reestimate_bn(model: torch.nn.Module, batches: Iterable, *, amp_dtype=None) -> int:
    """Every batch norm's running statistics re-estimated as exact averages over `batches`
    (images, or (images, labels)); the model is left in eval mode. Returns the images seen.

    After a few dozen steps the running averages (momentum 0.1) still carry their initial values,
    so eval-mode accuracy lags the network; a supernet's averages mix every sub-network's. Exact
    averages over a sample fix both (once-for-all's and BigNAS's BN calibration). Only the norms
    switch to training mode: drop path and dropout stay off; the root is in training mode so
    OverLoCK runs its aux head and its norms are re-estimated too.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    model.training = True  # the root only: OverLoCK runs its aux head in training mode
    for m in norms:
        m.train()
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)
            seen += int(x.shape[0])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return seen


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to `peak`, then cosine down to `floor` at `total` steps."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def resolved_augment(value, data) -> dict | None:
    """The augmentation training really used with `augment: value` on `data` (the data set
    kind's defaults filled in), as stored in a score's data set record."""
    from nas.data import resolve_augment

    aug = resolve_augment(value, getattr(data.train, "kind", "procedural"))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in aug.items()} if aug else None
