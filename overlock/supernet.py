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
- `reset_bn_stats()`. Batch-norm re-estimation is the training recipe's
  (`nas.training.reestimate_bn`), on an extracted sub-network.
- `save(path, metadata=None)` / `Supernet.load(path)`: safetensors with the space (or config
  list) and the construction options in the metadata (plus the caller's string entries, read back
  as `net.file_metadata`); `state_dict()` / `load_state_dict()` are the ordinary module ones.
- `sample_config(space_or_supernet, rng, kind="random"|"max"|"min")` (also the method
  `net.sample_config(rng, kind)`, and `net.max_config` / `net.min_config`): the sandwich rule's
  configs, fitted to the supernet when it is given one. `net.space` is the space (None when
  built from a config list, then `net.configs`).
- Errors: `ConfigError` (a `ValueError`), one line naming the field, for a config outside the
  supernet.

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

How it runs: the active sub-network is an `OverLoCK(config)` built once on the meta device (a
template, 32 kept) and called with `torch.func.functional_call` on views / gathers of the held
tensors, so its forward is the stand-alone model's code and `extract` is exact by construction.
Measured (2026-12-02, 1 thread, CPU time, load ~30): a new architecture's template 0.5-1.0 s;
fwd+bwd at 32 px, batch 4, within 0-8 % of the stand-alone model's.

This module imports nothing from `nas/`; `space` is imported lazily (to rebuild a saved space).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .config import ConfigError, OverLoCKConfig
from .layers import GRN, LayerScale
from .model import ContMixBlock, OverLoCK

__all__ = ["Supernet", "sample_config"]

FORMAT = "overlock-nas/supernet"
_TEMPLATES_KEPT = 32   # sub-network templates (meta-device modules) cached by architecture

# Fields a sub-network may hold below the supernet's maximum.
_ELASTIC_TUPLES = ("base_depths", "focus_depths", "widths", "reparam_kernels", "dynamic_kernels",
                   "focus_heads", "mlp_ratios", "focus_mlp_ratios")
_ELASTIC_SCALARS = ("overview_depth", "stem_width", "context_dim", "head_width", "small_kernel",
                    "region_count")

# ------------------------------------------------------------------------------------- axes
# One axis of a parameter, in the sizes of one architecture:
#   ("P", n)     the first n entries (channels, heads)
#   ("C", a, b)  cat([x, context]) channels: the first a of the x part, the first b of the context
#   ("K", n)     the centre n entries (relative position bias tables, n = 2k - 1)
#   ("T", k)     a convolution kernel axis, cut (and transformed) by the kernel chain
#   ("W", s, k)  weight_proj rows: s*s small-kernel then k*k large-kernel positions (kernel chain)
#   ("F",)       not elastic: the module's own size
_F = ("F",)


def _axis_size(axis: tuple, fixed: int) -> int:
    kind = axis[0]
    if kind in ("P", "K", "T"):
        return axis[1]
    if kind == "C":
        return axis[1] + axis[2]
    if kind == "W":
        return axis[1] ** 2 + axis[2] ** 2
    return fixed


def _axis_take(sub: tuple, env: tuple) -> slice | Tensor:
    """Where a sub-network's axis lies in the supernet's: a slice (a view) or an index."""
    kind = sub[0]
    if kind == "P":
        return slice(0, sub[1])
    if kind == "K":
        start = (env[1] - sub[1]) // 2
        return slice(start, start + sub[1])
    if kind == "C":
        a, b = sub[1], sub[2]
        if a == env[1]:
            return slice(0, a + b)
        return torch.cat([torch.arange(a), env[1] + torch.arange(b)])
    return slice(None)  # F; T and W are cut by the kernel chain afterwards


def _se_width(dim: int) -> int:
    return max(16, dim // 8)  # SEModule's bottleneck


def _top_axes(path: str, c) -> tuple:
    W = [("P", w) for w in c.widths]
    stem, ctx, head = ("P", c.stem_width), ("P", c.context_dim), ("P", c.head_width)
    table = {
        "patch_embed1.0": (stem, _F), "patch_embed1.1": (stem,), "patch_embed1.3": (stem, stem),
        "patch_embed1.4": (stem,), "patch_embed1.6": (W[0], stem), "patch_embed1.7": (W[0],),
        "patch_embed1.9": (W[0], W[0]), "patch_embed1.10": (W[0],),
        "patch_embed2.0": (W[1], W[0]), "patch_embed2.1": (W[1],),
        "patch_embed3.0": (W[2], W[1]), "patch_embed3.1": (W[2],),
        "patch_embed4.0": (W[3], W[2]), "patch_embed4.1": (W[3],),
        "high_level_proj": (ctx, W[3]),
        "patch_embedx.x_proj.0": (W[3], W[2]), "patch_embedx.x_proj.1": (W[3],),
        "patch_embedx.h_proj.0": (ctx, ctx), "patch_embedx.h_proj.1": (ctx,),
        "aux_head.0": (W[3],), "aux_head.2": (_F, W[3]),
        "head.0": (head, ("C", c.widths[3], c.context_dim)), "head.1": (head,),
        "head.4": (_F, head),
    }
    return table[path]


def _reparam_axes(sub: str, dim: tuple, kernel: int) -> tuple:
    """Dilated re-param block: the large kernel is elastic, the dilated branches are not."""
    return (dim, _F, ("T", kernel)) if sub == "lk_origin" else (dim,)


def _repconv_axes(stage: int, sub: str, c) -> tuple:
    width = c.widths[stage]
    dim, mlp, se = ("P", width), ("P", int(width * c.mlp_ratios[stage])), ("P", _se_width(width))
    if sub.startswith("proj.1."):
        return _reparam_axes(sub[len("proj.1."):], dim, c.reparam_kernels[stage])
    table = {"dwconv": (dim,), "proj.0": (dim,), "proj.2": (dim,), "proj.3.proj.1": (se, dim),
             "proj.3.proj.3": (dim, se), "proj.4": (mlp, dim), "proj.6": (mlp,), "proj.7": (mlp,),
             "proj.8": (dim, mlp), "ls": (dim,)}
    return table[sub]


def _contmix_axes(j: int, sub: str, c) -> tuple:
    width = c.widths[2 + j]
    dim, ctx, half = ("P", width), ("P", c.context_dim), ("P", width // 2)
    both = ("C", width, c.context_dim)  # ContMix runs on cat([x, context])
    mlp, se = ("P", int(width * c.focus_mlp_ratios[j])), ("P", _se_width(width))
    if sub.startswith("lepe.0."):
        return _reparam_axes(sub[len("lepe.0."):], dim, c.reparam_kernels[2 + j])
    table = {"x_scale": (ctx,), "h_scale": (ctx,), "dwconv1": (both,), "norm1": (both,),
             "fusion.0": (both,), "fusion.1": (both,), "fusion.3": (dim, both), "fusion.4": (dim,),
             "weight_query.0": (half, dim), "weight_query.1": (half,),
             "weight_key.1": (half, ctx), "weight_key.2": (half,),
             "weight_proj": (("W", c.small_kernel, c.dynamic_kernels[j]), _F),
             "dyconv_proj.0": (dim, dim), "dyconv_proj.1": (dim,), "lepe.1": (dim,),
             "se_layer.proj.1": (se, dim), "se_layer.proj.3": (dim, se),
             "gate.0": (dim, dim), "gate.1": (dim,), "proj.0": (dim,), "proj.1": (both, dim),
             "dwconv2": (both,), "norm2": (both,), "mlp.0": (mlp, both), "mlp.2": (mlp,),
             "mlp.3": (mlp,), "mlp.4": (both, mlp), "ls1": (both,), "ls2": (both,)}
    return table[sub]


def _param_axes(module: nn.Module, path: str, pname: str, c) -> tuple:
    """The axes of parameter / buffer `pname` of the module at `path`, in architecture `c`."""
    if isinstance(module, ContMixBlock):  # its own tensors: the relative position bias tables
        j = int(path[len("sub_blocks")]) - 3
        k = c.small_kernel if pname == "rpb1" else c.dynamic_kernels[j]
        return ("P", 2 * c.focus_heads[j]), ("K", 2 * k - 1), ("K", 2 * k - 1)
    m = re.fullmatch(r"(sub_)?blocks(\d)\.\d+\.(.+)", path)
    if m is None:
        spec = _top_axes(path, c)
    elif m.group(1):
        spec = _contmix_axes(int(m.group(2)) - 3, m.group(3), c)
    else:
        spec = _repconv_axes(int(m.group(2)) - 1, m.group(3), c)
    out, inp, kernel = (*spec, _F, _F)[:3]
    if isinstance(module, nn.Conv2d):
        return (out, inp, kernel, kernel) if pname == "weight" else (out,)
    if isinstance(module, nn.BatchNorm2d):
        return () if pname == "num_batches_tracked" else (out,)
    if isinstance(module, GRN):
        return _F, out, _F, _F
    if isinstance(module, LayerScale) and pname == "weight":
        return out, _F, _F, _F
    return (out,)  # LayerNorm2d, LayerScale bias


# ----------------------------------------------------------------------------- kernel chain
def _run_chain(t: Tensor, steps, store) -> Tensor:
    """Cut the trailing (K, K) of `t` down through `steps` [(size, matrix name or None)]."""
    for size, matrix in steps:
        start = (t.shape[-1] - size) // 2
        t = t[..., start:start + size, start:start + size]
        if matrix is not None:
            lead = t.shape[:-2]
            t = (t.reshape(*lead, size * size) @ store[matrix].T).reshape(*lead, size, size)
    return t


def _run_window(t: Tensor, small: int, large: int, small_steps, large_steps, store) -> Tensor:
    """weight_proj rows [small*small | large*large] cut by the two kernel chains."""
    rows = t.reshape(t.shape[0], -1)
    parts = []
    for block, size, steps in ((rows[:small * small], small, small_steps),
                               (rows[small * small:], large, large_steps)):
        grid = _run_chain(block.T.reshape(-1, size, size), steps, store)
        parts.append(grid.reshape(grid.shape[0], -1).T)
    out = torch.cat(parts)
    return out.reshape(out.shape[0], *t.shape[1:])


@dataclass
class _Take:
    """How one tensor of a sub-network is read from the supernet."""

    sub_name: str
    store_name: str
    index: tuple          # per axis: a slice or an index tensor
    post: tuple | None    # ("chain", steps) or ("window", S, K, small_steps, large_steps)
    buffer: bool

    @property
    def gathered(self) -> bool:
        return any(isinstance(i, Tensor) for i in self.index)


@dataclass
class _Slot:
    """One tensor the supernet holds: its axes at the maximum, and how it is initialised."""

    env_axes: tuple
    shape: tuple
    buffer: bool
    init: str


class Supernet(nn.Module):
    """Every architecture of a space in one network (see the module docstring).

    Args:
        space_or_configs: a `space.SearchSpace` or a non-empty list of `OverLoCKConfig` / dicts.
        num_classes / in_chans: the classifier and stem of every sub-network (default: the
            space's); configs are fitted to them (`fit`).
        drop_path_rate, ls_init_value: as `OverLoCK` (used by the active forward and `extract`).
        kernel_transform: learn OFA kernel-transformation matrices for smaller kernels.
        samples: random configs drawn (with the space's extreme configs) to find the maximum of
            every dimension and every region count / kernel size it holds.
        seed: seed of those samples and of the weight initialisation.

    Raises:
        ConfigError: an empty config list, or configs the supernet cannot hold together.
    """

    def __init__(self, space_or_configs, *, num_classes: int | None = None,
                 in_chans: int | None = None, drop_path_rate: float = 0.0,
                 ls_init_value: float = 1.0, kernel_transform: bool = False, samples: int = 256,
                 seed: int = 0):
        super().__init__()
        if isinstance(space_or_configs, (list, tuple)):
            if not space_or_configs:
                raise ConfigError("Supernet: the config list is empty")
            self.space = None
            raw = [OverLoCKConfig.from_dict(c) if isinstance(c, dict) else c
                   for c in space_or_configs]
        elif hasattr(space_or_configs, "sample"):
            self.space = space_or_configs
            raw = _space_configs(space_or_configs, samples, seed)
        else:
            raise ConfigError(f"Supernet takes a SearchSpace or a list of configs, not "
                              f"{type(space_or_configs).__name__}")
        self.num_classes = raw[0].num_classes if num_classes is None else int(num_classes)
        self.in_chans = raw[0].in_chans if in_chans is None else int(in_chans)
        self.drop_path_rate = float(drop_path_rate)
        self.ls_init_value = ls_init_value
        self.kernel_transform = bool(kernel_transform)
        self.options = {"num_classes": self.num_classes, "in_chans": self.in_chans,
                        "drop_path_rate": self.drop_path_rate, "ls_init_value": ls_init_value,
                        "kernel_transform": self.kernel_transform, "samples": samples, "seed": seed}
        fitted = [self._adapt(c) for c in raw]
        self.configs = fitted if self.space is None else None
        self.envelope = _envelope(fitted)
        self.value_sets = _value_sets(fitted, self.space, self.envelope)
        self._slots: dict[str, _Slot] = {}
        self._lay_out(fitted)
        self._allocate(seed)
        self._plans: OrderedDict = OrderedDict()
        self._tensors: dict[str, Tensor] | None = None
        self._active: OverLoCKConfig | None = None
        self.set_active(sample_config(self, kind="max"))

    # ------------------------------------------------------------------------- building
    def _adapt(self, config: OverLoCKConfig) -> OverLoCKConfig:
        return config.with_io(self.num_classes, self.in_chans)

    def _lay_out(self, fitted: list[OverLoCKConfig]) -> None:
        """Every tensor the supernet holds, at the maximum of every axis: the union of the
        deepest structures with each re-param kernel of each stage (their dilated branches
        differ), one structure per rank of those kernels."""
        env = self.envelope
        kernels = [self.value_sets[f"reparam_kernels[{s}]"] for s in range(4)]
        for rank in range(max(len(k) for k in kernels)):
            cover = fitted[0].replace(
                base_depths=env.base_depths, overview_depth=env.overview_depth,
                focus_depths=env.focus_depths, aux_head=env.aux_head,
                reparam_kernels=tuple(k[min(rank, len(k) - 1)] for k in kernels))
            with torch.device("meta"):
                template = OverLoCK(cover, ls_init_value=self.ls_init_value)
            for path, module in template.named_modules():
                for pname, t, buffer in _own_tensors(module):
                    if f"{path}.{pname}" not in self._slots:
                        self._add_slot(path, module, pname, t, buffer)
                if self.kernel_transform:
                    self._add_transforms(path, module)

    def _add_slot(self, path, module, pname, t, buffer) -> None:
        env_axes = _param_axes(module, path, pname, self.envelope)
        shape = tuple(_axis_size(a, n) for a, n in zip(env_axes, t.shape))
        init = _init_kind(module, path, pname)
        if path.endswith(".weight_proj"):  # its inputs are the R*R regions: one per region count
            for r in self.value_sets["region_count"]:
                shape_r = (shape[0], r * r, *shape[2:]) if pname == "weight" else shape
                self._slots[f"{path}_r{r}.{pname}"] = _Slot(env_axes, shape_r, buffer, init)
        else:
            self._slots[f"{path}.{pname}"] = _Slot(env_axes, shape, buffer, init)

    def _add_transforms(self, path, module) -> None:
        sites = []
        if path.endswith("lk_origin"):
            sites.append((f"{path}.ktm_", _lk_site(path)))
        elif isinstance(module, ContMixBlock):
            j = int(path[len("sub_blocks")]) - 3
            sites += [(f"{path}.ktm_small_", "small_kernel"),
                      (f"{path}.ktm_large_", f"dynamic_kernels[{j}]")]
        for prefix, site in sites:
            sizes = self.value_sets[site]
            for big, small in zip(sizes, sizes[1:]):
                shape = (small * small, small * small)
                self._slots[f"{prefix}{big}to{small}"] = _Slot((), shape, False, "eye")

    def _allocate(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for name, slot in self._slots.items():
            dtype = torch.long if name.endswith("num_batches_tracked") else torch.float32
            t = _initial(slot, dtype, self.ls_init_value, generator)
            *path, leaf = name.split(".")
            owner = self
            for part in path:
                if part not in owner._modules:
                    owner.add_module(part, nn.Module())
                owner = owner._modules[part]
            if slot.buffer:
                owner.register_buffer(leaf, t)
            else:
                owner.register_parameter(leaf, nn.Parameter(t))

    def _apply(self, fn, recurse=True):
        self._tensors = None  # .to() / .cuda() may replace buffers
        return super()._apply(fn, recurse)

    def _store(self) -> dict[str, Tensor]:
        if self._tensors is None:
            self._tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return self._tensors

    # ------------------------------------------------------------------------ sub-networks
    def fit(self, config: OverLoCKConfig | dict) -> OverLoCKConfig:
        """`config` with the supernet's num_classes / in_chans, checked to lie inside it.

        Raises:
            ConfigError: a field larger than the supernet holds, a region count or (with kernel
                transformation) a kernel size it has no weights for.
        """
        if isinstance(config, dict):
            config = OverLoCKConfig.from_dict(config)
        if not isinstance(config, OverLoCKConfig):
            raise ConfigError(f"expected an OverLoCKConfig or a dict, not {type(config).__name__}")
        config = self._adapt(config)
        env = self.envelope
        for name in _ELASTIC_TUPLES:
            for i, (v, most) in enumerate(zip(getattr(config, name), getattr(env, name))):
                if v > most:
                    raise ConfigError(f"{name}[{i}]={v} is larger than the supernet holds ({most})")
        for name in _ELASTIC_SCALARS:
            if getattr(config, name) > getattr(env, name):
                raise ConfigError(f"{name}={getattr(config, name)} is larger than the supernet "
                                  f"holds ({getattr(env, name)})")
        if config.aux_head and not env.aux_head:
            raise ConfigError("aux_head=true: the supernet was built without an aux head")
        checked = _site_values(config) if self.kernel_transform else \
            {"region_count": config.region_count}
        for site, value in checked.items():
            if value not in self.value_sets[site]:
                raise ConfigError(f"{site}={value} is not one the supernet holds "
                                  f"({sorted(self.value_sets[site])})")
        return config

    def set_active(self, config: OverLoCKConfig | dict) -> OverLoCKConfig:
        """Make `forward` compute the sub-network `config` (fitted); returns the fitted config."""
        config = self.fit(config)
        self._plan(config)
        self._active = config
        return config

    @property
    def active_config(self) -> OverLoCKConfig:
        return self._active

    def sample_config(self, rng: random.Random | int | None = None, kind: str = "random"):
        """`sample_config(self, rng, kind)`: a fitted config ("random", "max", "min")."""
        return sample_config(self, rng, kind)

    @property
    def max_config(self) -> OverLoCKConfig:
        """The sandwich rule's largest sub-network (`sample_config(self, kind="max")`)."""
        return sample_config(self, kind="max")

    @property
    def min_config(self) -> OverLoCKConfig:
        return sample_config(self, kind="min")

    def forward(self, x: Tensor):
        """The active sub-network's output, as the stand-alone `OverLoCK` returns it."""
        template, takes = self._plan(self._active)
        tensors, writeback = self._materialise(takes)
        out = functional_call(template, tensors, (x,))
        _write_back(writeback)
        return out

    def train(self, mode: bool = True) -> "Supernet":
        super().train(mode)
        for template, _ in self._plans.values():
            template.train(mode)
        return self

    def sub_state_dict(self, config: OverLoCKConfig | dict | None = None) -> dict[str, Tensor]:
        """The sub-network's state_dict (copies): what `create_model(config)` loads strictly."""
        config = self._active if config is None else self.fit(config)
        _, takes = self._plan(config)
        with torch.no_grad():
            tensors, _ = self._materialise(takes)
        return {k: v.detach().clone().contiguous() for k, v in tensors.items()}

    def extract(self, config: OverLoCKConfig | dict | None = None, **model_kwargs) -> OverLoCK:
        """A stand-alone `OverLoCK(config)` (train structure) with the inherited weights, on the
        supernet's device, in training mode as `create_model` returns it."""
        config = self._active if config is None else self.fit(config)
        kwargs = {"drop_path_rate": self.drop_path_rate, "ls_init_value": self.ls_init_value,
                  **model_kwargs}
        if kwargs["drop_path_rate"] == self.drop_path_rate and \
                kwargs["ls_init_value"] == self.ls_init_value and len(kwargs) == 2:
            model = copy.deepcopy(self._plan(config)[0])  # a third cheaper than building one
        else:
            with torch.device("meta"):
                model = OverLoCK(config, **kwargs)
        model.load_state_dict(self.sub_state_dict(config), strict=True, assign=True)
        return model.train()

    def reset_bn_stats(self) -> None:
        """Every batch norm's running statistics back to their initial values (mean 0, var 1)."""
        store = self._store()
        with torch.no_grad():
            for name, slot in self._slots.items():
                if slot.buffer:
                    store[name].fill_(1 if name.endswith("running_var") else 0)

    def _plan(self, config: OverLoCKConfig):
        """(meta-device template of `config`, how each of its tensors is read), cached."""
        key = config.architecture_hash()
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        with torch.device("meta"):
            template = OverLoCK(config, drop_path_rate=self.drop_path_rate,
                                ls_init_value=self.ls_init_value)
        template.train(self.training)
        takes = [self._take(config, path, module, pname, t, buffer)
                 for path, module in template.named_modules()
                 for pname, t, buffer in _own_tensors(module)]
        self._plans[key] = (template, takes)
        while len(self._plans) > _TEMPLATES_KEPT:
            self._plans.popitem(last=False)
        return template, takes

    def _take(self, config, path, module, pname, t, buffer) -> _Take:
        sub_name = f"{path}.{pname}"
        store_name = sub_name
        if path.endswith(".weight_proj"):
            store_name = f"{path}_r{config.region_count}.{pname}"
        slot = self._slots.get(store_name)
        if slot is None:
            raise ConfigError(f"{config.summary()}: the supernet holds no {store_name} "
                              "(it was built for another space)")
        axes = _param_axes(module, path, pname, config)
        if tuple(_axis_size(a, n) for a, n in zip(axes, t.shape)) != tuple(t.shape):
            raise RuntimeError(f"supernet axes of {sub_name} disagree with the model: {axes} "
                               f"vs {tuple(t.shape)}")
        index = tuple(_axis_take(a, e) for a, e in zip(axes, slot.env_axes))
        post = None
        for axis, env_axis in zip(axes, slot.env_axes):
            if axis[0] == "T":
                post = ("chain", self._steps(_lk_site(path), axis[1], f"{path}.ktm_"))
            elif axis[0] == "W":
                block, j = path[:-len(".weight_proj")], int(path[len("sub_blocks")]) - 3
                post = ("window", env_axis[1], env_axis[2],
                        self._steps("small_kernel", axis[1], f"{block}.ktm_small_"),
                        self._steps(f"dynamic_kernels[{j}]", axis[2], f"{block}.ktm_large_"))
        return _Take(sub_name, store_name, index, post, buffer)

    def _steps(self, site: str, kernel: int, prefix: str) -> list:
        """The kernel chain from the site's largest kernel down to `kernel`."""
        sizes = self.value_sets[site]
        if not self.kernel_transform:
            return [(kernel, None)] if kernel != sizes[0] else []
        steps, previous = [], sizes[0]
        for size in sizes[1:]:
            if size < kernel:
                break
            steps.append((size, f"{prefix}{previous}to{size}"))
            previous = size
        return steps

    def _materialise(self, takes: list[_Take]):
        """{sub-network name: tensor} (views where possible) and the gathered buffers to write
        back after a forward (ContMix's cat([x, context]) norms when x is narrower than the max)."""
        store = self._store()
        tensors, writeback = {}, []
        for take in takes:
            source = t = store[take.store_name]
            if take.index:
                t = t[tuple(i if isinstance(i, slice) else slice(None) for i in take.index)]
                for axis, i in enumerate(take.index):
                    if isinstance(i, Tensor):
                        t = t.index_select(axis, i.to(t.device))
            if take.post is not None and take.post[0] == "chain":
                t = _run_chain(t, take.post[1], store)
            elif take.post is not None:
                t = _run_window(t, *take.post[1:], store)
            if take.buffer and take.gathered:
                writeback.append((source, take.index[0], t))
            tensors[take.sub_name] = t
        return tensors, writeback

    # --------------------------------------------------------------------------- storage
    def save(self, path, metadata: dict[str, str] | None = None) -> None:
        """Write the weights and what the supernet was built from (one safetensors file, written
        atomically); `metadata` adds string entries (not `format`, `source`, `options`)."""
        from safetensors.torch import save_file

        source = ({"space": self.space.to_dict()} if self.space is not None
                  else {"configs": [c.to_dict() for c in self.configs]})
        own = {"format": FORMAT, "source": json.dumps(source), "options": json.dumps(self.options)}
        clash = sorted(set(metadata or {}) & set(own))
        if clash:
            raise ValueError(f"save: metadata key {clash[0]!r} is the supernet's own")
        metadata = {**{str(k): str(v) for k, v in (metadata or {}).items()}, **own}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "Supernet":
        """A supernet written by `save` (rebuilt from its space, then its weights loaded strictly).

        Raises:
            ConfigError: not a supernet file.
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = os.fspath(path)
        with safe_open(path, "pt") as fh:
            metadata = fh.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a supernet file (format {metadata.get('format')!r})")
        source = json.loads(metadata["source"])
        if "space" in source:
            from space.spec import SearchSpace  # the one place overlock reads a space back

            built_from = SearchSpace.from_dict(source["space"])
        else:
            built_from = [OverLoCKConfig.from_dict(c) for c in source["configs"]]
        net = cls(built_from, **json.loads(metadata["options"]))
        net.load_state_dict(load_file(path), strict=True)
        net.file_metadata = dict(metadata)
        return net.to(map_location)


# ------------------------------------------------------------------------------- helpers
def _own_tensors(module: nn.Module):
    for pname, p in module.named_parameters(recurse=False):
        yield pname, p, False
    for pname, b in module.named_buffers(recurse=False):
        yield pname, b, True


def _init_kind(module: nn.Module, path: str, pname: str) -> str:
    """OverLoCK's initialisation of each tensor (`OverLoCK._init_weights` and the layers')."""
    if isinstance(module, nn.Conv2d):
        return "normal" if pname == "weight" else "zeros"
    if isinstance(module, LayerScale):
        if pname == "bias":
            return "zeros"
        return "ones" if path.endswith(("x_scale", "h_scale")) else "layer_scale"
    if isinstance(module, (GRN, ContMixBlock)):
        return "zeros"
    return "ones" if pname in ("weight", "running_var") else "zeros"  # norms


def _initial(slot: _Slot, dtype, ls_init_value, generator) -> Tensor:
    t = torch.zeros(slot.shape, dtype=dtype)
    if slot.init == "normal":
        nn.init.trunc_normal_(t, std=0.02, generator=generator)
    elif slot.init == "ones":
        t.fill_(1)
    elif slot.init == "layer_scale":
        t.fill_(ls_init_value)
    elif slot.init == "eye":
        t.copy_(torch.eye(slot.shape[0]))
    return t


def _lk_site(path: str) -> str:
    """The config field whose value is the kernel of the re-param block at `path`."""
    stage = int(re.match(r"(?:sub_)?blocks(\d)", path).group(1))
    return f"reparam_kernels[{stage - 1}]"


def _site_values(config: OverLoCKConfig) -> dict[str, int]:
    out = {"region_count": config.region_count, "small_kernel": config.small_kernel}
    out.update({f"dynamic_kernels[{j}]": k for j, k in enumerate(config.dynamic_kernels)})
    out.update({f"reparam_kernels[{s}]": k for s, k in enumerate(config.reparam_kernels)})
    return out


def _envelope(configs: list[OverLoCKConfig]) -> SimpleNamespace:
    """The maximum of every elastic field (each on its own: the maxima need not be one config)."""
    env = {name: tuple(max(v) for v in zip(*(getattr(c, name) for c in configs)))
           for name in _ELASTIC_TUPLES}
    env.update({name: max(getattr(c, name) for c in configs) for name in _ELASTIC_SCALARS})
    env.update(aux_head=any(c.aux_head for c in configs), num_classes=configs[0].num_classes,
               in_chans=configs[0].in_chans)
    return SimpleNamespace(**env)


def _value_sets(configs, space, env) -> dict[str, tuple]:
    """Region counts and kernel sizes held (largest first): those of the configs and those the
    space's dimensions list directly, up to the maximum the configs reached."""
    sets: dict[str, set] = {}
    for c in configs:
        for site, value in _site_values(c).items():
            sets.setdefault(site, set()).add(value)
    for dim in getattr(space, "dimensions", ()):
        options = dim.options() or []
        for option in options:
            values = ({f"{dim.name}[{i}]": v for i, v in enumerate(option)}
                      if isinstance(option, (list, tuple)) else {dim.name: option})
            for site, value in values.items():
                if site in sets and isinstance(value, int):
                    sets[site].add(value)
    caps = _site_values(env)
    return {site: tuple(sorted((v for v in values if v <= caps[site]), reverse=True))
            for site, values in sets.items()}


class _DecisionPolicy(random.Random):
    """Stands in for a space's random source: the largest (or smallest) option of every decision,
    the decisions numbered in `flip` taking the other extreme."""

    def __init__(self, largest: bool = True, flip: tuple = ()):
        super().__init__(0)
        self.largest, self.flip, self.calls = largest, set(flip), 0

    def _largest_now(self) -> bool:
        self.calls += 1
        return self.largest != (self.calls - 1 in self.flip)

    def choice(self, seq):
        return (max if self._largest_now() else min)(seq, key=_option_key)

    def uniform(self, a, b):
        return max(a, b) if self._largest_now() else min(a, b)


def _option_key(value):
    if isinstance(value, (list, tuple)):
        return (sum(float(v) for v in value), tuple(value))
    return (float(value), ()) if isinstance(value, (int, float)) else (0.0, (str(value),))


def _space_configs(space, samples: int, seed: int) -> list[OverLoCKConfig]:
    """Configs that reach every maximum: the extremes, each decision flipped once (a depth split's
    later parts are largest when the earlier ones are smallest), and `samples` random ones."""
    out = []
    for largest in (True, False):
        for flip in [()] + [(i,) for i in range(48)]:
            try:
                out.append(space.sample(_DecisionPolicy(largest, flip)))
            except ValueError:  # SpaceError: that extreme is not a valid architecture
                pass
    rng = random.Random(seed)
    out += [space.sample(rng) for _ in range(samples)]
    return out


def _size_proxy(c: OverLoCKConfig):
    """Orders configs by size (about their weight count) for "max" / "min"."""
    depths = (*c.base_depths, c.overview_depth, *c.focus_depths)
    widths = (*c.widths, c.widths[2], c.widths[3])
    return (sum(d * w * w for d, w in zip(depths, widths)), c.region_count,
            sum(c.dynamic_kernels), c.small_kernel)


def sample_config(space_or_supernet, rng: random.Random | int | None = None,
                  kind: str = "random") -> OverLoCKConfig:
    """A config of the space: uniform per decision ("random"), or the largest ("max": the largest
    option of every decision, in the order the space lists them) / smallest ("min").

    A `Supernet` argument samples its space (or its config list: uniformly, or the largest /
    smallest by weight count) and returns the config fitted to it. When the all-largest decisions
    make no valid architecture, "max" is the largest of 256 random configs (and "min" likewise).

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in ("random", "max", "min"):
        raise ValueError(f"kind={kind!r} must be 'random', 'max' or 'min'")
    if isinstance(space_or_supernet, Supernet):
        net = space_or_supernet
        source = net.space if net.space is not None else net.configs
        return net.fit(sample_config(source, rng, kind))
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    source = space_or_supernet
    if isinstance(source, (list, tuple)):
        if kind == "random":
            return rng.choice(list(source))
        return (max if kind == "max" else min)(source, key=_size_proxy)
    if kind == "random":
        return source.sample(rng)
    try:
        return source.sample(_DecisionPolicy(largest=(kind == "max")))
    except ValueError:
        candidates = [source.sample(rng) for _ in range(256)]
        return (max if kind == "max" else min)(candidates, key=_size_proxy)


def _write_back(writeback) -> None:
    """Copy running statistics updated in gathered (non-view) buffers into the supernet."""
    with torch.no_grad():
        for source, index, t in writeback:
            source[index.to(source.device)] = t.detach()
