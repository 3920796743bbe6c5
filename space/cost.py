"""Analytic cost of an OverLoCK config: parameters, multiply-adds and activation memory.

Computed from the config alone (no model built, nothing traced), the idea of pycls' per-module
`complexity()`: each function below walks the same shapes the matching module's `forward` does and
adds what fvcore would count for each op. Tests hold it equal to `sum(p.numel())` and to fvcore's
count (with the aggregation-op handle) exactly, at any resolution.

fvcore conventions reproduced here (one multiply-add = 1): conv = out elements x in/groups x k x k;
eval BatchNorm = 2 x input elements; LayerNorm = 5 x input elements; adaptive average pool = input
elements; bilinear upsample = 4 x output elements; matmul = prod(A) x B's last dim; na2d_av =
B x G x H x W x k*k x C. Activations, adds, multiplies, softmax and norms count 0.
"""

from __future__ import annotations


from dataclasses import dataclass, field

from overlock.config import OverLoCKConfig
from overlock.layers import DILATED_BRANCHES
from overlock.model import ContMixBlock

BYTES_FP32 = 4


@dataclass
class Cost:
    """Cost of one config at one input size.

    Attributes:
        params: parameters of the model as built (train or deploy structure; aux head included
            when the config has one), equal to `sum(p.numel())`.
        params_inference: parameters of the deploy structure without the aux head (the paper's
            "Params"; the `params` metric of a study).
        flops: multiply-adds of an eval forward pass, fvcore convention with the aggregation op
            counted ("GMACs (fvcore; the paper's FLOPs)"), at `batch x C x H x W`.
        flops_paper: the same in the paper's convention (large-kernel depthwise convs and the
            aggregation op uncounted, as in the authors' iGEMM + NATTEN setup).
        memory_mb: estimated peak activation memory of an fp32 inference pass of the deploy
            model, MiB (live tensors at the busiest point; weights not included).
        by_part: flops per part (stem, base1, base2, base3, overview, focus3, focus4, head).
        by_kind: per op kind ("conv", "pwconv", "dwconv", "scale", "norm", "pool", "resample",
            "matmul", "aggregation"): {"macs", "elements" (output elements written), "calls"};
            the kernel-level breakdown a latency model is fitted on (nas/latency_model.py).
    """

    params: int
    params_inference: int
    flops: int
    flops_paper: int
    memory_mb: float
    resolution: tuple
    batch: int
    deploy: bool
    by_part: dict = field(default_factory=dict)
    by_kind: dict = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def as_metrics(self) -> dict:
        """The study metrics this cost provides (names of docs/reference/storage.md)."""
        return {"flops": self.flops, "flops_paper": self.flops_paper,
                "params": self.params_inference, "memory_mb": self.memory_mb}


class _Tally:
    """Accumulates params, MACs (both conventions) and the activation peak."""

    def __init__(self, batch: int, deploy: bool):
        self.B = batch
        self.deploy = deploy
        self.params = 0
        self.macs = 0
        self.hidden = 0  # MACs the paper's convention leaves out
        self.peak = 0    # elements
        self.part = {}
        self.kind = {}   # op kind -> [macs, output elements, calls]

    # --- primitives (fvcore's handles) ---
    def op(self, kind: str, macs: int, elements: int) -> int:
        """Count one op of `kind`: its MACs and the elements it writes."""
        self.macs += macs
        tally = self.kind.setdefault(kind, [0, 0, 0])
        tally[0] += macs
        tally[1] += elements
        tally[2] += 1
        return macs

    def conv(self, cin, cout, k, hw, groups=1, bias=True):
        self.params += cout * (cin // groups) * k * k + (cout if bias else 0)
        macs = self.B * cout * (cin // groups) * k * k * hw
        if groups == 1:
            kind = "pwconv" if k == 1 else "conv"
        else:
            kind = "scale" if k == 1 else "dwconv"  # a 1x1 depthwise conv is LayerScale's multiply
        return self.op(kind, macs, self.B * cout * hw)

    def bn(self, c, hw):
        self.params += 2 * c
        self.op("norm", 2 * self.B * c * hw, self.B * c * hw)

    def ln(self, c, hw):
        self.params += 2 * c
        self.op("norm", 5 * self.B * c * hw, self.B * c * hw)

    def live(self, elements):
        self.peak = max(self.peak, elements)

    # --- modules ---
    def conv_bn(self, cin, cout, k, hw_out):
        self.conv(cin, cout, k, hw_out, bias=False)
        self.bn(cout, hw_out)

    def res_dw(self, c, hw):
        self.conv(c, c, 3, hw, groups=c)

    def layer_scale(self, c, hw):
        self.conv(c, c, 1, hw, groups=c)

    def grn(self, c):
        self.params += 2 * c

    def se(self, c, hw):
        inner = max(16, c // 8)
        self.op("pool", self.B * c * hw, self.B * c)  # adaptive pool
        self.conv(c, inner, 1, 1)
        self.conv(inner, c, 1, 1)

    def dilated_reparam(self, c, k, hw):
        if self.deploy:
            macs = self.conv(c, c, k, hw, groups=c, bias=True)
        else:
            macs = self.conv(c, c, k, hw, groups=c, bias=False)
            self.bn(c, hw)
            for kb, _ in zip(*DILATED_BRANCHES[k]):
                self.conv(c, c, kb, hw, groups=c, bias=False)
                self.bn(c, hw)
        if k > 5:  # built as the opaque iGEMM kernel in the authors' setup
            self.hidden += macs

    def rep_block(self, c, k, ratio, has_ls, hw):
        m = int(c * ratio)
        self.res_dw(c, hw)
        self.ln(c, hw)
        self.dilated_reparam(c, k, hw)
        self.bn(c, hw)
        self.se(c, hw)
        self.conv(c, m, 1, hw)
        self.res_dw(m, hw)
        self.grn(m)
        self.conv(m, c, 1, hw)
        if has_ls:
            self.layer_scale(c, hw)
        # busiest point: input + residual copy + MLP hidden (activation and its dw-conv output)
        self.live(self.B * hw * (2 * c + 2 * m))

    def contmix_block(self, cfg: OverLoCKConfig, stage: int, c: int, size, is_first: bool,
                      carried: int):
        d = cfg.context_dim
        o = c + d
        m = int(c * cfg.focus_mlp_ratios[stage])
        g = 2 * cfg.focus_heads[stage]
        k, s, r = cfg.dynamic_kernels[stage], cfg.small_kernel, cfg.region_count
        h, w = size
        hw = h * w
        if not is_first:
            self.layer_scale(d, hw)
            self.layer_scale(d, hw)
        self.res_dw(o, hw)
        self.ln(o, hw)
        self.conv(o, o, 3, hw, groups=o)          # fusion
        self.bn(o, hw)
        self.conv(o, c, 1, hw)
        self.grn(c)
        self.conv(c, c, 1, hw, bias=False)        # gate
        self.bn(c, hw)
        self.dilated_reparam(c, cfg.reparam_kernels[stage + 2], hw)  # lepe
        self.bn(c, hw)
        # ContMix proper, at the working size (maps smaller than the kernel are resized up)
        wh, ww = ContMixBlock.working_size(h, w, k)
        whw = wh * ww
        resized = (wh, ww) != (h, w)
        if resized:
            self.op("resample", 4 * self.B * (c + o) * whw, self.B * (c + o) * whw)
        self.conv(c, c // 2, 1, whw, bias=False)  # weight_query
        self.bn(c // 2, whw)
        self.op("pool", self.B * d * whw, self.B * d * r * r)  # weight_key pool to R x R
        self.conv(d, c // 2, 1, r * r, bias=False)
        self.bn(c // 2, r * r)
        head_c = c // 2 // g
        self.op("matmul", self.B * g * whw * head_c * r * r, self.B * g * whw * r * r)  # query @ key
        self.conv(r * r, s * s + k * k, 1, g * whw)     # weight_proj
        self.params += g * ((2 * s - 1) ** 2 + (2 * k - 1) ** 2)  # relative position biases
        aggregation = self.op("aggregation", self.B * g * whw * (s * s + k * k) * head_c,
                              self.B * c * whw)
        self.hidden += aggregation
        if resized:
            self.op("pool", self.B * c * whw, self.B * c * hw)  # pool back
        self.conv(c, c, 1, hw, bias=False)        # dyconv_proj
        self.bn(c, hw)
        self.se(c, hw)
        self.bn(c, hw)                            # proj
        self.conv(c, o, 1, hw)
        self.layer_scale(o, hw)                   # ls1
        self.res_dw(o, hw)
        self.ln(o, hw)
        self.conv(o, m, 1, hw)
        self.res_dw(m, hw)
        self.grn(m)
        self.conv(m, o, 1, hw)
        self.layer_scale(o, hw)                   # ls2
        # busiest point: the dynamic weights (projected and with bias / softmax) next to the
        # block's identity, normalised input, fused features, gate and local branch
        attn = self.B * g * whw * (s * s + k * k)
        feats = self.B * (hw * (2 * o + 3 * c) + (whw * (c + o) if resized else 0))
        self.live(carried + feats + 2 * attn + self.B * g * whw * r * r)
        self.live(carried + self.B * hw * (2 * o + 2 * m))

    def mark(self, name: str, start: int):
        self.part[name] = self.macs - start
        return self.macs


def _down(n: int) -> int:
    """Output length of a 3x3 stride-2 conv with padding 1."""
    return (n - 1) // 2 + 1


def complexity(config: OverLoCKConfig, resolution=None, batch: int = 1,
               deploy: bool = False) -> Cost:
    """Params, multiply-adds (both conventions) and activation memory of `config`.

    Args:
        config: the architecture.
        resolution: input (H, W) or int; default `config.resolution`.
        batch: batch size of the counted forward pass.
        deploy: count the re-parameterised structure (dilated branches merged) instead of the train
            structure the paper's FLOPs refer to.
    """
    cfg = config
    if resolution is None:
        resolution = cfg.resolution
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    H, W = resolution
    t = _Tally(batch, deploy)
    B = batch
    w1, w2, w3, w4 = cfg.widths
    d = cfg.context_dim
    ls = (False, False, True, True)

    # stem: /2, /2
    h, w = _down(H), _down(W)
    t.conv_bn(cfg.in_chans, cfg.stem_width, 3, h * w)
    t.conv_bn(cfg.stem_width, cfg.stem_width, 3, h * w)
    t.live(B * (cfg.in_chans * H * W + 2 * cfg.stem_width * h * w))
    h, w = _down(h), _down(w)
    t.conv_bn(cfg.stem_width, w1, 3, h * w)
    t.conv_bn(w1, w1, 3, h * w)
    mark = t.mark("stem", 0)

    sizes = []
    for stage, (c, depth) in enumerate(zip(cfg.widths, (*cfg.base_depths, cfg.overview_depth))):
        if stage > 0:
            t.conv_bn(cfg.widths[stage - 1], c, 3, _down(h) * _down(w))
            h, w = _down(h), _down(w)
        sizes.append((h, w))
        for _ in range(depth):
            t.rep_block(c, cfg.reparam_kernels[stage], cfg.mlp_ratios[stage], ls[stage], h * w)
        mark = t.mark(("base1", "base2", "base3", "overview")[stage], mark)
    (h3, w3_), (h4, w4_) = sizes[2], sizes[3]
    hw3, hw4 = h3 * w3_, h4 * w4_

    # context prior: projected at 1/32, upsampled to the Focus stage-3 map
    t.conv(w4, d, 1, hw4)
    t.op("resample", 4 * B * d * hw3, B * d * hw3)
    carried3 = B * (w3 * hw3 + 2 * d * hw3)  # stage-3 features, prior_up, h
    for i in range(cfg.focus_depths[0]):
        t.contmix_block(cfg, 0, w3, (h3, w3_), is_first=(i == 0), carried=B * 2 * d * hw3)
    t.live(carried3)
    t.conv_bn(w3, w4, 3, hw4)  # CTXDownsample
    t.conv_bn(d, d, 3, hw4)
    mark = t.mark("focus3", mark)
    for i in range(cfg.focus_depths[1]):
        t.contmix_block(cfg, 1, w4, (h4, w4_), is_first=False, carried=B * d * hw4)
    mark = t.mark("focus4", mark)

    nc, p = cfg.num_classes, cfg.head_width
    t.conv(w4 + d, p, 1, hw4, bias=False)
    t.bn(p, hw4)
    t.op("pool", B * p * hw4, B * p)  # pool
    if nc > 0:
        t.conv(p, nc, 1, 1)
    t.mark("head", mark)
    params_no_aux = t.params
    if cfg.aux_head:
        t.params += 2 * w4 + (w4 * nc + nc if nc > 0 else 0)

    if deploy:
        params_inference = params_no_aux
    else:
        params_inference = complexity(cfg, resolution, batch, deploy=True).params_inference
    return Cost(params=t.params, params_inference=params_inference, flops=t.macs,
                flops_paper=t.macs - t.hidden, memory_mb=t.peak * BYTES_FP32 / 2 ** 20,
                resolution=(H, W), batch=batch, deploy=deploy, by_part=t.part,
                by_kind={k: {"macs": v[0], "elements": v[1], "calls": v[2]} for k, v in t.kind.items()})


def macs_label(resolution, batch: int = 1, convention: str = "fvcore") -> str:
    """The label every compute figure carries."""
    h, w = resolution if not isinstance(resolution, int) else (resolution, resolution)
    what = "fvcore; the paper's FLOPs" if convention == "fvcore" else "paper convention"
    return f"GMACs ({what}), {batch}x3x{h}x{w}"


