"""Model benchmarks (issue 2): the aggregation op and OverLoCK-T inference on this machine.

    python benchmarks/bench_model.py            # all
    python benchmarks/bench_model.py --quick    # fewer repeats

1. `overlock::na2d_av` forward+backward vs a straightforward gather implementation (the k*k
   unfold that materialises every window), at Focus stage-3/4 shapes.
2. OverLoCK-T (train structure, eval) forward on CPU at batch 1 and 8: median wall time and peak
   resident memory growth of the forward pass (measured in a fresh subprocess per batch size).
3. fvcore's multiply-add count of the four presets at 1x3x224x224 (both conventions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gather_na2d_av(attn, value, k):
    """Baseline: unfold every k x k window (memory grows by k^2), then weight and sum."""
    B, G, H, W, C = value.shape
    rows = (torch.arange(H) - k // 2).clamp(0, H - k)[:, None] + torch.arange(k)
    cols = (torch.arange(W) - k // 2).clamp(0, W - k)[:, None] + torch.arange(k)
    windows = value[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # B,G,H,k,W,k,C
    windows = windows.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, G, H, W, k * k, C)
    return (attn.unsqueeze(-1) * windows).sum(-2)


def time_it(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_op(repeats):
    from overlock.ops import na2d_av

    print("== na2d_av forward+backward, CPU, fp32 (median of %d) ==" % repeats)
    print(f"{'shape (B,G,H,W,C) k':32s} {'ours ms':>9s} {'gather ms':>10s} {'speedup':>8s}")
    for (B, G, H, W, C, k) in [(8, 8, 14, 14, 16, 13), (8, 8, 14, 14, 16, 5), (8, 16, 7, 7, 16, 7),
                               (2, 8, 28, 28, 16, 13)]:
        a = torch.randn(B, G, H, W, k * k, requires_grad=True)
        v = torch.randn(B, G, H, W, C, requires_grad=True)

        def run(f):
            def step():
                out = f(a, v, k)
                out.sum().backward()
            return step

        ours = time_it(run(na2d_av), repeats) * 1e3
        base = time_it(run(gather_na2d_av), repeats) * 1e3
        print(f"{str((B, G, H, W, C)) + ' k=' + str(k):32s} {ours:9.2f} {base:10.2f} {base / ours:7.2f}x")


CHILD = r"""
import json, statistics, sys, time, resource, torch
sys.path.insert(0, sys.argv[3])
import overlock
torch.set_num_threads(int(sys.argv[4]))
batch, repeats = int(sys.argv[1]), int(sys.argv[2])
model = overlock.create_model("overlock_t").eval()
x = torch.randn(batch, 3, 224, 224)
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM'):
                return int(line.split()[1]) * 1024
with torch.inference_mode():
    model(x)
    base = rss()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times),
                  "peak_rss_mb": base / 2**20}))
"""

CHILD_MEM = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[2])
import overlock
from torch.profiler import profile, ProfilerActivity
batch = int(sys.argv[1])
model = overlock.create_model("overlock_t").eval()
x = torch.randn(batch, 3, 224, 224)
with torch.inference_mode():
    model(x)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
live = peak = 0
for e in sorted(prof.events(), key=lambda e: e.time_range.start):
    if not e.cpu_children:
        live += e.cpu_memory_usage
        peak = max(peak, live)
print(json.dumps({"peak_activation_mb": peak / 2**20}))
"""


def bench_forward(repeats, threads):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"\n== OverLoCK-T eval forward, CPU, fp32, 224x224, {threads} threads (fresh process) ==")
    for batch in (1, 8):
        out = subprocess.run([sys.executable, "-c", CHILD, str(batch), str(repeats), root, str(threads)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mem = subprocess.run([sys.executable, "-c", CHILD_MEM, str(batch), root],
                             capture_output=True, text=True, check=True)
        m = json.loads(mem.stdout.strip().splitlines()[-1])
        print(f"batch {batch}: median {r['median_s']:.3f} s (min {r['min_s']:.3f} s); "
              f"peak activation memory of the forward {m['peak_activation_mb']:.0f} MiB "
              f"(torch profiler, allocator); process peak RSS {r['peak_rss_mb']:.0f} MiB "
              f"(incl. weights and the Python runtime)")


def bench_flops():
    import overlock
    from overlock.flops import count_macs

    print("\n== fvcore multiply-adds at 1x3x224x224, eval, train build ==")
    print(f"{'preset':12s} {'GMACs fvcore (paper FLOPs)':>28s} {'GMACs paper convention':>24s}")
    for name in overlock.PRESETS:
        c = count_macs(overlock.create_model(name), (224, 224))
        print(f"{name:12s} {c.total / 1e9:28.3f} {c.paper / 1e9:24.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--skip-flops", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads}")
    bench_op(5 if args.quick else 20)
    bench_forward(5 if args.quick else 15, args.threads)
    if not args.skip_flops:
        bench_flops()
