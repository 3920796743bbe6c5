"""OverLoCK: Base-Net, Overview-Net and Focus-Net with ContMix, built from an `OverLoCKConfig`.

Module and parameter names match the official implementation so its checkpoints load with
`strict=True`; what the official code hard-codes (region count, dynamic kernel sizes, context and
head widths) is taken from the config instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import OverLoCKConfig
from .layers import (GRN, DilatedReparamBlock, DropPath, LayerNorm2d, LayerScale, ResDWConv,
                     SEModule, conv_bn)
from .ops import na2d_av, window_start


def stem(in_chans: int, mid: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(mid), nn.GELU(),
        nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.GELU(),
        nn.Conv2d(mid, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.GELU(),
        nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
    )


def downsample(in_dim: int, out_dim: int) -> nn.Sequential:
    return conv_bn(in_dim, out_dim, kernel_size=3, stride=2)


class RepConvBlock(nn.Module):
    """Base-Net / Overview-Net block: dilated re-param large kernel, SE, GRN MLP."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: float, ls_init_value: float | None,
                 drop_path: float = 0.0, deploy: bool = False):
        super().__init__()
        mlp_dim = int(dim * mlp_ratio)
        self.dwconv = ResDWConv(dim, 3)
        self.proj = nn.Sequential(
            LayerNorm2d(dim),
            DilatedReparamBlock(dim, kernel_size, deploy=deploy),
            nn.BatchNorm2d(dim),
            SEModule(dim),
            nn.Conv2d(dim, mlp_dim, 1),
            nn.GELU(),
            ResDWConv(mlp_dim, 3),
            GRN(mlp_dim),
            nn.Conv2d(mlp_dim, dim, 1),
            DropPath(drop_path) if drop_path > 0 else nn.Identity(),
        )
        self.ls = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.dwconv(x)
        return self.ls(x) + self.proj(x)


def _rpb_index(length: int, kernel_size: int, device=None) -> Tensor:
    """(length, k) index into a (2k-1) bias axis: window position minus query position, shifted.

    Rebuilt per call (tiny): a cached tensor would leak fake / inference tensors across modes."""
    start = window_start(length, kernel_size, device)
    offsets = (start[:, None] + torch.arange(kernel_size, device=device)[None, :]
               - torch.arange(length, device=device)[:, None])
    return offsets + kernel_size - 1


def relative_position_bias(rpb: Tensor, height: int, width: int, kernel_size: int) -> Tensor:
    """(G, 2k-1, 2k-1) table -> (1, G, H, W, k*k) bias of each query's shifted window."""
    rows = _rpb_index(height, kernel_size, rpb.device)
    cols = _rpb_index(width, kernel_size, rpb.device)
    bias = rpb[:, rows][:, :, :, cols]  # (G, H, k, W, k)
    G = rpb.shape[0]
    return bias.permute(0, 1, 3, 2, 4).reshape(1, G, height, width, kernel_size * kernel_size)


class ContMixBlock(nn.Module):
    """Focus-Net block: context-mixing dynamic convolution guided by the context prior.

    Called as `block(x, ctx, ctx_prior)`; returns `(x, ctx)` (ctx is None after the last block).
    """

    def __init__(self, dim: int, ctx_dim: int, lepe_kernel: int, dynamic_kernel: int,
                 small_kernel: int, heads: int, region_count: int, mlp_ratio: float,
                 ls_init_value: float | None, drop_path: float = 0.0, is_first: bool = False,
                 is_last: bool = False, deploy: bool = False):
        super().__init__()
        out_dim = dim + ctx_dim
        mlp_dim = int(dim * mlp_ratio)
        self.kernel_size = dynamic_kernel
        self.smk_size = small_kernel
        self.num_heads = heads * 2
        self.region_count = region_count
        self.scale = (dim // self.num_heads) ** -0.5
        self.is_first = is_first
        self.is_last = is_last

        if not is_first:
            self.x_scale = LayerScale(ctx_dim, init_value=1)
            self.h_scale = LayerScale(ctx_dim, init_value=1)
        self.dwconv1 = ResDWConv(out_dim, 3)
        self.norm1 = LayerNorm2d(out_dim)
        self.fusion = nn.Sequential(
            nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim),
            nn.BatchNorm2d(out_dim),
            nn.GELU(),
            nn.Conv2d(out_dim, dim, 1),
            GRN(dim),
        )
        self.weight_query = conv_bn(dim, dim // 2)
        self.weight_key = nn.Sequential(nn.AdaptiveAvgPool2d(region_count), *conv_bn(ctx_dim, dim // 2))
        self.weight_proj = nn.Conv2d(region_count ** 2, small_kernel ** 2 + dynamic_kernel ** 2, 1)
        self.dyconv_proj = conv_bn(dim, dim)
        self.lepe = nn.Sequential(DilatedReparamBlock(dim, lepe_kernel, deploy=deploy),
                                  nn.BatchNorm2d(dim))
        self.se_layer = SEModule(dim)
        self.gate = nn.Sequential(*conv_bn(dim, dim), nn.SiLU())
        self.proj = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, out_dim, 1))
        self.dwconv2 = ResDWConv(out_dim, 3)
        self.norm2 = LayerNorm2d(out_dim)
        self.mlp = nn.Sequential(
            nn.Conv2d(out_dim, mlp_dim, 1),
            nn.GELU(),
            ResDWConv(mlp_dim, 3),
            GRN(mlp_dim),
            nn.Conv2d(mlp_dim, out_dim, 1),
        )
        self.ls1 = LayerScale(out_dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ls2 = LayerScale(out_dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.rpb1 = nn.Parameter(torch.zeros(self.num_heads, 2 * small_kernel - 1, 2 * small_kernel - 1))
        self.rpb2 = nn.Parameter(torch.zeros(self.num_heads, 2 * dynamic_kernel - 1,
                                             2 * dynamic_kernel - 1))

    @staticmethod
    def working_size(height: int, width: int, kernel_size: int) -> tuple[int, int]:
        """Map size the dynamic kernels run at: maps smaller than the kernel are resized up."""
        if min(height, width) >= kernel_size:
            return height, width
        if height < width:
            return kernel_size, int(kernel_size / height * width)
        return int(kernel_size / width * height), kernel_size

    def contmix(self, x: Tensor, x_f: Tensor, C: int, C_h: int) -> Tensor:
        """Token-wise dynamic kernels from region affinities, applied with `na2d_av`."""
        B, _, H0, W0 = x.shape
        H, W = self.working_size(H0, W0, self.kernel_size)
        resized = (H, W) != (H0, W0)
        if resized:
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
            x_f = F.interpolate(x_f, size=(H, W), mode="bilinear", align_corners=False)
        G = self.num_heads
        query, key = torch.split(x_f, [C, C_h], dim=1)
        query = self.weight_query(query) * self.scale
        key = self.weight_key(key)
        query = query.reshape(B, G, -1, H * W).transpose(-1, -2)           # (B, G, HW, c)
        key = key.reshape(B, G, -1, self.region_count ** 2)                 # (B, G, c, R*R)
        affinity = torch.matmul(query, key)                                 # (B, G, HW, R*R)
        weight = self.weight_proj(affinity.permute(0, 3, 1, 2))             # (B, s*s+k*k, G, HW)
        weight = weight.permute(0, 2, 3, 1).reshape(B, G, H, W, -1)
        s2 = self.smk_size ** 2
        attn_small = weight[..., :s2] + relative_position_bias(self.rpb1, H, W, self.smk_size)
        attn_large = weight[..., s2:] + relative_position_bias(self.rpb2, H, W, self.kernel_size)
        attn_small = torch.softmax(attn_small, dim=-1)
        attn_large = torch.softmax(attn_large, dim=-1)
        value = x.reshape(B, 2, G, -1, H, W).permute(1, 0, 2, 4, 5, 3)      # (2, B, G, H, W, c)
        out_small = na2d_av(attn_small, value[0], self.smk_size)
        out_large = na2d_av(attn_large, value[1], self.kernel_size)
        out = torch.cat([out_small, out_large], dim=1)                      # (B, 2G, H, W, c)
        out = out.permute(0, 1, 4, 2, 3).reshape(B, C, H, W)
        if resized:
            out = F.adaptive_avg_pool2d(out, (H0, W0))
        return out

    def forward(self, x: Tensor, h_x: Tensor, h_r: Tensor):
        C, C_h = x.shape[1], h_x.shape[1]
        if not self.is_first:
            h_x = self.x_scale(h_x) + self.h_scale(h_r)
        x_f = self.dwconv1(torch.cat([x, h_x], dim=1))
        identity = x_f
        x_f = self.norm1(x_f)
        x = self.fusion(x_f)
        gate = self.gate(x)
        lepe = self.lepe(x)
        x = self.dyconv_proj(self.contmix(x, x_f, C, C_h))
        x = self.se_layer(x + lepe)
        x = self.proj(gate * x)
        x = self.ls1(identity) + self.drop_path(x)
        x = self.dwconv2(x)
        x = self.ls2(x) + self.drop_path(self.mlp(self.norm2(x)))
        if self.is_last:
            return x, None
        return tuple(torch.split(x, [C, C_h], dim=1))


class CTXDownsample(nn.Module):
    """Focus stage 3 -> 4 transition: downsample the features and the context together."""

    def __init__(self, dim: int, out_dim: int, ctx_dim: int):
        super().__init__()
        self.x_proj = conv_bn(dim, out_dim, kernel_size=3, stride=2)
        self.h_proj = conv_bn(ctx_dim, ctx_dim, kernel_size=3, stride=2)

    def forward(self, x: Tensor, ctx: Tensor):
        return self.x_proj(x), self.h_proj(ctx)


def _run(block, use_checkpoint: bool, *args):
    if use_checkpoint and torch.is_grad_enabled() and args[0].requires_grad:
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class OverLoCK(nn.Module):
    """An Overview-first-Look-Closely-next ConvNet with context-mixing dynamic kernels.

    Args:
        config: the architecture.
        deploy: build the re-parameterised (inference) structure directly.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        use_checkpoint: gradient checkpointing of every block, or per stage as four booleans
            (Base 1, Base 2, Base 3 + Focus 3, Overview + Focus 4), as in the official code.
        ls_init_value: layer-scale init of stages 3 and 4 (stages 1-2 have none, as official).

    In training with the aux head, `forward` returns `{"main": logits, "aux": aux_logits}`;
    otherwise the main logits.
    """

    def __init__(self, config: OverLoCKConfig, deploy: bool = False, drop_path_rate: float = 0.0,
                 use_checkpoint: bool | tuple[bool, ...] = False, ls_init_value: float = 1.0):
        super().__init__()
        cfg = self.config = config
        if isinstance(use_checkpoint, bool):
            use_checkpoint = (use_checkpoint,) * 4
        self.use_checkpoint = tuple(bool(u) for u in use_checkpoint)
        w1, w2, w3, w4 = cfg.widths
        ctx_dim = cfg.context_dim
        ls = (None, None, ls_init_value, ls_init_value)
        self.num_classes = cfg.num_classes
        self.num_features = w4 + ctx_dim

        self.patch_embed1 = stem(cfg.in_chans, cfg.stem_width, w1)
        self.patch_embed2 = downsample(w1, w2)
        self.patch_embed3 = downsample(w2, w3)
        self.patch_embed4 = downsample(w3, w4)
        self.high_level_proj = nn.Conv2d(w4, ctx_dim, 1)
        self.patch_embedx = CTXDownsample(w3, w4, ctx_dim)

        base_depths = (*cfg.base_depths, cfg.overview_depth)
        n = cfg.depth
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        cursor = 0
        for stage, (dim, depth) in enumerate(zip(cfg.widths, base_depths)):
            blocks = nn.ModuleList(
                RepConvBlock(dim, cfg.reparam_kernels[stage], cfg.mlp_ratios[stage], ls[stage],
                             dpr[cursor + i], deploy=deploy) for i in range(depth))
            self.add_module(f"blocks{stage + 1}", blocks)
            cursor += depth
        for stage, (dim, depth) in enumerate(zip((w3, w4), cfg.focus_depths)):
            blocks = nn.ModuleList(
                ContMixBlock(dim, ctx_dim, lepe_kernel=cfg.reparam_kernels[stage + 2],
                             dynamic_kernel=cfg.dynamic_kernels[stage], small_kernel=cfg.small_kernel,
                             heads=cfg.focus_heads[stage], region_count=cfg.region_count,
                             mlp_ratio=cfg.focus_mlp_ratios[stage], ls_init_value=ls[stage + 2],
                             drop_path=dpr[cursor + i], is_first=(stage == 0 and i == 0),
                             is_last=(stage == 1 and i == depth - 1), deploy=deploy)
                for i in range(depth))
            self.add_module(f"sub_blocks{stage + 3}", blocks)
            cursor += depth

        if cfg.aux_head:
            self.aux_head = nn.Sequential(
                nn.BatchNorm2d(w4), nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(w4, cfg.num_classes, 1) if cfg.num_classes > 0 else nn.Identity())
        self.head = nn.Sequential(
            nn.Conv2d(self.num_features, cfg.head_width, 1, bias=False),
            nn.BatchNorm2d(cfg.head_width),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(cfg.head_width, cfg.num_classes, 1) if cfg.num_classes > 0 else nn.Identity())
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------------------- structure
    @property
    def deployed(self) -> bool:
        return all(m.deployed for m in self.modules() if isinstance(m, DilatedReparamBlock))

    def reparam(self) -> "OverLoCK":
        """Merge every dilated re-param block into one conv (in place); returns self."""
        for m in self.modules():
            if isinstance(m, DilatedReparamBlock):
                m.reparam()
        return self

    def stage_modules(self) -> dict[str, list[nn.Module]]:
        """The model's stages by net, for per-stage profiling."""
        return {
            "stem": [self.patch_embed1],
            "base1": [*self.blocks1, self.patch_embed2],
            "base2": [*self.blocks2, self.patch_embed3],
            "base3": [*self.blocks3, self.patch_embed4],
            "overview": [*self.blocks4, self.high_level_proj],
            "focus3": [*self.sub_blocks3, self.patch_embedx],
            "focus4": [*self.sub_blocks4],
            "head": [self.head],
        }

    # ------------------------------------------------------------------------------ forward
    def forward_base(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Base-Net and Overview-Net: (stage-3 features, Overview context at 1/32)."""
        ck = self.use_checkpoint
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = _run(blk, ck[0], x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = _run(blk, ck[1], x)
        x = self.patch_embed3(x)
        for blk in self.blocks3:
            x = _run(blk, ck[2], x)
        ctx = self.patch_embed4(x)
        for blk in self.blocks4:
            ctx = _run(blk, ck[3], ctx)
        return x, ctx

    def forward_focus(self, x: Tensor, ctx: Tensor) -> Tensor:
        """Focus-Net guided by the context prior (projected, upsampled, updated in every block)."""
        ck = self.use_checkpoint
        prior = self.high_level_proj(ctx)
        prior_up = F.interpolate(prior, size=x.shape[2:], mode="bilinear", align_corners=False)
        h = prior_up
        for blk in self.sub_blocks3:
            x, h = _run(blk, ck[2], x, h, prior_up)
        x, h = self.patch_embedx(x, h)
        for blk in self.sub_blocks4:
            x, h = _run(blk, ck[3], x, h, prior)
        return x

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(Focus-Net output at 1/32, Overview-Net context at 1/32)."""
        x, ctx = self.forward_base(x)
        return self.forward_focus(x, ctx), ctx

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head(x).flatten(1)

    def forward(self, x: Tensor):
        x, ctx = self.forward_features(x)
        logits = self.forward_head(x)
        if self.training and hasattr(self, "aux_head"):
            return {"main": logits, "aux": self.aux_head(ctx).flatten(1)}
        return logits
