"""Neighbourhood aggregation with token-wise dynamic kernels: `overlock::na2d_av`.

`na2d_av(attn, value, kernel_size)` has NATTEN's `na2d_av` semantics (no dilation, no causal mask):
for the query at (i, j) the k x k window starts at

    start_i = clamp(i - k // 2, 0, H - k),   start_j = clamp(j - k // 2, 0, W - k)

so it is *shifted* to stay inside the map at the borders, never zero-padded, and

    out[b, g, i, j, :] = sum_{a, c} attn[b, g, i, j, a * k + c] * value[b, g, start_i + a, start_j + c, :]

It is pure PyTorch (no NATTEN install), registered as one custom op so fvcore, `torch.compile` and
`torch.export` see a single node, with an explicit backward. Small maps use one batched matmul with
the weights scattered into a dense HW x HW matrix (no bigger than max(8 k^2, 256) x HW per head);
larger maps loop over the window's rows, so memory grows by k, never by k^2 x C x H x W.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["na2d_av", "na2d_av_reference", "window_start", "na2d_av_macs", "fvcore_na2d_av_handle"]


def window_start(length: int, kernel_size: int, device=None) -> Tensor:
    """First index of each position's shifted window (NATTEN border semantics)."""
    return (torch.arange(length, device=device) - kernel_size // 2).clamp(0, length - kernel_size)


# Index tensors are rebuilt on every call (a few tiny ops): a cached tensor would leak fake
# tensors out of torch.export tracing and inference tensors out of inference_mode.
def _window_index(length: int, kernel_size: int, device=None) -> Tensor:
    """(length, k): the positions of each query's shifted window along one axis."""
    start = window_start(length, kernel_size, device)
    return start[:, None] + torch.arange(kernel_size, device=device)[None, :]


def _check(attn: Tensor, value: Tensor, kernel_size: int) -> None:
    if attn.dim() != 5 or value.dim() != 5:
        raise ValueError(f"na2d_av expects 5-D attn (B,G,H,W,k*k) and value (B,G,H,W,C); got "
                         f"{tuple(attn.shape)} and {tuple(value.shape)}")
    B, G, H, W, _ = value.shape
    if tuple(attn.shape) != (B, G, H, W, kernel_size * kernel_size):
        raise ValueError(f"na2d_av: attn shape {tuple(attn.shape)} does not match value "
                         f"{tuple(value.shape)} and kernel_size={kernel_size}")
    if H < kernel_size or W < kernel_size:
        raise ValueError(f"na2d_av: feature map {H}x{W} is smaller than kernel_size={kernel_size}")


def _use_dense(H: int, W: int, kernel_size: int) -> bool:
    """Small maps (Focus stages at common resolutions): scatter the weights into a dense
    (HW x HW) matrix and use one batched matmul; its size is at most max(8 k^2, 256) x HW per
    head, comparable to `attn` itself. Larger maps: loop over the window's k rows."""
    return H * W <= max(8 * kernel_size * kernel_size, 256)


def _dense_index(H: int, W: int, kernel_size: int, device) -> Tensor:
    """(H*W, k*k): flat positions of each query's window, row-major."""
    rows = _window_index(H, kernel_size, device)  # (H, k)
    cols = _window_index(W, kernel_size, device)  # (W, k)
    flat = rows[:, None, :, None] * W + cols[None, :, None, :]  # (H, W, k, k)
    return flat.reshape(H * W, kernel_size * kernel_size)


def _dense_weights(attn: Tensor, H: int, W: int, k: int) -> tuple[Tensor, Tensor]:
    B, G = attn.shape[:2]
    index = _dense_index(H, W, k, attn.device).expand(B, G, H * W, k * k)
    dense = attn.new_zeros(B, G, H * W, H * W)
    dense.scatter_(-1, index, attn.reshape(B, G, H * W, k * k))
    return dense, index


def _forward_impl(attn: Tensor, value: Tensor, kernel_size: int) -> Tensor:
    B, G, H, W, C = value.shape
    if _use_dense(H, W, kernel_size):
        dense, _ = _dense_weights(attn, H, W, kernel_size)
        return torch.matmul(dense, value.reshape(B, G, H * W, C)).reshape(B, G, H, W, C)
    k = kernel_size
    rows = _window_index(H, k, value.device)
    cols = _window_index(W, k, value.device)
    weights = attn.reshape(B, G, H, W, k, k)
    # value gathered along the window's columns once: (B, G, H, W, k, C), k times the value.
    value_cols = value[:, :, :, cols]
    out = None
    for a in range(k):
        window_row = value_cols.index_select(2, rows[:, a])  # row a of every window
        term = torch.matmul(weights[:, :, :, :, a].unsqueeze(-2), window_row).squeeze(-2)
        out = term if out is None else out.add_(term)
    return out


def _backward_impl(grad_out: Tensor, attn: Tensor, value: Tensor, kernel_size: int):
    B, G, H, W, C = value.shape
    if _use_dense(H, W, kernel_size):
        dense, index = _dense_weights(attn, H, W, kernel_size)
        g = grad_out.reshape(B, G, H * W, C)
        v = value.reshape(B, G, H * W, C)
        grad_attn = torch.matmul(g, v.transpose(-1, -2)).gather(-1, index)
        grad_value = torch.matmul(dense.transpose(-1, -2), g)
        return grad_attn.reshape(attn.shape), grad_value.reshape(value.shape)
    k = kernel_size
    rows = _window_index(H, k, value.device)
    cols = _window_index(W, k, value.device)
    weights = attn.reshape(B, G, H, W, k, k)
    value_cols = value[:, :, :, cols]
    grad_attn = torch.empty((B, G, H, W, k, k), dtype=attn.dtype, device=attn.device)
    grad_value_cols = torch.zeros_like(value_cols)
    g = grad_out.unsqueeze(-1)  # (B, G, H, W, C, 1)
    for a in range(k):
        window_row = value_cols.index_select(2, rows[:, a])
        grad_attn[:, :, :, :, a] = torch.matmul(window_row, g).squeeze(-1)
        grad_value_cols.index_add_(2, rows[:, a],
                                   weights[:, :, :, :, a].unsqueeze(-1) * grad_out.unsqueeze(-2))
    grad_value = torch.zeros_like(value)
    grad_value.index_add_(3, cols.reshape(-1), grad_value_cols.reshape(B, G, H, W * k, C))
    return grad_attn.reshape(attn.shape), grad_value


@torch.library.custom_op("overlock::na2d_av", mutates_args=())
def _na2d_av_op(attn: Tensor, value: Tensor, kernel_size: int) -> Tensor:
    return _forward_impl(attn, value, kernel_size)


@_na2d_av_op.register_fake
def _(attn: Tensor, value: Tensor, kernel_size: int) -> Tensor:
    return value.new_empty(value.shape)


def _setup_context(ctx, inputs, output):
    attn, value, kernel_size = inputs
    ctx.save_for_backward(attn, value)
    ctx.kernel_size = kernel_size


def _backward(ctx, grad_out):
    attn, value = ctx.saved_tensors
    grad_attn, grad_value = _backward_op(grad_out.contiguous(), attn, value, ctx.kernel_size)
    return grad_attn, grad_value, None


@torch.library.custom_op("overlock::na2d_av_backward", mutates_args=())
def _backward_op(grad_out: Tensor, attn: Tensor, value: Tensor,
                 kernel_size: int) -> tuple[Tensor, Tensor]:
    return _backward_impl(grad_out, attn, value, kernel_size)


@_backward_op.register_fake
def _(grad_out: Tensor, attn: Tensor, value: Tensor, kernel_size: int):
    return attn.new_empty(attn.shape), value.new_empty(value.shape)


_na2d_av_op.register_autograd(_backward, setup_context=_setup_context)
# Under autocast the weights (softmax output) and the values can arrive in different dtypes;
# the aggregation runs in fp32 like NATTEN's reference path.
for _device in ("cpu", "cuda"):
    torch.library.register_autocast("overlock::na2d_av", _device, torch.float32)


def na2d_av(attn: Tensor, value: Tensor, kernel_size: int) -> Tensor:
    """Aggregate `value` over each position's shifted k x k window with weights `attn`.

    Args:
        attn: (B, G, H, W, k*k) weights, row-major over the window.
        value: (B, G, H, W, C).
        kernel_size: odd or even k <= min(H, W).

    Returns:
        (B, G, H, W, C).

    Raises:
        ValueError: on mismatched shapes or a map smaller than the kernel.
    """
    _check(attn, value, kernel_size)
    return _na2d_av_op(attn.contiguous(), value.contiguous(), int(kernel_size))


def na2d_av_decomposed(attn: Tensor, value: Tensor, kernel_size: int) -> Tensor:
    """The same computation in plain aten ops (for exporters that cannot keep a custom op)."""
    return _forward_impl(attn, value, kernel_size)


def na2d_av_reference(attn: Tensor, value: Tensor, kernel_size: int) -> Tensor:
    """Slow literal per-pixel definition, for tests."""
    B, G, H, W, C = value.shape
    k = kernel_size
    out = value.new_zeros(B, G, H, W, C)
    for i in range(H):
        si = min(max(i - k // 2, 0), H - k)
        for j in range(W):
            sj = min(max(j - k // 2, 0), W - k)
            window = value[:, :, si:si + k, sj:sj + k, :].reshape(B, G, k * k, C)
            out[:, :, i, j] = (attn[:, :, i, j, :, None] * window).sum(2)
    return out


def na2d_av_macs(attn_shape, value_shape) -> int:
    """Multiply-adds of one call: B * G * H * W * k*k * C."""
    B, G, H, W, kk = attn_shape
    return int(B * G * H * W * kk * value_shape[-1])


def fvcore_na2d_av_handle(inputs, outputs) -> int:
    """fvcore op handle for `overlock::na2d_av` (registered once in `overlock.flops`)."""
    from fvcore.nn.jit_handles import get_shape

    return na2d_av_macs(get_shape(inputs[0]), get_shape(inputs[1]))
