"""Reusable layers of OverLoCK: norms, layer scale, SE, GRN, drop path and the dilated re-param block.

Attribute names follow the official code so official state_dicts load with `strict=True`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (kernel sizes, dilations) of the parallel dilated branches per large kernel, as in UniRepLKNet.
DILATED_BRANCHES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    19: ((5, 7, 9, 9, 3, 3, 3), (1, 1, 1, 2, 4, 5, 7)),
    17: ((5, 7, 9, 3, 3, 3), (1, 1, 2, 4, 5, 7)),
    15: ((5, 7, 7, 3, 3, 3), (1, 1, 2, 3, 5, 7)),
    13: ((5, 7, 7, 3, 3, 3), (1, 1, 2, 3, 4, 5)),
    11: ((5, 7, 5, 3, 3, 3), (1, 1, 2, 3, 4, 5)),
    9: ((5, 7, 5, 3, 3), (1, 1, 2, 3, 4)),
    7: ((5, 3, 3, 3), (1, 1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (works on channels_last memory too)."""

    def __init__(self, dim: int):
        super().__init__(normalized_shape=dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """Per-channel scale and bias with the official parameter layout (a depthwise 1x1 conv).

    Eager mode multiplies and adds (a grouped 1x1 conv runs one tiny conv per channel on CPU,
    ~20% of OverLoCK-XT's forward time); under tracing it is the official conv, so fvcore counts
    it as the official model is counted.
    """

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, 1, 1, 1) * init_value)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing():
            return F.conv2d(x, weight=self.weight, bias=self.bias, groups=x.shape[1])
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2), NCHW."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        gx = torch.norm(x, p=2, dim=(-1, -2), keepdim=True)
        nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
        return (self.gamma * nx + 1) * x + self.beta


class SEModule(nn.Module):
    """Squeeze-and-excitation with a GELU bottleneck of max(16, dim // 8) channels."""

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        inner = max(16, dim // reduction)
        self.proj = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, inner, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(inner, dim, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.proj(x)


class ResDWConv(nn.Conv2d):
    """Depthwise conv with a residual connection."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


def conv_bn(in_dim: int, out_dim: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, stride=stride, padding=kernel_size // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_dim),
    )


def fuse_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of `bn(conv(x))` as one conv."""
    bias = 0 if conv.bias is None else conv.bias
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias + (bias - bn.running_mean) * scale


def dilate_kernel(kernel: Tensor, dilation: int) -> Tensor:
    """A depthwise (C, 1, k, k) kernel spread out to its dilated equivalent (C, 1, d(k-1)+1, ...)."""
    if dilation == 1:
        return kernel
    C, one, k, _ = kernel.shape
    size = dilation * (k - 1) + 1
    out = kernel.new_zeros(C, one, size, size)
    out[:, :, ::dilation, ::dilation] = kernel
    return out


class DilatedReparamBlock(nn.Module):
    """Depthwise large kernel plus parallel dilated small kernels (UniRepLKNet), merged by `reparam`.

    In deploy form it is a single depthwise conv with bias.
    """

    def __init__(self, channels: int, kernel_size: int, deploy: bool = False):
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(f"kernel_size={kernel_size} must be one of {sorted(DILATED_BRANCHES)} "
                             "for a dilated re-param block")
        self.kernel_size = kernel_size
        self.lk_origin = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                   groups=channels, bias=deploy)
        self.kernel_sizes, self.dilates = DILATED_BRANCHES[kernel_size]
        if not deploy:
            self.origin_bn = nn.BatchNorm2d(channels)
            for k, r in zip(self.kernel_sizes, self.dilates):
                self.add_module(f"dil_conv_k{k}_{r}", nn.Conv2d(
                    channels, channels, k, padding=(r * (k - 1) + 1) // 2, dilation=r,
                    groups=channels, bias=False))
                self.add_module(f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    @property
    def deployed(self) -> bool:
        return not hasattr(self, "origin_bn")

    def branches(self):
        for k, r in zip(self.kernel_sizes, self.dilates):
            yield k, r, getattr(self, f"dil_conv_k{k}_{r}"), getattr(self, f"dil_bn_k{k}_{r}")

    def forward(self, x: Tensor) -> Tensor:
        if self.deployed:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for _, _, conv, bn in self.branches():
            out = out + bn(conv(x))
        return out

    @torch.no_grad()
    def reparam(self) -> None:
        """Merge every branch and BN into `lk_origin` (eval-mode equivalence)."""
        if self.deployed:
            return
        weight, bias = fuse_bn(self.lk_origin, self.origin_bn)
        for k, r, conv, bn in self.branches():
            w, b = fuse_bn(conv, bn)
            w = dilate_kernel(w, r)
            pad = self.kernel_size // 2 - w.shape[-1] // 2
            weight = weight + F.pad(w, [pad] * 4)
            bias = bias + b
        merged = nn.Conv2d(weight.shape[0], weight.shape[0], self.kernel_size,
                           padding=self.kernel_size // 2, groups=weight.shape[0], bias=True)
        merged = merged.to(device=weight.device, dtype=weight.dtype)
        merged.weight.copy_(weight)
        merged.bias.copy_(bias)
        self.lk_origin = merged
        for k, r, _, _ in list(self.branches()):
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        del self.origin_bn
