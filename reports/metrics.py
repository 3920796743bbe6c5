"""How each metric of `docs/reference/storage.md` is shown: axis label, display scale, number format.

Names, directions, units and base labels come from the stored-study contract (`nas.storage`); this
module adds the study's context. Every compute figure carries the same label (`macs_label`): GMACs
counted by fvcore, which the paper calls FLOPs, with the input size and batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.storage import METRICS, SCORE_METRICS, dataset_text, macs_label

__all__ = ["MetricView", "metric_view", "macs_label", "maximize_by_default", "SCORE_METRICS"]


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


def metric_view(name: str, resolution=(224, 224), latency: dict | None = None,
                dataset=None, accuracy_from: str = "proxy training") -> MetricView:
    """Display settings of metric `name` (`nas.storage.METRICS`) with the study's context in its
    label: input size for compute, batch/device/dtype for latency (`latency`), the data set an
    accuracy was measured on (`dataset`, a description or settings dict) and how (`accuracy_from`:
    proxy training, or weights inherited from a supernet)."""
    metric = METRICS.get(name)
    if metric is None:
        return MetricView(name, name, name, 1.0, ".4g")
    label = metric.label
    if name == "accuracy" and dataset_text(dataset):
        label = f"top-1 accuracy (%, {accuracy_from} on {dataset_text(dataset)})"
    elif name == "flops":
        label = macs_label(resolution, 1, "fvcore")
    elif name == "flops_paper":
        label = macs_label(resolution, 1, "paper") + " (large-kernel dw convs + aggregation uncounted)"
    elif name == "latency_ms":
        latency = latency or {}
        batch = latency.get("batch")
        if isinstance(batch, float) and batch.is_integer():
            batch = int(batch)
        bits = [f"batch {batch}" if batch is not None else None, latency.get("device"), latency.get("dtype")]
        extra = ", ".join(str(b) for b in bits if b)
        label = f"latency (ms, median of round minima{', ' + extra if extra else ''})"
    return MetricView(name, label, metric.short, metric.scale, metric.fmt, metric.unit)


def maximize_by_default(name: str) -> bool:
    return name in SCORE_METRICS
