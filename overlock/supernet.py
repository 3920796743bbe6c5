"""A weight-sharing OverLoCK supernet: one network holding every architecture of a search space.

Any config of the space is a sub-network that is exactly `overlock.create_model(config)` with
inherited weights (once-for-all / BigNAS style)::

    >>> from space import load_space
    >>> from overlock.supernet import Supernet, sample_config
    >>> net = Supernet(load_space("studies/spaces/xt_t.yaml"), num_classes=10)
    >>> config = sample_config(net.space, rng=0)            # kind="random" | "max" | "min"
    >>> net.set_active(config); logits = net(x)             # the sub-network's forward
    >>> model = net.extract(config)                         # a stand-alone OverLoCK, same logits

Public API (what the supernet trainer and the `supernet` evaluator use):

- `Supernet(space_or_configs, num_classes=None, in_chans=None, drop_path_rate=0.0,
  ls_init_value=1.0, kernel_transform=False)`: built from a `space.SearchSpace` (anything with
  `sample(rng)`) or a list of `OverLoCKConfig`. It holds the maximum of every elastic dimension.
- `fit(config)`: the config with the supernet's `num_classes` / `in_chans` (a space priced at 1000
  classes trains on a 10-class set); raises `ConfigError` naming the field a config exceeds.
- `set_active(config)` / `active_config`: `forward(x)` then computes exactly that sub-network and
  returns what the stand-alone model returns (`{"main", "aux"}` in training with an aux head, the
  logits otherwise).
- `extract(config=None, **model_kwargs) -> OverLoCK`: the stand-alone model (train structure, as
  `create_model` builds by default) whose `state_dict` is `sub_state_dict(config)`;
  `load_state_dict(strict=True)` holds by construction.
- `sub_state_dict(config)`: the sliced (and, with `kernel_transform`, transformed) tensors.
- `reset_bn_stats()`; `recalibrate_bn(model, batches)` (module function) re-estimates the
  batch-norm statistics of an extracted model or of the supernet's active sub-network.
- `save(path)` / `Supernet.load(path)`: safetensors with the space (or config list) and the
  construction options in the metadata; `state_dict()` is the ordinary module one.
- `sample_config(space_or_supernet, rng, kind="random"|"max"|"min")`: the sandwich rule's configs.

How weights are shared (the sub-network's parameter names are the official ones):

- widths, heads, MLP and head widths, context channels: the first k channels (OFA / BigNAS).
  ContMix works on `cat([x, context])`; its channels are the first `dim` of the x part and the
  first `context_dim` of the context part (an index, not a prefix, when `dim` is below the max).
- depths: the first d blocks of each Base / Overview / Focus stage.
- kernels: the largest kernel, smaller ones centre-cropped; with `kernel_transform=True` each
  smaller size is the centre crop of the next larger one times a learned (k^2 x k^2) matrix
  (OFA's kernel transformation, identity at init), for the dilated re-param large kernels and the
  dynamic-kernel rows of `weight_proj`. Relative position bias tables are centre-cropped.
- region count R: `weight_proj` takes R*R inputs, so the supernet holds one per R of the space
  (`...weight_proj_r{R}.weight`), extracted as `weight_proj.weight`.
- batch norm: per-channel running statistics, sliced like the weights.

This module imports nothing from `nas/`; `space` is imported lazily (to rebuild a saved space).
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from .config import ConfigError, OverLoCKConfig
from .model import OverLoCK

__all__ = ["Supernet", "sample_config", "recalibrate_bn"]

FORMAT = "overlock-nas/supernet"


class Supernet(nn.Module):
    """Every architecture of a space in one network (see the module docstring).

    Args:
        space_or_configs: a `space.SearchSpace` or a non-empty list of `OverLoCKConfig`.
        num_classes / in_chans: the classifier and stem of every sub-network (default: the
            space's); configs are fitted to them (`fit`).
        drop_path_rate, ls_init_value: as `OverLoCK` (used by the active forward and `extract`).
        kernel_transform: learn OFA kernel-transformation matrices for smaller kernels.
        samples: random configs drawn (with the space's extreme configs) to find the maximum of
            every dimension and every region count / kernel size it holds.
        seed: seed of those samples and of the weight initialisation.
    """

    def __init__(self, space_or_configs, *, num_classes: int | None = None,
                 in_chans: int | None = None, drop_path_rate: float = 0.0,
                 ls_init_value: float = 1.0, kernel_transform: bool = False, samples: int = 256,
                 seed: int = 0):
        super().__init__()
        raise NotImplementedError

    def fit(self, config: OverLoCKConfig | dict) -> OverLoCKConfig:
        raise NotImplementedError

    def set_active(self, config: OverLoCKConfig | dict) -> OverLoCKConfig:
        raise NotImplementedError

    def forward(self, x: Tensor):
        raise NotImplementedError

    def sub_state_dict(self, config: OverLoCKConfig | dict | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def extract(self, config: OverLoCKConfig | dict | None = None, **model_kwargs) -> OverLoCK:
        raise NotImplementedError

    def reset_bn_stats(self) -> None:
        raise NotImplementedError

    def save(self, path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path, map_location="cpu") -> "Supernet":
        raise NotImplementedError


def sample_config(space_or_supernet, rng: random.Random | int | None = None,
                  kind: str = "random") -> OverLoCKConfig:
    """A config of the space: uniform per decision ("random"), or the largest ("max": the largest
    option of every decision, in the order the space lists them) / smallest ("min").

    A `Supernet` argument samples its space (or its config list) and fits the result.
    """
    raise NotImplementedError


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate every batch norm's running statistics as exact averages over `batches`.

    Works on an extracted model and on a `Supernet` (its active sub-network's slices). Only the
    norms run in training mode (drop path stays off); the root is put in training mode so the aux
    head's norms are re-estimated too, then everything is back in eval mode. Returns the number of
    images seen.
    """
    raise NotImplementedError
