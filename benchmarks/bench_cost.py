"""Analytic cost model vs fvcore (issue 3): same numbers, how much faster.

    python benchmarks/bench_cost.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import overlock  # noqa: E402
import space  # noqa: E402
from overlock.flops import count_macs  # noqa: E402

if __name__ == "__main__":
    print(f"{'preset':12s} {'analytic ms':>12s} {'fvcore s':>9s} {'speedup':>9s} {'equal':>6s}")
    for name in ("overlock_xt", "overlock_t"):
        cfg = overlock.PRESETS[name]
        times = []
        for _ in range(200):
            t = time.perf_counter()
            cost = space.complexity(cfg)
            times.append(time.perf_counter() - t)
        analytic = statistics.median(times)
        t = time.perf_counter()
        model = overlock.create_model(cfg)
        measured = count_macs(model, (224, 224))
        fv = time.perf_counter() - t
        t = time.perf_counter()
        count_macs(model, (224, 224))
        fv_trace_only = time.perf_counter() - t
        equal = (cost.flops, cost.flops_paper, cost.params) == (
            measured.total, measured.paper, sum(p.numel() for p in model.parameters()))
        print(f"{name:12s} {analytic * 1e3:12.3f} {fv_trace_only:9.2f} "
              f"{fv_trace_only / analytic:8.0f}x {str(equal):>6s}   "
              f"(fvcore incl. building the model: {fv:.2f} s, {fv / analytic:.0f}x)")
