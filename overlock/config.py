"""The canonical description of one OverLoCK architecture.

`OverLoCKConfig` holds every architectural choice of the network. It is immutable, validated on
construction (errors name the field, the value and the rule), round-trips through JSON and YAML and
has a content hash that is the same in every process and on every machine.

Naming follows the paper: Base-Net (stem + stages 1-3), Overview-Net (stage 4 at 1/32, produces the
context prior), Focus-Net (ContMix dynamic blocks at stages 3 and 4).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, Mapping

SCHEMA_VERSION = 1

# Dilated re-param kernel sizes the official DilatedReparamBlock knows branch settings for.
REPARAM_KERNELS = (5, 7, 9, 11, 13, 15, 17, 19)


class ConfigError(ValueError):
    """An invalid architecture: the message names the field, the value and the rule."""


def _tuple(value: Any, n: int, name: str, kind=int) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * n
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"{name}={value!r} must be a list of {n} numbers") from None
    if len(items) != n:
        raise ConfigError(f"{name}={list(items)!r} must have {n} entries, has {len(items)}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name}={list(items)!r}: entry {v!r} is not a number")
        if kind is int:
            if float(v) != int(v):
                raise ConfigError(f"{name}={list(items)!r}: entry {v!r} is not an integer")
            v = int(v)
        else:
            v = float(v)
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class OverLoCKConfig:
    """Every architectural choice of an OverLoCK network.

    Args:
        base_depths: blocks in Base-Net stages 1, 2, 3 (re-param large-kernel blocks).
        overview_depth: blocks in the Overview-Net (stage 4, 1/32 resolution).
        focus_depths: ContMix dynamic blocks in Focus-Net stages 3 and 4 (each >= 1).
        widths: channels of stages 1-4; the Overview-Net and Focus stage 4 share widths[3].
        stem_width: channels of the stem's first two convs (official: widths[0] // 2).
        context_dim: channels of the context prior (official: widths[3] // 4).
        head_width: width of the 1x1 projection before the classifier (official: 1024).
        reparam_kernels: dilated re-param kernel of stages 1-4; stage 3's and 4's also serve as the
            Focus-Net's local (lepe) kernel, as in the official code.
        dynamic_kernels: the large token-wise dynamic kernel of Focus stages 3 and 4.
        small_kernel: the small token-wise dynamic kernel (both Focus stages).
        region_count: R, the ContMix context is pooled to R x R region centres.
        focus_heads: heads per Focus stage as the official `sub_num_heads`; ContMix uses
            2 x heads groups (one half of the channels for each of the two dynamic kernels).
        mlp_ratios: MLP expansion of Base-Net stages 1-3 and the Overview-Net.
        focus_mlp_ratios: MLP expansion of Focus stages 3 and 4.
        resolution: input (height, width) the architecture is priced and profiled at.
        num_classes: classifier outputs (0: no classifier, the head returns pooled features).
        aux_head: the auxiliary (training-only) classifier on the Overview-Net's output.
        in_chans: input channels.
    """

    base_depths: tuple[int, int, int] = (2, 2, 3)
    overview_depth: int = 2
    focus_depths: tuple[int, int] = (6, 2)
    widths: tuple[int, int, int, int] = (56, 112, 256, 336)
    stem_width: int | None = None
    context_dim: int | None = None
    head_width: int = 1024
    reparam_kernels: tuple[int, int, int, int] = (17, 15, 13, 7)
    dynamic_kernels: tuple[int, int] = (13, 7)
    small_kernel: int = 5
    region_count: int = 7
    focus_heads: tuple[int, int] = (4, 6)
    mlp_ratios: tuple[float, float, float, float] = (4.0, 4.0, 4.0, 4.0)
    focus_mlp_ratios: tuple[float, float] = (3.0, 3.0)
    resolution: tuple[int, int] = (224, 224)
    num_classes: int = 1000
    aux_head: bool = True
    in_chans: int = 3

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("base_depths", _tuple(self.base_depths, 3, "base_depths"))
        set_("focus_depths", _tuple(self.focus_depths, 2, "focus_depths"))
        set_("widths", _tuple(self.widths, 4, "widths"))
        set_("reparam_kernels", _tuple(self.reparam_kernels, 4, "reparam_kernels"))
        set_("dynamic_kernels", _tuple(self.dynamic_kernels, 2, "dynamic_kernels"))
        set_("focus_heads", _tuple(self.focus_heads, 2, "focus_heads"))
        set_("mlp_ratios", _tuple(self.mlp_ratios, 4, "mlp_ratios", float))
        set_("focus_mlp_ratios", _tuple(self.focus_mlp_ratios, 2, "focus_mlp_ratios", float))
        set_("resolution", _tuple(self.resolution, 2, "resolution"))
        for name in ("overview_depth", "head_width", "small_kernel", "region_count", "num_classes",
                     "in_chans"):
            set_(name, _tuple(getattr(self, name), 1, name)[0])
        if not isinstance(self.aux_head, bool):
            raise ConfigError(f"aux_head={self.aux_head!r} must be true or false")
        if self.stem_width is None:
            set_("stem_width", self.widths[0] // 2)
        if self.context_dim is None:
            set_("context_dim", self.widths[3] // 4)
        set_("stem_width", _tuple(self.stem_width, 1, "stem_width")[0])
        set_("context_dim", _tuple(self.context_dim, 1, "context_dim")[0])
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for i, d in enumerate(self.base_depths):
            need(d >= 0, f"base_depths[{i}]={d} must be >= 0")
        need(self.overview_depth >= 0, f"overview_depth={self.overview_depth} must be >= 0")
        for i, d in enumerate(self.focus_depths):
            need(d >= 1, f"focus_depths[{i}]={d} must be >= 1 (the context flow needs a block)")
        for i, w in enumerate(self.widths):
            need(w >= 8, f"widths[{i}]={w} must be >= 8")
        need(self.stem_width >= 1, f"stem_width={self.stem_width} must be >= 1")
        need(self.context_dim >= 1, f"context_dim={self.context_dim} must be >= 1")
        need(self.head_width >= 1, f"head_width={self.head_width} must be >= 1")
        for i, k in enumerate(self.reparam_kernels):
            need(k in REPARAM_KERNELS, f"reparam_kernels[{i}]={k} must be one of {list(REPARAM_KERNELS)}")
        need(self.small_kernel >= 3 and self.small_kernel % 2 == 1,
             f"small_kernel={self.small_kernel} must be odd and >= 3")
        for i, k in enumerate(self.dynamic_kernels):
            need(k >= 3 and k % 2 == 1, f"dynamic_kernels[{i}]={k} must be odd and >= 3")
            need(k >= self.small_kernel,
                 f"dynamic_kernels[{i}]={k} must be >= small_kernel={self.small_kernel}")
        need(1 <= self.region_count <= 32, f"region_count={self.region_count} must be in 1..32")
        for i, (h, w) in enumerate(zip(self.focus_heads, self.widths[2:])):
            need(h >= 1, f"focus_heads[{i}]={h} must be >= 1")
            # ContMix splits the width in two halves (small and large kernel), each into 2*h groups.
            need(w % (4 * h) == 0,
                 f"focus_heads[{i}]={h} does not divide width {w}/2 into {2 * h} groups "
                 f"(widths[{i + 2}] must be a multiple of 4*heads={4 * h})")
        for name in ("mlp_ratios", "focus_mlp_ratios"):
            for i, r in enumerate(getattr(self, name)):
                need(r > 0, f"{name}[{i}]={r} must be > 0")
        for i, r in enumerate(self.resolution):
            need(r >= 32, f"resolution[{i}]={r} must be >= 32 (the network downsamples by 32)")
        need(self.num_classes >= 0, f"num_classes={self.num_classes} must be >= 0")
        need(self.in_chans >= 1, f"in_chans={self.in_chans} must be >= 1")

    # ----------------------------------------------------------------------------- derived
    @property
    def focus_groups(self) -> tuple[int, int]:
        """ContMix groups per Focus stage (2 x heads, the official `num_heads * 2`)."""
        return tuple(2 * h for h in self.focus_heads)

    @property
    def depth(self) -> int:
        """Total number of blocks."""
        return sum(self.base_depths) + self.overview_depth + sum(self.focus_depths)

    # ------------------------------------------------------------------------ round trips
    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists, not tuples) of every field."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OverLoCKConfig":
        """Build from a dict; unknown keys are an error naming the key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**dict(data))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "OverLoCKConfig":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=True, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str) -> "OverLoCKConfig":
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    def replace(self, **changes) -> "OverLoCKConfig":
        """A copy with some fields changed (derived defaults recomputed when their source changes)."""
        data = self.to_dict()
        for derived, source in (("stem_width", "widths"), ("context_dim", "widths")):
            if source in changes and derived not in changes:
                data.pop(derived)
        data.update(changes)
        return OverLoCKConfig.from_dict(data)

    def with_io(self, num_classes: int, in_chans: int) -> "OverLoCKConfig":
        """This config with the head's classes and the stem's input channels given (itself when
        they are already those)."""
        changes = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                   if getattr(self, k) != v}
        return self.replace(**changes) if changes else self

    def config_hash(self) -> str:
        """Stable content id: sha256 of the canonical JSON (sorted keys, schema version)."""
        canonical = json.dumps({"schema": SCHEMA_VERSION, **self.to_dict()}, sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def architecture_hash(self) -> str:
        """Hash of the architecture alone: the same network at any input resolution."""
        return dataclasses.replace(self, resolution=(224, 224)).config_hash()

    def summary(self) -> str:
        """One line: depths per net, widths, region count and kernels."""
        return (f"base {list(self.base_depths)} overview {self.overview_depth} focus "
                f"{list(self.focus_depths)} | widths {list(self.widths)} | R={self.region_count} "
                f"k={list(self.dynamic_kernels)}/{self.small_kernel} heads {list(self.focus_heads)} "
                f"| {self.resolution[0]}x{self.resolution[1]}")


PRESETS: dict[str, OverLoCKConfig] = {
    "overlock_xt": OverLoCKConfig(
        base_depths=(2, 2, 3), overview_depth=2, focus_depths=(6, 2), widths=(56, 112, 256, 336),
        dynamic_kernels=(13, 7), focus_heads=(4, 6)),
    "overlock_t": OverLoCKConfig(
        base_depths=(4, 4, 6), overview_depth=2, focus_depths=(12, 2), widths=(64, 128, 256, 512),
        dynamic_kernels=(13, 7), focus_heads=(4, 8)),
    "overlock_s": OverLoCKConfig(
        base_depths=(6, 6, 8), overview_depth=3, focus_depths=(16, 3), widths=(64, 128, 320, 512),
        dynamic_kernels=(13, 7), focus_heads=(8, 16)),
    "overlock_b": OverLoCKConfig(
        base_depths=(8, 8, 10), overview_depth=4, focus_depths=(20, 4), widths=(80, 160, 384, 576),
        dynamic_kernels=(13, 7), focus_heads=(6, 9)),
}
