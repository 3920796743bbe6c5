"""Zero-cost proxies: score an untrained network from one batch, as published.

- `synflow` (Tanaka et al., NeurIPS 2020; the NAS form of Abdelfattah et al., ICLR 2021):
  all parameters replaced by their absolute values, float64, batch norm as identity (eval mode
  at initialisation), input of ones (1 x C x H x W); score = sum over Conv2d / Linear weights of
  |theta * dR/dtheta| with R = sum of the logits. Data-independent.
- `naswot` (Mellor et al., ICML 2021, "NASWOT"): binary codes c_i (pre-activation > 0) of every
  rectifier-like unit (ReLU, GELU, SiLU, ...) for each image of the batch; kernel
  K_H = c c^T + (1 - c)(1 - c)^T (units minus Hamming distance); score = log |det K_H|.
  Batch norm in training mode, as in the authors' code.
- `zico` (Li et al., ICLR 2023, "ZiCo"): per-example gradient statistics across batches; the
  published code uses two batches. Here the one batch is split into two halves: for each
  Conv2d / Linear weight, score += log(sum over entries with nonzero std of mean|g| / std(g)),
  g the gradients of the cross-entropy loss of each half.

The network is the training structure (not re-parameterised), initialised from the trial seed, with
as many classes as the data set. Scores are higher-is-better; a non-finite score is a TrialError.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Evaluator, Setting, TrialError, dataset, dataset_record, fit_to_data, integer,
               resolution, resolve_settings)

SCHEMA = {
    "dataset": Setting({"kind": "procedural"}, dataset),
    "batch_size": Setting(64, integer(2)),
    "resolution": Setting(None, resolution),
    "threads": Setting(None, integer(1)),
}

RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Hardswish, nn.Mish, nn.ELU)


def synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """SynFlow of `model` (modified in place: abs weights, float64, eval mode)."""
    model.eval()
    model.double()
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    out = model(torch.ones(1, *input_shape[1:], dtype=torch.float64, device=device))
    if isinstance(out, dict):
        out = out["main"]
    out.sum().backward()
    total = 0.0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
            total += float((m.weight.detach() * m.weight.grad).abs().sum())
    return total


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """log|det K_H| of the binary activation codes of `images` (one batch)."""
    n = len(images)
    kernel = torch.zeros(n, n, dtype=torch.float64, device=images.device)

    def hook(module, inputs, output):
        codes = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        kernel.add_(codes @ codes.t()).add_((1 - codes) @ (1 - codes).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, RECTIFIERS)]
    if not handles:
        raise TrialError("naswot: the network has no rectifier units to read codes from")
    try:
        model.train()
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    if sign <= 0 or not torch.isfinite(logdet):
        # identical codes for two images: K is singular, the network cannot tell them apart
        raise TrialError("naswot: activation-code kernel is singular (two images share a code)")
    return float(logdet)


def zico(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, splits: int = 2) -> float:
    """ZiCo over `splits` parts of one batch (the published code uses two batches)."""
    model.train()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads: list[list[torch.Tensor]] = [[] for _ in layers]
    for x, y in zip(images.chunk(splits), labels.chunk(splits)):
        model.zero_grad(set_to_none=True)
        out = model(x)
        logits = out["main"] if isinstance(out, dict) else out
        F.cross_entropy(logits, y).backward()
        for i, m in enumerate(layers):
            if m.weight.grad is not None:
                grads[i].append(m.weight.grad.detach().flatten().double().clone())
    score = 0.0
    for g in grads:
        if len(g) < 2:
            continue
        stacked = torch.stack(g)
        std = stacked.std(dim=0, unbiased=False)
        nonzero = std > 0
        total = float((stacked.abs().mean(dim=0)[nonzero] / std[nonzero]).sum())
        if total > 0:
            score += math.log(total)
    return score


class ZeroCostEvaluator(Evaluator):
    """One zero-cost proxy ("synflow", "naswot" or "zico").

    Settings (all optional): dataset ({kind: procedural}; the batch comes from its train split),
    batch_size (64), resolution (none = the config's), threads (torch threads; none = leave).
    """

    def __init__(self, name: str, settings: Mapping[str, Any] | None = None):
        if name not in ("synflow", "naswot", "zico"):
            raise ValueError(f"unknown zero-cost proxy {name!r} (known: synflow, naswot, zico)")
        self.name = self.metric = name
        self.rungs = []
        self.settings = resolve_settings(name, settings, SCHEMA)

    def evaluate(self, config, *, budget_epochs: int | None = None, device: str = "cpu", seed: int = 0,
                 workdir: str | None = None, resume_from: str | None = None,
                 weights_name: str | None = None) -> dict:
        """Score `config` at initialisation; returns {"score", "epochs": 0, "history": [],
        "weights": None, "fidelity": 1.0 (a proxy is always evaluated in full), "dataset" (the
        images the batch came from, `nas.evaluators.dataset_record`), "wall_s"}."""
        from nas.data import DataError
        from nas.evaluators.train import _is_oom

        threads_before = torch.get_num_threads()
        try:
            score, wall, data_record = self._score(config, device, seed)
        except TrialError:
            raise
        except DataError as e:
            raise TrialError(f"data: {e}") from e
        except Exception as e:  # noqa: BLE001
            if _is_oom(e):
                if str(device).startswith("cuda"):
                    torch.cuda.empty_cache()
                raise TrialError(f"out of memory on {device} ({self.name}, batch "
                                 f"{self.settings['batch_size']}): {str(e).splitlines()[0][:160]}") from e
            raise
        finally:
            torch.set_num_threads(threads_before)  # `threads` holds for this trial only
        if not math.isfinite(score):
            raise TrialError(f"{self.name} score is not finite ({score})")
        return {"score": score, "epochs": 0, "history": [], "weights": None, "fidelity": 1.0,
                "dataset": data_record, "wall_s": wall}

    def _score(self, config, device, seed) -> tuple[float, float, dict]:
        from overlock import OverLoCK
        from nas.data import load_dataset

        s = self.settings
        if s["threads"]:
            torch.set_num_threads(s["threads"])
        res = tuple(s["resolution"] or config.resolution)
        data = load_dataset(s["dataset"], res)
        cfg = fit_to_data(config, data)
        torch.manual_seed(seed)
        model = OverLoCK(cfg).to(device)
        images, labels = next(data.train.batches(min(s["batch_size"], len(data.train)), shuffle=True,
                                                 seed=seed, device=device, max_batches=1))
        t0 = time.perf_counter()
        if self.name == "synflow":
            score = synflow(model, tuple(images.shape))
        elif self.name == "naswot":
            score = naswot(model, images)
        else:
            score = zico(model, images, labels)
        return score, time.perf_counter() - t0, dataset_record(s["dataset"], data, res)
