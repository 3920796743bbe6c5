"""Non-dominated sorting and exact hypervolume (2-D and 3-D), minimisation form.

Callers turn maximised objectives into minimised ones (negate) before calling.
"""

from __future__ import annotations

import numpy as np

from nas.storage import pareto_mask  # noqa: F401  (the one non-dominated sort, re-exported)


def _hv2d(points: np.ndarray, ref: np.ndarray) -> float:
    p = points[np.all(points < ref, axis=1)]
    if not len(p):
        return 0.0
    p = p[np.lexsort((p[:, 1], p[:, 0]))]  # by x, then y
    best = np.minimum.accumulate(p[:, 1])
    previous = np.concatenate([[ref[1]], best[:-1]])
    return float(np.sum((ref[0] - p[:, 0]) * np.maximum(previous - p[:, 1], 0.0)))


def _hv3d(points: np.ndarray, ref: np.ndarray) -> float:
    p = points[np.all(points < ref, axis=1)]
    if not len(p):
        return 0.0
    p = p[np.argsort(p[:, 2])]
    volume = 0.0
    for i in range(len(p)):
        z_next = p[i + 1, 2] if i + 1 < len(p) else ref[2]
        if z_next > p[i, 2]:
            volume += _hv2d(p[: i + 1, :2], ref[:2]) * (z_next - p[i, 2])
    return float(volume)


def hypervolume(points, ref) -> float:
    """Exact hypervolume dominated by `points` (n, k) and bounded by `ref`, for k = 1, 2, 3."""
    p = np.asarray(points, dtype=float).reshape(-1, len(ref))
    ref = np.asarray(ref, dtype=float)
    if p.shape[1] == 1:
        return float(max(0.0, ref[0] - p[:, 0].min())) if len(p) else 0.0
    if p.shape[1] == 2:
        return _hv2d(p, ref)
    if p.shape[1] == 3:
        return _hv3d(p, ref)
    raise ValueError(f"exact hypervolume is implemented for 1-3 objectives, got {p.shape[1]}")


def hypervolume_history(points, ref) -> np.ndarray:
    """Hypervolume after each row of `points` (in order), keeping only the running front."""
    p = np.asarray(points, dtype=float)
    out = np.zeros(len(p))
    front = np.empty((0, p.shape[1])) if p.ndim == 2 else np.empty((0, 1))
    hv = 0.0
    for i, q in enumerate(p):
        dominated = len(front) and np.any(np.all(front <= q, axis=1))
        if not dominated:
            keep = ~np.all(q <= front, axis=1) if len(front) else np.zeros(0, dtype=bool)
            front = np.vstack([front[keep], q])
            hv = hypervolume(front, ref)
        out[i] = hv
    return out
