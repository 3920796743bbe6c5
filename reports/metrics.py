"""How each metric of `docs/storage.md` is shown: axis label, display scale, number format.

Every compute figure carries the same label (`space.macs_label`): GMACs counted by fvcore, which the
paper calls FLOPs, with the input size and batch.
"""

from __future__ import annotations

from dataclasses import dataclass

# metrics whose larger value is better (the evaluator's score metrics)
SCORE_METRICS = ("accuracy", "synflow", "naswot", "zico")
COST_METRICS = ("flops", "flops_paper", "params", "latency_ms", "memory_mb")


@dataclass(frozen=True)
class MetricView:
    name: str
    label: str     # axis / column label
    short: str     # compact column header
    scale: float   # displayed = stored * scale
    fmt: str       # python format spec of the displayed value
    unit: str = ""  # unit of the displayed value, for budgets and hover text

    def show(self, value) -> str:
        if value is None or value != value:  # None or NaN
            return ""
        return format(value * self.scale, self.fmt)


def macs_label(resolution, batch: int = 1, convention: str = "fvcore") -> str:
    """The compute label, worded as `space.macs_label` words it (a test holds the two equal;
    importing `space` here would import torch, seconds for a report that needs none of it)."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    what = "fvcore; the paper's FLOPs" if convention == "fvcore" else "paper convention"
    return f"GMACs ({what}), {batch}x3x{h}x{w}"


def metric_view(name: str, resolution=(224, 224), latency: dict | None = None) -> MetricView:
    """Display settings of metric `name`; `latency` holds batch/device/dtype for its label."""
    latency = latency or {}
    if name == "accuracy":
        return MetricView(name, "top-1 accuracy (%, proxy training)", "acc %", 100.0, ".2f", "%")
    if name == "flops":
        return MetricView(name, macs_label(resolution, 1, "fvcore"), "GMACs", 1e-9, ".3f", "GMACs")
    if name == "flops_paper":
        label = macs_label(resolution, 1, "paper") + " (large-kernel dw convs + aggregation uncounted)"
        return MetricView(name, label, "GMACs (paper)", 1e-9, ".3f", "GMACs")
    if name == "params":
        return MetricView(name, "params (M; deploy model, no aux head)", "params M", 1e-6, ".2f", "M")
    if name == "latency_ms":
        batch = latency.get("batch")
        if isinstance(batch, float) and batch.is_integer():
            batch = int(batch)
        bits = [f"batch {batch}" if batch is not None else None,
                latency.get("device"), latency.get("dtype")]
        extra = ", ".join(str(b) for b in bits if b)
        return MetricView(name, f"latency (ms, median{', ' + extra if extra else ''})", "latency ms",
                          1.0, ".2f", "ms")
    if name == "memory_mb":
        return MetricView(name, "peak activation memory (MiB, batch 1)", "memory MiB", 1.0, ".1f", "MiB")
    if name in ("synflow", "naswot", "zico"):
        return MetricView(name, f"{name} (zero-cost proxy score)", name, 1.0, ".4g")
    return MetricView(name, name, name, 1.0, ".4g")


def maximize_by_default(name: str) -> bool:
    return name in SCORE_METRICS
