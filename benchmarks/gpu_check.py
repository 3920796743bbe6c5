"""One command for a GPU: is the model right there, how fast is it, how fast does it train.

    python benchmarks/gpu_check.py             # full: under 8 min on one H100/H200 -> docs/gpu-check.{json,md}
    python benchmarks/gpu_check.py --quick     # fewer variants and rounds (~2-3 min)
    python benchmarks/gpu_check.py --dry-run   # the same code paths, tiny, on CPU (no GPU needed)

Parts (run cheapest first; each timed, and a part or item that would pass the time budget,
`--budget-s` (450 s), is skipped with a note instead of run):

(a) logits: OverLoCK-XT (train structure, eval mode, and its re-parameterised deploy model), the
    same weights and input on the CPU and on the GPU in fp32 with TF32 off; passes when
    max |GPU - CPU| <= LOGIT_RTOL x max |CPU logit|. The same difference with TF32 allowed is
    reported beside it (informational).
(b) latency of XT/T/S/B at batch 1 and 64, fp32 / fp16 / bf16, NCHW and channels_last, each
    measured `rounds` times with `nas.measure.measure_latency` (the one place latency is
    measured: warm-up, CUDA events, median, IQR, re-measure on high spread, cudnn.benchmark):
    the median of the rounds' medians, the spread between rounds, p90, images/s.
(c) one AMP training step of T (forward + backward + AdamW step, batch 64 at 224, the train
    evaluator's optimiser and loss, bf16 and fp16 with its grad scaler, NCHW and channels_last)
    after warm-up, and the train evaluator itself run end to end on the device with amp bf16 and
    fp16 + channels_last on a small procedural set (the real training loop, BN recalibration,
    validation under autocast, weights saved).
(d) the aggregation op `overlock::na2d_av` at the shapes T runs it with (batch 64 at 224, plus one
    larger map that takes the row-loop path): achieved memory bandwidth = the bytes the op must
    move (inputs read + outputs written, each once) / median time, forward and backward, against
    a device-to-device copy measured in the same run and the device's nominal peak when known.

Writes `<out>/gpu-check.json` and `<out>/gpu-check.md` (device, driver, torch, CUDA, cuDNN,
load average, the command). Exit status: 0 all checks passed, 1 a check failed (the files are
still written), 2 no CUDA device (nothing measured). Never edit its figures by hand: they are
what this script measured on the device named in the file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import overlock  # noqa: E402
from nas.measure import _cudnn_autotune as measure_cudnn_autotune  # noqa: E402
from nas.measure import device_string, measure_latency  # noqa: E402
from overlock import OverLoCK, OverLoCKConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOGIT_RTOL = 1e-3          # max |GPU - CPU| / max |CPU logit|, fp32, TF32 off
BUDGET_S = 450.0           # 7.5 min: the whole run stays under 8 on one GPU
RESERVE_S = 10.0           # kept back for writing the report
NO_CUDA_EXIT = 2

# Nominal DRAM bandwidth (bytes/s) by device name, used when torch does not report the memory
# clock and bus width. Lower-case substrings, most specific first.
PEAK_BANDWIDTH = [
    ("h200", 4.8e12), ("h100 nvl", 3.9e12), ("h100 pcie", 2.0e12), ("h100", 3.35e12),
    ("gh200", 4.0e12), ("a100-sxm4-80gb", 2.039e12), ("a100 80gb pcie", 1.935e12),
    ("a100-pcie-80gb", 1.935e12), ("a100", 1.555e12), ("l40s", 0.864e12), ("l40", 0.864e12),
    ("l4", 0.300e12), ("a10g", 0.600e12), ("a10", 0.600e12), ("t4", 0.320e12),
    ("v100", 0.900e12), ("rtx 4090", 1.008e12), ("rtx 3090", 0.936e12),
]

TINY = OverLoCKConfig(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1),
                      widths=(16, 32, 64, 64), stem_width=8, context_dim=16, head_width=64,
                      reparam_kernels=(5, 5, 5, 5), dynamic_kernels=(5, 5), small_kernel=3,
                      region_count=3, focus_heads=(1, 2), resolution=(32, 32), num_classes=10)

LAYOUTS_FULL = [("fp32", False), ("fp32", True), ("fp16", False), ("fp16", True),
                ("bf16", False), ("bf16", True)]
LAYOUTS_QUICK = [("fp32", False), ("fp16", True), ("bf16", True)]


# ------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """Sizes of one run: full (a real GPU), quick, or dry (tiny, any device)."""

    name: str
    models: dict                       # label -> OverLoCKConfig (latency grid)
    logit_config: OverLoCKConfig       # part (a)
    logit_batch: int
    batches: tuple                     # latency batch sizes
    layouts: list                      # (dtype, channels_last)
    rounds: int
    timing: dict                       # batch -> (warmup, repeats)
    train_config: OverLoCKConfig       # part (c)
    train_batch: int
    train_steps: tuple                 # (warm-up, timed)
    train_variants: list               # (amp dtype or "off", channels_last)
    evaluator_data: dict               # part (c): the evaluator run's data set
    op_batch: int                      # part (d): batch of the shapes taken from train_config
    op_extra: list = field(default_factory=list)   # more (label, B, G, H, W, k, C) shapes
    evaluator_amps: tuple = ("bf16", "fp16")
    op_repeats: int = 20
    copy_bytes: int = 1 << 29


def full_plan() -> Plan:
    p = overlock.PRESETS
    return Plan(
        name="full",
        models={"XT": p["overlock_xt"], "T": p["overlock_t"], "S": p["overlock_s"], "B": p["overlock_b"]},
        logit_config=p["overlock_xt"], logit_batch=2,
        batches=(1, 64), layouts=LAYOUTS_FULL, rounds=3,
        timing={1: (10, 50), 64: (5, 20)},
        train_config=p["overlock_t"], train_batch=64, train_steps=(3, 10),
        train_variants=[("bf16", False), ("bf16", True), ("fp16", False), ("fp16", True), ("off", True)],
        evaluator_data={"kind": "procedural", "train_size": 512, "val_size": 256, "num_classes": 10},
        op_batch=64, op_extra=[("T @448, stage 3 (row-loop path)", 16, 8, 28, 28, 5, 16)],
    )


def quick_plan() -> Plan:
    plan = full_plan()
    plan.name = "quick"
    plan.layouts = LAYOUTS_QUICK
    plan.rounds = 2
    plan.timing = {1: (10, 30), 64: (3, 10)}
    plan.train_steps = (2, 5)
    plan.train_variants = [("bf16", True), ("fp16", True)]
    plan.op_repeats = 10
    return plan


def dry_plan() -> Plan:
    """Tiny sizes: every code path of the full run, in seconds on a CPU."""
    return Plan(
        name="dry-run",
        models={"tiny": TINY}, logit_config=TINY, logit_batch=2,
        batches=(1, 2), layouts=[("fp32", False), ("bf16", True)], rounds=2,
        timing={1: (1, 2), 2: (1, 2)},
        train_config=TINY, train_batch=4, train_steps=(1, 2),
        # CPU fp16 kernels are a slow fallback (~20 s a tiny step here): fp16 and its grad scaler
        # run in the GPU plans only
        train_variants=[("bf16", True), ("off", False)], evaluator_amps=("bf16",),
        evaluator_data={"kind": "procedural", "train_size": 16, "val_size": 8, "num_classes": 4},
        op_batch=2, op_extra=[("tiny, row-loop path", 1, 1, 17, 17, 3, 4)],
        op_repeats=3, copy_bytes=1 << 22,
    )


# ----------------------------------------------------------------------------------- budget
class Budget:
    """Wall-clock budget for the whole run: parts and items are skipped, with a note, when their
    estimated time would pass it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - RESERVE_S - self.elapsed()

    def fits(self, label: str, estimate_s: float) -> bool:
        if estimate_s <= self.left():
            return True
        self.skipped.append(f"{label}: skipped, estimated {estimate_s:.0f} s but {max(self.left(), 0):.0f} s "
                            f"of the {self.seconds:.0f} s budget left")
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    """Milliseconds of each of `repeats` calls of fn() after `warmup` calls (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                 for _ in range(repeats)]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in pairs]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


@contextlib.contextmanager
def _tf32(allowed: bool):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = before


def _build(config: OverLoCKConfig, device, *, deploy: bool = False) -> torch.nn.Module:
    """The model with seed-0 weights (built on the CPU, as measure_latency builds a config), moved
    to `device`."""
    torch.manual_seed(0)
    return OverLoCK(config, deploy=deploy).eval().to(device)


# ------------------------------------------------------------------------------- (a) logits
def check_logits(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """CPU vs device logits, fp32, TF32 off (TF32 on reported beside it)."""
    config = plan.logit_config
    torch.manual_seed(0)
    cpu_model = OverLoCK(config).eval()
    deploy_cpu = copy.deepcopy(cpu_model)
    deploy_cpu.reparam()
    x = torch.randn(plan.logit_batch, config.in_chans, *config.resolution,
                    generator=torch.Generator().manual_seed(0))
    rows = []
    for label, model in (("train structure, eval", cpu_model), ("deploy (re-parameterised)", deploy_cpu)):
        with torch.inference_mode():
            ref = model(x).double()
        on_device = copy.deepcopy(model).to(device)
        diffs = {}
        for tf32 in (False, True):
            with _tf32(tf32), torch.inference_mode():
                out = on_device(x.to(device)).double().cpu()
            diffs[tf32] = out
        scale = float(ref.abs().max())
        err = float((diffs[False] - ref).abs().max())
        err_tf32 = float((diffs[True] - ref).abs().max())
        cosine = float(torch.nn.functional.cosine_similarity(diffs[False].flatten(), ref.flatten(), dim=0))
        finite = bool(torch.isfinite(diffs[False]).all())
        rows.append({
            "model": label, "max_abs_logit_cpu": scale, "max_abs_diff": err,
            "rel_diff": err / scale if scale else float("inf"), "rel_diff_tf32": err_tf32 / scale if scale else None,
            "cosine": cosine, "top1_agree": float((diffs[False].argmax(1) == ref.argmax(1)).double().mean()),
            "finite": finite, "ok": finite and err <= LOGIT_RTOL * scale,
        })
    return {"config": _config_label(config), "batch": plan.logit_batch,
            "resolution": list(config.resolution), "rtol": LOGIT_RTOL, "rows": rows,
            "ok": all(r["ok"] for r in rows)}


# ------------------------------------------------------------------------------ (b) latency
def measure_latencies(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """The latency grid, `rounds` calls of measure_latency per cell; batch 1 for every model
    first, then the large batch, so a tight budget drops the large batches of the big models."""
    rows = []
    built: dict[str, torch.nn.Module] = {}
    for batch in plan.batches:
        warmup, repeats = plan.timing[batch]
        for label, config in plan.models.items():
            if label not in built:
                if not budget.fits(f"latency {label}: build", 15.0):
                    continue
                built[label] = _build(config, device, deploy=True)
            model = built[label]
            forward_ms = None
            for dtype, channels_last in plan.layouts:
                cell = f"latency {label} batch {batch} {dtype} {'channels_last' if channels_last else 'NCHW'}"
                if forward_ms is None:   # probe once per (model, batch): one measured forward
                    probe = measure_latency(model, device=str(device), batch=batch, dtype="fp32",
                                            warmup=1, repeats=2)
                    forward_ms = probe["latency_ms"]
                # each round: warm-up + repeats forwards (+ a possible re-measure) and a model copy
                estimate = plan.rounds * ((warmup + repeats) * forward_ms * 1.5 / 1e3 + 0.5)
                if not budget.fits(cell, estimate):
                    continue
                results = [measure_latency(model, device=str(device), batch=batch, dtype=dtype,
                                           channels_last=channels_last, warmup=warmup, repeats=repeats)
                           for _ in range(plan.rounds)]
                rows.append(_latency_row(label, config, batch, dtype, channels_last, results))
    built.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"rows": rows, "rounds": plan.rounds,
            "timing": {str(b): {"warmup": w, "repeats": r} for b, (w, r) in plan.timing.items()},
            "ok": bool(rows)}


def _latency_row(label, config, batch, dtype, channels_last, results) -> dict:
    medians = [r["latency_ms"] for r in results]
    median = statistics.median(medians)
    return {
        "model": label, "config": _config_label(config), "batch": batch, "dtype": dtype,
        "channels_last": channels_last, "resolution": results[0]["latency_resolution"],
        "latency_ms": round(median, 4),
        "round_medians_ms": medians,
        "round_spread_pct": round(100 * (max(medians) - min(medians)) / median, 2) if median else None,
        "p90_ms": round(statistics.median(r["latency_p90_ms"] for r in results), 4),
        "iqr_ms": round(statistics.median(r["latency_spread_ms"] for r in results), 4),
        "remeasured": sum(r["latency_remeasured"] for r in results),
        "images_per_s": round(batch * 1e3 / median, 1) if median else None,
        "latency_device": results[0]["latency_device"],
    }


# ---------------------------------------------------------------------------- (c) training
def time_train_steps(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """One AMP training step of the train config after warm-up: forward + backward + AdamW."""
    from nas.evaluators.train import TrainEvaluator

    config = plan.train_config
    rows = []
    step_s = None
    for amp, channels_last in plan.train_variants:
        label = f"train step {_config_label(config)} amp {amp} {'channels_last' if channels_last else 'NCHW'}"
        warm, timed = plan.train_steps
        if step_s is not None and not budget.fits(label, (warm + timed) * step_s * 1.5 + 5):
            continue
        evaluator = TrainEvaluator({"amp": amp, "channels_last": channels_last})
        with measure_cudnn_autotune(device.type == "cuda"):   # as the evaluator trains on CUDA
            row = _train_step(evaluator, config, device, plan.train_batch, warm, timed, channels_last)
        row.update({"amp": amp, "channels_last": channels_last})
        rows.append(row)
        step_s = max(step_s or 0.0, row["step_ms"] / 1e3)
    return {"config": _config_label(config), "batch": plan.train_batch,
            "resolution": list(config.resolution), "rows": rows,
            "ok": bool(rows) and all(r["finite"] for r in rows)}


def _train_step(evaluator, config, device, batch, warm, timed, channels_last) -> dict:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = OverLoCK(config).to(device).to(memory_format=memory_format).train()
    optimizer = evaluator._optimizer(model)
    amp_dtype = evaluator._amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_chans, *config.resolution, generator=g).to(
        device, memory_format=memory_format)
    y = torch.randint(0, config.num_classes, (batch,), generator=g).to(device)
    losses = []

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = evaluator._loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        losses.append(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = _timed(step, device, repeats=timed, warmup=warm)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    median = statistics.median(times)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"step_ms": round(median, 3), "min_ms": round(min(times), 3),
            "spread_pct": round(100 * (max(times) - min(times)) / median, 2),
            "images_per_s": round(batch * 1e3 / median, 1), "peak_memory_mib": peak and round(peak, 1),
            "finite": bool(all(torch.isfinite(v).item() for v in losses)),
            "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "grad_scaler": scaler is not None, "steps_timed": timed}


def run_evaluator(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """The train evaluator end to end on the device: amp bf16 and fp16, channels_last."""
    from nas.evaluators.train import TrainEvaluator

    rows = []
    config = TINY
    for amp in plan.evaluator_amps:
        label = f"train evaluator amp {amp} channels_last"
        if not budget.fits(label, 30.0):
            continue
        settings = {"dataset": plan.evaluator_data, "epochs": 2, "rungs": [1], "batch_size": 8,
                    "eval_batch_size": 32, "bn_recalibration_batches": 1, "amp": amp,
                    "channels_last": True, "warmup_epochs": 0.5}
        with tempfile.TemporaryDirectory() as workdir:
            t0 = time.perf_counter()
            evaluator = TrainEvaluator(settings)
            first = evaluator.evaluate(config, budget_epochs=1, device=str(device), workdir=workdir,
                                       weights_name="rung1")
            second = evaluator.evaluate(config, budget_epochs=2, device=str(device), workdir=workdir,
                                        resume_from=first["weights"], weights_name="rung2")
            wall = time.perf_counter() - t0
        scores = second["history"]
        finite = all(v == v for v in scores) and all(v == v for v in second["train_loss"])
        rows.append({"amp": amp, "channels_last": True, "history": scores,
                     "train_loss": [round(v, 4) for v in second["train_loss"]],
                     "resumed_from_rung": first["epochs"], "wall_s": round(wall, 2), "ok": finite})
    return {"config": _config_label(config), "dataset": plan.evaluator_data, "rows": rows,
            "ok": bool(rows) and all(r["ok"] for r in rows)}


# --------------------------------------------------------------------------- (d) bandwidth
def op_shapes(config: OverLoCKConfig, device: torch.device, batch: int) -> list[tuple]:
    """The distinct (G, H, W, k, C) the aggregation op runs with in one forward of `config`,
    recorded at the dispatcher, with batch replaced by `batch`."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: dict[tuple, int] = {}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.overlock.na2d_av.default:
                _, g, h, w, c = args[1].shape
                key = (g, h, w, int(args[2]), c)
                seen[key] = seen.get(key, 0) + 1
            return func(*args, **(kwargs or {}))

    model = _build(config, device, deploy=True)
    x = torch.zeros(1, config.in_chans, *config.resolution, device=device)
    with Record(), torch.inference_mode():
        model(x)
    return [(batch, *key, n) for key, n in seen.items()]


def op_bandwidth(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """Achieved bandwidth of overlock::na2d_av, forward and backward, at T's shapes."""
    from overlock.ops import na2d_av

    rows = []
    shapes = [(f"{_config_label(plan.train_config)} G{g} {h}x{w} k{k} C{c} (x{n} per forward)",
               b, g, h, w, k, c) for b, g, h, w, k, c, n in op_shapes(plan.train_config, device, plan.op_batch)]
    shapes += plan.op_extra
    for label, b, g, h, w, k, c in shapes:
        for dtype in ("fp32", "bf16"):
            if not budget.fits(f"na2d_av {label} {dtype}", 10.0):
                continue
            rows.append(_op_row(label, na2d_av, device, b, g, h, w, k, c, dtype, plan.op_repeats))
    copy_gbps = _copy_bandwidth(device, plan.copy_bytes, plan.op_repeats)
    peak = peak_bandwidth(device)
    for r in rows:
        for d in ("forward", "backward"):
            if r.get(f"{d}_gbps") is not None:
                r[f"{d}_pct_of_copy"] = round(100 * r[f"{d}_gbps"] / copy_gbps, 1) if copy_gbps else None
                r[f"{d}_pct_of_peak"] = round(100 * r[f"{d}_gbps"] * 1e9 / peak, 1) if peak else None
    return {"rows": rows, "copy_gbps": copy_gbps, "peak_gbps": peak and round(peak / 1e9, 1),
            "peak_source": _peak_source(device), "bytes_rule":
            "forward: attn + value read, out written; backward: grad_out + attn + value read, "
            "grad_attn + grad_value written; each tensor once (the minimum traffic)",
            "ok": bool(rows)}


def _op_row(label, na2d_av, device, b, g, h, w, k, c, dtype, repeats) -> dict:
    from nas.measure import DTYPES

    dt = DTYPES[dtype]
    gen = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(b, g, h, w, k * k, generator=gen), -1).to(device, dt)
    value = torch.randn(b, g, h, w, c, generator=gen).to(device, dt)
    grad = torch.randn(b, g, h, w, c, generator=gen).to(device, dt)
    size = attn.element_size()
    fwd_bytes = (attn.numel() + 2 * value.numel()) * size
    bwd_bytes = (2 * attn.numel() + 3 * value.numel()) * size
    with torch.inference_mode():
        fwd = statistics.median(_timed(lambda: na2d_av(attn, value, k), device, repeats))
    bwd_op = torch.ops.overlock.na2d_av_backward
    bwd = statistics.median(_timed(lambda: bwd_op(grad, attn, value, k), device, repeats))
    return {"shape": label, "B": b, "G": g, "H": h, "W": w, "k": k, "C": c, "dtype": dtype,
            "forward_ms": round(fwd, 4), "backward_ms": round(bwd, 4),
            "forward_mb": round(fwd_bytes / 2 ** 20, 2), "backward_mb": round(bwd_bytes / 2 ** 20, 2),
            "forward_gbps": round(fwd_bytes / fwd / 1e6, 3), "backward_gbps": round(bwd_bytes / bwd / 1e6, 3)}


def _copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> float:
    """GB/s of a device-to-device copy (read + write) of `nbytes`: the practical ceiling."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = statistics.median(_timed(lambda: dst.copy_(src), device, repeats))
    return round(2 * nbytes / ms / 1e6, 3)


def peak_bandwidth(device: torch.device) -> float | None:
    """Nominal DRAM bandwidth in bytes/s: from the memory clock and bus width when torch reports
    them, else from the table of known devices, else None."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if clock_khz and bus_bits:
        peak = 2 * clock_khz * 1e3 * bus_bits / 8   # double data rate; CUDA reports the clock in kHz
        if 5e10 <= peak <= 2e13:                    # else a unit we do not know: use the table
            return peak
    name = props.name.lower()
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)


def _peak_source(device: torch.device) -> str:
    if device.type != "cuda":
        return "none (not a CUDA device)"
    props = torch.cuda.get_device_properties(device)
    peak = peak_bandwidth(device)
    if peak is None:
        return "unknown device: no peak"
    if peak not in {bw for _, bw in PEAK_BANDWIDTH} and getattr(props, "memory_clock_rate", None):
        return "2 x memory clock x bus width (torch device properties)"
    return "nominal figure for this device name"


# ----------------------------------------------------------------------------------- report
def environment(device: torch.device) -> dict:
    env = {
        "device": device_string(str(device)),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "host_cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "tf32_matmul_default": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn_default": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu_name": props.name, "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
                    "capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
                    "visible_gpus": torch.cuda.device_count(),
                    "bf16_supported": torch.cuda.is_bf16_supported()})
    return env


def _config_label(config: OverLoCKConfig) -> str:
    for name, preset in overlock.PRESETS.items():
        if preset == config:
            return name
    return f"tiny {config.config_hash()[:8]}" if config == TINY else config.config_hash()[:12]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check{' (DRY RUN: CPU, tiny sizes; not GPU figures)' if report['dry_run'] else ''}",
             "", f"Measured by `{report['command']}` on {report['started_utc']} "
             f"({report['plan']} plan, {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget).", "",
             f"- device: {env['device']}",
             f"- torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}",
             f"- load average at start: {', '.join(str(v) for v in env['load_average'])} "
             f"({env['host_cpus']} host CPUs)", ""]
    status = report["parts"]
    lines += ["| part | status | wall s | note |", "|---|---|---:|---|"]
    for name, p in status.items():
        lines.append(f"| {name} | {p['status']} | {p.get('wall_s', 0):.1f} | {p.get('note', '')} |")
    lines.append("")
    if "logits" in report:
        r = report["logits"]
        lines += [f"## (a) Logits, {r['config']} at {r['batch']}x3x{r['resolution'][0]}x{r['resolution'][1]}, "
                  f"fp32, TF32 off: pass when max |GPU - CPU| <= {r['rtol']:g} x max |CPU logit|", "",
                  "| model | max abs logit (CPU) | max abs diff | rel diff | rel diff, TF32 on | cosine | top-1 agree | pass |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for x in r["rows"]:
            lines.append(f"| {x['model']} | {x['max_abs_logit_cpu']:.4g} | {x['max_abs_diff']:.3g} | "
                         f"{x['rel_diff']:.3g} | {x['rel_diff_tf32']:.3g} | {x['cosine']:.7f} | "
                         f"{x['top1_agree']:.2f} | {'yes' if x['ok'] else 'NO'} |")
        lines.append("")
    if "latency" in report:
        r = report["latency"]
        timing = ", ".join(f"batch {b}: {t['warmup']} warm-up + {t['repeats']} timed"
                           for b, t in r["timing"].items())
        lines += [f"## (b) Latency of the deploy model (nas.measure.measure_latency; {r['rounds']} rounds, "
                  f"{timing}; median of the round medians)", "",
                  "| model | batch | dtype | memory format | median ms | spread between rounds % | "
                  "p90 ms | IQR ms | re-measured | images/s |",
                  "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for x in r["rows"]:
            lines.append(f"| {x['model']} | {x['batch']} | {x['dtype']} | "
                         f"{'channels_last' if x['channels_last'] else 'NCHW'} | {x['latency_ms']:.3f} | "
                         f"{x['round_spread_pct']} | {x['p90_ms']:.3f} | {x['iqr_ms']:.3f} | "
                         f"{x['remeasured']} | {x['images_per_s']} |")
        lines.append("")
    if "train_step" in report:
        r = report["train_step"]
        lines += [f"## (c) One training step of {r['config']}, batch {r['batch']} at "
                  f"{r['resolution'][0]}x{r['resolution'][1]} (forward + backward + AdamW, after warm-up)", "",
                  "| amp | memory format | grad scaler | median ms | min ms | spread % | images/s | peak MiB |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for x in r["rows"]:
            lines.append(f"| {x['amp']} | {'channels_last' if x['channels_last'] else 'NCHW'} | "
                         f"{'yes' if x['grad_scaler'] else 'no'} | {x['step_ms']:.2f} | {x['min_ms']:.2f} | "
                         f"{x['spread_pct']} | {x['images_per_s']} | {x['peak_memory_mib']} |")
        lines.append("")
    if "evaluator" in report:
        r = report["evaluator"]
        lines += [f"Train evaluator end to end ({r['config']}, procedural data, 1 epoch then resumed to 2):", "",
                  "| amp | channels_last | accuracy per epoch | train loss | wall s | ok |",
                  "|---|---|---|---|---:|---|"]
        for x in r["rows"]:
            lines.append(f"| {x['amp']} | yes | {', '.join(f'{v:.3f}' for v in x['history'])} | "
                         f"{', '.join(str(v) for v in x['train_loss'])} | {x['wall_s']} | "
                         f"{'yes' if x['ok'] else 'NO'} |")
        lines.append("")
    if "aggregation_op" in report:
        r = report["aggregation_op"]
        peak = f"{r['peak_gbps']} GB/s ({r['peak_source']})" if r["peak_gbps"] else f"unknown ({r['peak_source']})"
        lines += ["## (d) Aggregation op `overlock::na2d_av`: achieved memory bandwidth", "",
                  f"Bytes: {r['bytes_rule']}. Device copy: {r['copy_gbps']} GB/s; nominal peak: {peak}.", "",
                  "| shape | B | dtype | fwd ms | fwd GB/s | % of copy | % of peak | bwd ms | bwd GB/s | "
                  "% of copy | % of peak |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for x in r["rows"]:
            lines.append(f"| {x['shape']} | {x['B']} | {x['dtype']} | {x['forward_ms']:.4f} | "
                         f"{x['forward_gbps']} | {x.get('forward_pct_of_copy')} | {x.get('forward_pct_of_peak')} | "
                         f"{x['backward_ms']:.4f} | {x['backward_gbps']} | {x.get('backward_pct_of_copy')} | "
                         f"{x.get('backward_pct_of_peak')} |")
        lines.append("")
    if report["skipped"]:
        lines += ["## Skipped (time budget)", ""] + [f"- {s}" for s in report["skipped"]] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main
PARTS = {   # run order: cheap first, the latency grid (the long one) last
    "logits": ("(a) CPU vs GPU logits", check_logits),
    "aggregation_op": ("(d) na2d_av bandwidth", op_bandwidth),
    "train_step": ("(c) AMP training step", time_train_steps),
    "evaluator": ("(c) train evaluator, AMP + channels_last", run_evaluator),
    "latency": ("(b) latency grid", measure_latencies),
}
MIN_PART_S = {"logits": 20, "aggregation_op": 10, "train_step": 20, "evaluator": 20, "latency": 20}


def _drop_bf16(plan: Plan, budget: Budget) -> None:
    """A GPU without bf16 (before Ampere): its variants are skipped, with a note."""
    plan.layouts = [(d, c) for d, c in plan.layouts if d != "bf16"]
    plan.train_variants = [(a, c) for a, c in plan.train_variants if a != "bf16"]
    plan.evaluator_amps = tuple(a for a in plan.evaluator_amps if a != "bf16")
    budget.skipped.append("every bf16 variant: skipped, this GPU does not support bf16")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer variants and rounds (~2-3 min)")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes (on CPU unless --device is given): checks the script, not the GPU")
    ap.add_argument("--device", default=None,
                    help="cuda (default), cuda:N, or cpu (implies --dry-run)")
    ap.add_argument("--out", default=None,
                    help="output folder (default docs/; runs/gpu-check-dry-run/ for a dry run)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock budget (default 450)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated subset of {','.join(PARTS)}")
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.dry_run else "cuda"
    if torch.device(args.device).type == "cpu":
        args.dry_run = True
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    return args


def main(argv=None) -> int:
    threads = torch.get_num_threads()
    try:
        return _run(parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads)


def _run(args, argv) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build: "
              f"{torch.version.cuda or 'none'}) sees no GPU. Install a CUDA build of torch "
              "(docs/gpu.md), or check this script on CPU with --dry-run.", file=sys.stderr)
        return NO_CUDA_EXIT
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    plan = dry_plan() if args.dry_run else quick_plan() if args.quick else full_plan()
    if device.type == "cpu":
        torch.set_num_threads(1)   # a dry run checks code paths; one thread stays fast on a busy host
    budget = Budget(args.budget_s)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        _drop_bf16(plan, budget)
    out = Path(args.out or (REPO / "runs" / "gpu-check-dry-run" if args.dry_run else REPO / "docs"))
    report = {
        "kind": "overlock-nas gpu check", "version": 1, "dry_run": args.dry_run, "plan": plan.name,
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "budget_s": args.budget_s, "environment": environment(device), "parts": {},
    }
    wanted = args.parts.split(",")
    failed = False
    for key, (title, fn) in PARTS.items():
        if key not in wanted:
            continue
        if not budget.fits(title, MIN_PART_S[key] if not args.dry_run else 0):
            report["parts"][title] = {"status": "skipped", "note": "time budget"}
            continue
        t0 = time.perf_counter()
        print(f"gpu_check: {title} ...", flush=True)
        try:
            result = fn(plan, device, budget)
            status = "ok" if result.get("ok") else "FAILED"
            report[key] = result
            note = ""
        except Exception as e:   # noqa: BLE001 - a broken part is reported, the others still run
            status, note = "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            traceback.print_exc()
        failed |= status != "ok"
        wall = time.perf_counter() - t0
        report["parts"][title] = {"status": status, "wall_s": round(wall, 1), "note": note}
        print(f"gpu_check: {title}: {status} in {wall:.1f} s{' - ' + note if note else ''}", flush=True)
    report["skipped"] = budget.skipped
    report["wall_s"] = round(budget.elapsed(), 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu-check.md").write_text(markdown(report))
    print(f"gpu_check: {'FAILED' if failed else 'all checks passed'} in {report['wall_s']:.0f} s "
          f"({len(budget.skipped)} item(s) skipped); wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
