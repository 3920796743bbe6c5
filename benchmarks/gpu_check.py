"""One command for a GPU: is the model right there, how fast is it, how fast does it train.

    python benchmarks/gpu_check.py             # full -> benchmarks/results/gpu-check.{json,md}
    python benchmarks/gpu_check.py --quick     # fewer variants and rounds
    python benchmarks/gpu_check.py --dry-run   # tiny, on the CPU: checks the script, not a GPU

No GPU has run this script yet: its run times ("under 8 min" full, "~2-3 min" quick, on one
H100/H200) are guesses until one measures them; the time budget `--budget-s` (450 s) bounds the
run whatever they turn out to be (a part or an item that would pass it is skipped, with a note).

Every part states a condition that can fail and reports the measured value beside it:

(a) logits: OverLoCK-XT (train structure in eval mode, and its re-parameterised deploy model) on
    the device against the fp32 CPU logits of the same weights and input, in fp32 with TF32 off,
    fp32 with TF32 on, fp16 and bf16 (model and input converted, as latency is measured):
    passes when max |device - CPU| <= LOGIT_RTOL[variant] x max |CPU logit| and every logit is
    finite.
(b) latency of XT/T/S/B at batch 1 and 64, fp32 / fp16 / bf16, NCHW and channels_last, each
    measured `rounds` times by `nas.measure.measure_latency` (the study's own measurement; each
    result is the median of its round minima): the cell's latency is the median of those
    measurements, and passes when they agree within ROUND_SPREAD (max - min <= that x median).
(c) one AMP training step of T (forward + backward + AdamW, batch 64 at 224, the train evaluator's
    optimiser and loss; bf16, and fp16 with its GradScaler; NCHW and channels_last): passes when
    every loss is finite and the GradScaler skipped none of the timed steps. A GradScaler check:
    one ordinary step must be taken, one with a forced overflow (loss x inf) must be skipped and
    recorded (scale backed off, parameters untouched). Then the train evaluator itself end to end
    (amp bf16 and fp16, channels_last): finite losses and scores, resumed from its first rung.
(d) the aggregation op `overlock::na2d_av` at the shapes T runs it with (batch 64 at 224, plus one
    larger map that takes the row-loop path): achieved bandwidth (the bytes the op must move /
    median time) as a fraction of the device's nominal peak (else of a device copy measured in
    the same run); passes when the forward reaches OP_MIN_FRACTION of it.

Each part runs in its own process, so a CUDA fault (out of memory, an illegal address) fails that
part, reported with its last error line, and the later parts still run. `nvidia-smi` is asked once,
by this process. Writes `<out>/gpu-check.json` and `<out>/gpu-check.md` (device, driver, torch, CUDA,
cuDNN, load average, the command). A part or an item not run (the time budget) is not a pass: the
summary line and the report list what was not run, and the exit status says the check is incomplete.
Never edit its figures by hand: they are what this script measured on the device named in the file.
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
import signal
import statistics
import subprocess
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
# max |device - CPU fp32| / max |CPU fp32 logit|, by variant, set before any GPU ran: fp32 with TF32
# off differs from the CPU by summation order only; TF32 keeps 10 mantissa bits in matmuls and
# convs, fp16 10 and bf16 7 everywhere. A first GPU run that fails one is a finding, not a threshold
# to loosen.
LOGIT_RTOL = {"fp32": 1e-3, "tf32": 1e-2, "fp16": 1e-2, "bf16": 5e-2}
ROUND_SPREAD = 0.10        # repeated latency measurements agree within 10 % of their median (GPU)
OP_MIN_FRACTION = 0.05     # na2d_av forward reaches >= 5 % of peak bandwidth: a floor, not a target
BUDGET_S = 450.0           # 7.5 min: the whole run stays under 8 on one GPU
RESERVE_S = 10.0           # kept back for writing the report
CHILD_GRACE_S = 60.0       # a part's process may overrun its budget by this before it is killed
PASS_EXIT, FAIL_EXIT, NO_CUDA_EXIT, INCOMPLETE_EXIT = 0, 1, 2, 3
EXIT_CODES = f"""exit status:
  {PASS_EXIT}  every part ran and every check passed
  {FAIL_EXIT}  a check failed (the report is still written; parts not run are listed too)
  {NO_CUDA_EXIT}  no such CUDA device (one line, nothing measured), or a usage error
  {INCOMPLETE_EXIT}  incomplete: no check failed, but a part or an item was not run (the time
     budget); the summary line and the report's "Not run" section list them"""
DRIVER_ENV = "GPU_CHECK_DRIVER"          # the driver version, asked once, handed to each part
FAULT_ENV = "GPU_CHECK_INJECT_FAULT"     # tests only: "<part>" aborts that part's process

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
# (label, dtype, channels_last, tf32): the device's logits against the CPU's fp32 NCHW logits
LOGITS_GPU = [("fp32, TF32 off", "fp32", False, False), ("fp32, TF32 on", "fp32", False, True),
              ("fp16, channels_last", "fp16", True, False), ("bf16, channels_last", "bf16", True, False)]
# on the CPU the reference is the same device: only other kernels (layout, precision) are compared
LOGITS_CPU = [("fp32, channels_last (CPU vs CPU NCHW)", "fp32", True, False),
              ("fp16 (CPU kernels)", "fp16", False, False), ("bf16 (CPU kernels)", "bf16", False, False)]

# What a dry run on the CPU does not reach (reported in its files, and in docs/how-to/gpu.md).
NOT_REACHED_ON_CPU = [
    "the device against the CPU: (a) compares CPU kernels with each other (layout, fp16, bf16), "
    "never a GPU's logits",
    "TF32: the fp32_precision settings are set and restored, but no cuBLAS/cuDNN kernel runs",
    "CUDA events, cudnn.benchmark autotuning and CUDA peak-memory statistics",
    "an fp16 training step under autocast with real fp16 gradients (the GradScaler runs on fp32 "
    "gradients: one step taken, one forced overflow skipped); the train evaluator with amp fp16",
    "the device's nominal peak bandwidth ((d) is judged against a memory copy on the CPU)",
    "a real CUDA fault (out of memory, illegal address): the per-part processes are exercised, "
    "a fault is not",
    "nvidia-smi (the driver version) and the choice of one GPU among several (--device cuda:N)",
]


# ------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """Sizes of one run: full (a real GPU), quick, or dry (tiny, any device)."""

    name: str
    models: dict                       # label -> OverLoCKConfig (latency grid)
    logit_config: OverLoCKConfig       # part (a)
    logit_batch: int
    logit_variants: list               # (label, dtype, channels_last, tf32)
    batches: tuple                     # latency batch sizes
    layouts: list                      # (dtype, channels_last)
    rounds: int                        # measure_latency calls per cell
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
    round_spread: float = ROUND_SPREAD
    op_min_fraction: float = OP_MIN_FRACTION


def full_plan() -> Plan:
    p = overlock.PRESETS
    return Plan(
        name="full",
        models={"XT": p["overlock_xt"], "T": p["overlock_t"], "S": p["overlock_s"], "B": p["overlock_b"]},
        logit_config=p["overlock_xt"], logit_batch=2, logit_variants=LOGITS_GPU,
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
    """Tiny sizes on the CPU, in seconds: what the CPU can run of each part (NOT_REACHED_ON_CPU
    lists the rest). Its conditions are looser where a busy CPU, not the code, decides."""
    return Plan(
        name="dry-run",
        models={"tiny": TINY}, logit_config=TINY, logit_batch=2, logit_variants=LOGITS_CPU,
        batches=(1, 2), layouts=[("fp32", False), ("bf16", True), ("fp16", False)], rounds=2,
        timing={1: (1, 2), 2: (1, 2)},
        train_config=TINY, train_batch=4, train_steps=(1, 2),
        # CPU fp16 training kernels are a slow fallback (~20 s a tiny step here): the fp16 step
        # and the evaluator with amp fp16 run in the GPU plans only
        train_variants=[("bf16", True), ("off", False)], evaluator_amps=("bf16",),
        evaluator_data={"kind": "procedural", "train_size": 16, "val_size": 8, "num_classes": 4},
        op_batch=2, op_extra=[("tiny, row-loop path", 1, 1, 17, 17, 3, 4)],
        op_repeats=3, copy_bytes=1 << 22,
        round_spread=1.0,          # a shared CPU under load: only a 2x disagreement fails
        op_min_fraction=0.001,     # the pure-PyTorch op on one CPU thread, against a memcpy
    )


def plan_for(args) -> Plan:
    return dry_plan() if args.dry_run else quick_plan() if args.quick else full_plan()


# ----------------------------------------------------------------------------------- budget
class Budget:
    """Wall-clock budget: parts and items are skipped, with a note, when their estimated time
    would pass it."""

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
def tf32(allowed: bool):
    """TF32 in cuBLAS matmuls and cuDNN convs on or off (torch's fp32_precision API), and
    cudnn.benchmark off, restored afterwards."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision, torch.backends.cudnn.benchmark)
    matmul.fp32_precision = conv.fp32_precision = "tf32" if allowed else "ieee"
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision, torch.backends.cudnn.benchmark = before


def _build(config: OverLoCKConfig, device, *, deploy: bool = False) -> torch.nn.Module:
    """The model with seed-0 weights (built on the CPU, as measure_latency builds a config), moved
    to `device`."""
    torch.manual_seed(0)
    return OverLoCK(config, deploy=deploy).eval().to(device)


# ------------------------------------------------------------------------------- (a) logits
def check_logits(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """Each variant's logits on the device against the fp32 CPU logits, per-variant tolerance."""
    config = plan.logit_config
    torch.manual_seed(0)
    cpu_model = OverLoCK(config).eval()
    deploy_cpu = copy.deepcopy(cpu_model)
    deploy_cpu.reparam()
    x = torch.randn(plan.logit_batch, config.in_chans, *config.resolution,
                    generator=torch.Generator().manual_seed(0))
    rows = []
    for structure, model in (("train structure, eval", cpu_model), ("deploy (re-parameterised)", deploy_cpu)):
        with torch.inference_mode():
            ref = model(x).double()
        for label, dtype, channels_last, tf32_on in plan.logit_variants:
            if not budget.fits(f"logits {structure} {label}", 5.0):
                continue
            rows.append(_logit_row(model, x, ref, device, structure, label, dtype, channels_last, tf32_on))
    worst = max(rows, key=lambda r: r["rel_diff"] / r["tolerance"], default=None)
    return {"config": _config_label(config), "batch": plan.logit_batch,
            "resolution": list(config.resolution), "rows": rows,
            "condition": "max |device - CPU fp32| <= tolerance x max |CPU logit|, every logit finite "
                         f"(tolerance {', '.join(f'{k} {v:g}' for k, v in LOGIT_RTOL.items())})",
            "measured": "no variant ran" if worst is None else
                        f"worst {worst['structure']} {worst['variant']}: {worst['rel_diff']:.3g} "
                        f"(tolerance {worst['tolerance']:g})",
            "ok": bool(rows) and all(r["ok"] for r in rows)}


def _logit_row(model, x, ref, device, structure, label, dtype, channels_last, tf32_on) -> dict:
    from nas.measure import DTYPES

    tolerance = LOGIT_RTOL["tf32" if tf32_on else dtype]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    row = {"structure": structure, "variant": label, "dtype": dtype, "channels_last": channels_last,
           "tf32": tf32_on, "tolerance": tolerance}
    try:
        on_device = copy.deepcopy(model).to(device, DTYPES[dtype]).to(memory_format=memory_format)
        with tf32(tf32_on), torch.inference_mode():
            out = on_device(x.to(device, DTYPES[dtype]).to(memory_format=memory_format)).double().cpu()
    except (RuntimeError, NotImplementedError) as e:   # e.g. no fp16 kernel for an op on this device
        return {**row, "error": _first_line(e), "rel_diff": float("inf"), "ok": False}
    scale = float(ref.abs().max())
    err = float((out - ref).abs().max())
    finite = bool(torch.isfinite(out).all())
    rel = err / scale if scale else float("inf")
    return {**row, "max_abs_logit_cpu": scale, "max_abs_diff": err, "rel_diff": rel,
            "top1_agree": float((out.argmax(1) == ref.argmax(1)).double().mean()),
            "finite": finite, "ok": finite and rel <= tolerance}


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
            rows += _latency_cells(plan, built[label], label, config, device, batch, warmup, repeats, budget)
    built.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    worst = max(rows, key=lambda r: r["spread_pct"] or 0, default=None)
    return {"rows": rows, "rounds": plan.rounds, "spread_limit_pct": 100 * plan.round_spread,
            "timing": {str(b): {"warmup": w, "repeats": r} for b, (w, r) in plan.timing.items()},
            "statistic": f"latency_ms: the median of {plan.rounds} measurements, each the median of "
                         "round minima (nas.measure.measure_latency)",
            "condition": f"the {plan.rounds} measurements of each cell agree: max - min <= "
                         f"{100 * plan.round_spread:g} % of their median",
            "measured": "no cell ran" if worst is None else
                        f"largest spread {worst['spread_pct']} % ({worst['model']} batch {worst['batch']} "
                        f"{worst['dtype']}{' channels_last' if worst['channels_last'] else ''}); "
                        f"{sum(not r['ok'] for r in rows)} of {len(rows)} cells over",
            "ok": bool(rows) and all(r["ok"] for r in rows)}


def _latency_cells(plan, model, label, config, device, batch, warmup, repeats, budget) -> list[dict]:
    rows, forward_ms = [], None
    for dtype, channels_last in plan.layouts:
        cell = f"latency {label} batch {batch} {dtype} {'channels_last' if channels_last else 'NCHW'}"
        if forward_ms is None:   # probe once per (model, batch): one measured forward
            probe = measure_latency(model, device=str(device), batch=batch, dtype="fp32",
                                    warmup=1, repeats=2)
            forward_ms = probe["latency_ms"]
        # each measurement: warm-up + repeats forwards (+ a possible re-measure) and a model copy
        estimate = plan.rounds * ((warmup + repeats) * forward_ms * 1.5 / 1e3 + 0.5)
        if not budget.fits(cell, estimate):
            continue
        results = [measure_latency(model, device=str(device), batch=batch, dtype=dtype,
                                   channels_last=channels_last, warmup=warmup, repeats=repeats)
                   for _ in range(plan.rounds)]
        rows.append(_latency_row(label, config, batch, dtype, channels_last, results, plan.round_spread))
    return rows


def _latency_row(label, config, batch, dtype, channels_last, results, spread_limit) -> dict:
    measured = [r["latency_ms"] for r in results]
    median = statistics.median(measured)
    spread = (max(measured) - min(measured)) / median if median else float("inf")
    return {
        "model": label, "config": _config_label(config), "batch": batch, "dtype": dtype,
        "channels_last": channels_last, "resolution": results[0]["latency_resolution"],
        "latency_ms": round(median, 4),
        "measurements_ms": measured,
        "spread_pct": round(100 * spread, 2), "ok": spread <= spread_limit,
        "p90_ms": round(statistics.median(r["latency_p90_ms"] for r in results), 4),
        "iqr_ms": round(statistics.median(r["latency_spread_ms"] for r in results), 4),
        "remeasured": sum(bool(r.get("latency_remeasured")) for r in results),
        "images_per_s": round(batch * 1e3 / median, 1) if median else None,
        "latency_device": results[0]["latency_device"],
    }


# ---------------------------------------------------------------------------- (c) training
def time_train_steps(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """One AMP training step of the train config after warm-up (forward + backward + AdamW),
    then the GradScaler's skip check."""
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
    scaler = grad_scaler_check(device)
    bad = [r for r in rows if not r["ok"]]
    return {"config": _config_label(config), "batch": plan.train_batch,
            "resolution": list(config.resolution), "rows": rows, "grad_scaler_check": scaler,
            "condition": "every loss finite and no timed step skipped by the GradScaler; the "
                         "GradScaler takes an ordinary step and skips a forced overflow",
            "measured": f"{len(rows) - len(bad)} of {len(rows)} variants ok"
                        + "".join(f"; {r['amp']}: {r['skipped_timed']} of {r['steps_timed']} timed steps "
                                  f"skipped, losses finite {r['finite']}" for r in bad)
                        + f"; scaler check: {scaler['measured']}",
            "ok": bool(rows) and not bad and scaler["ok"]}


def _optimizer_steps(optimizer) -> int:
    """Steps AdamW has taken (its per-parameter step count; a step the GradScaler skips is not
    counted)."""
    return max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)


def _train_step(evaluator, config, device, batch, warm, timed, channels_last) -> dict:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = OverLoCK(config).to(device).to(memory_format=memory_format).train()
    optimizer = evaluator.recipe.optimizer(model)
    amp_dtype = evaluator.recipe.amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_chans, *config.resolution, generator=g).to(
        device, memory_format=memory_format)
    y = torch.randint(0, config.num_classes, (batch,), generator=g).to(device)
    losses = []

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = evaluator.recipe.loss(model(x), y)
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
    _timed(step, device, repeats=0, warmup=warm)   # the scaler may skip warm-up steps (scale search)
    taken_before = _optimizer_steps(optimizer)
    times = _timed(step, device, repeats=timed, warmup=0)
    skipped = timed - (_optimizer_steps(optimizer) - taken_before)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    median = statistics.median(times)
    finite = bool(all(torch.isfinite(v).item() for v in losses))
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"step_ms": round(median, 3), "min_ms": round(min(times), 3),
            "spread_pct": round(100 * (max(times) - min(times)) / median, 2),
            "images_per_s": round(batch * 1e3 / median, 1), "peak_memory_mib": peak and round(peak, 1),
            "finite": finite, "skipped_timed": skipped, "ok": finite and skipped == 0,
            "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "grad_scaler": scaler is not None, "steps_timed": timed}


def grad_scaler_check(device: torch.device) -> dict:
    """torch.amp.GradScaler on the device: an ordinary step is taken (parameters move, the scale
    stays); a step whose loss is multiplied by inf is skipped and recorded (parameters untouched,
    the scale backed off). fp16 autocast on CUDA; on the CPU fp32 (the scaler's logic, not fp16
    gradients)."""
    from nas.evaluators.train import TrainEvaluator

    evaluator = TrainEvaluator({"amp": "off"})
    torch.manual_seed(0)
    model = OverLoCK(TINY).to(device).train()
    optimizer = evaluator.recipe.optimizer(model)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10)
    amp_dtype = torch.float16 if device.type == "cuda" else None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, TINY.in_chans, *TINY.resolution, generator=g).to(device)
    y = torch.randint(0, TINY.num_classes, (2,), generator=g).to(device)
    steps = []
    for poison in (False, True):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = evaluator.recipe.loss(model(x), y)
        if poison:
            loss = loss * float("inf")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        before = [p.detach().clone() for p in model.parameters()]
        scale, taken = scaler.get_scale(), _optimizer_steps(optimizer)
        scaler.step(optimizer)
        scaler.update()
        moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
        steps.append({"loss": "x inf (forced overflow)" if poison else "ordinary",
                      "taken": _optimizer_steps(optimizer) > taken, "parameters_moved": moved,
                      "scale_before": scale, "scale_after": scaler.get_scale()})
    ordinary, overflow = steps
    ok = (ordinary["taken"] and ordinary["parameters_moved"] and not overflow["taken"]
          and not overflow["parameters_moved"] and overflow["scale_after"] < overflow["scale_before"])
    return {"steps": steps, "amp_dtype": "float16" if amp_dtype else "fp32", "ok": ok,
            "measured": f"ordinary step taken {ordinary['taken']}; forced overflow skipped "
                        f"{not overflow['taken']}, scale {overflow['scale_before']:g} -> "
                        f"{overflow['scale_after']:g}"}


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
        finite = all(v == v for v in scores) and all(v == v and abs(v) != float("inf")
                                                     for v in second["train_loss"])
        rows.append({"amp": amp, "channels_last": True, "history": scores,
                     "train_loss": [round(v, 4) for v in second["train_loss"]],
                     "resumed_from_rung": first["epochs"], "wall_s": round(wall, 2),
                     "ok": finite and len(scores) == 2 and first["epochs"] == 1})
    return {"config": _config_label(config), "dataset": plan.evaluator_data, "rows": rows,
            "condition": "trained to rung 1 and resumed to epoch 2 with finite losses and scores",
            "measured": "; ".join(f"amp {r['amp']}: loss {', '.join(str(v) for v in r['train_loss'])}"
                                  for r in rows) or "no run",
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
    reference, against = (peak / 1e9, "nominal peak") if peak else (copy_gbps, "device copy (no nominal peak)")
    for r in rows:
        for d in ("forward", "backward"):
            r[f"{d}_pct_of_copy"] = round(100 * r[f"{d}_gbps"] / copy_gbps, 2) if copy_gbps else None
            r[f"{d}_pct_of_peak"] = round(100 * r[f"{d}_gbps"] * 1e9 / peak, 2) if peak else None
        r["forward_fraction"] = r["forward_gbps"] / reference if reference else 0.0
        r["ok"] = r["forward_fraction"] >= plan.op_min_fraction
    worst = min(rows, key=lambda r: r["forward_fraction"], default=None)
    return {"rows": rows, "copy_gbps": copy_gbps, "peak_gbps": peak and round(peak / 1e9, 1),
            "peak_source": _peak_source(device), "judged_against": against,
            "min_fraction": plan.op_min_fraction, "bytes_rule":
            "forward: attn + value read, out written; backward: grad_out + attn + value read, "
            "grad_attn + grad_value written; each tensor once (the minimum traffic)",
            "condition": f"forward bandwidth >= {100 * plan.op_min_fraction:g} % of the {against} "
                         "at every shape (a floor that catches a pathological path; a guess until a "
                         "GPU has measured the op)",
            "measured": "no shape ran" if worst is None else
                        f"lowest forward {100 * worst['forward_fraction']:.2f} % of the {against} "
                        f"({worst['forward_gbps']} GB/s, {worst['shape']} {worst['dtype']})",
            "ok": bool(rows) and all(r["ok"] for r in rows)}


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
def nvidia_smi_facts() -> dict:
    """The driver version (and GPU names) from one `nvidia-smi` call: asked once per run."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"driver": "unknown", "nvidia_smi": "not found"}
    rows = [[v.strip() for v in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]
    if out.returncode != 0 or not rows:
        return {"driver": "unknown", "nvidia_smi": _first_line(out.stderr or f"exit {out.returncode}")}
    return {"driver": rows[0][0], "nvidia_smi_gpus": [r[-1] for r in rows]}


def use_driver_version(driver: str) -> None:
    """Give nas.latency.device the driver version asked once, so its device strings (one per
    latency measurement) do not start nvidia-smi again."""
    import nas.latency.device

    nas.latency.device._cuda_driver = lambda: driver


def environment(plan: Plan, device: torch.device, budget: Budget) -> dict:
    """The device's facts (run in a part's process: the main process never initialises CUDA)."""
    env = {
        "device": device_string(str(device)),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "host_cpus": os.cpu_count(),
        "fp32_precision_matmul_default": torch.backends.cuda.matmul.fp32_precision,
        "fp32_precision_conv_default": torch.backends.cudnn.conv.fp32_precision,
        "ok": True,
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


def _first_line(error) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if isinstance(error, BaseException) \
        else (text.splitlines()[-1][:300] if text else "")


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check{' (DRY RUN: CPU, tiny sizes; not GPU figures)' if report['dry_run'] else ''}",
             "", f"Measured by `{report['command']}` on {report['started_utc']} "
             f"({report['plan']} plan, {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget).", "",
             f"**Verdict: {report['verdict']}**" + (f" ({len(report['not_run'])} part(s) or item(s) not run, "
                                                    "listed at the end)" if report["not_run"] else ""), "",
             f"- device: {env.get('device', report['device'])}",
             f"- torch {env.get('torch', torch.__version__)}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
             f"driver {report['driver']}",
             f"- load average at start: {', '.join(str(v) for v in report['load_average'])} "
             f"({os.cpu_count()} host CPUs)", "",
             "| part | status | condition | measured | wall s | note |", "|---|---|---|---|---:|---|"]
    for name, p in report["parts"].items():
        cells = [_cell(p.get(k, "")) for k in ("condition", "measured", "note")]
        lines.append(f"| {name} | {p['status']} | {cells[0]} | {cells[1]} | {p.get('wall_s', 0):.1f} | {cells[2]} |")
    lines.append("")
    for key, section in SECTIONS.items():
        if key in report:
            lines += section(report[key]) + [""]
    if report.get("not_reached"):
        lines += ["## Not reached by this run (the CPU cannot)", ""] + [f"- {s}" for s in report["not_reached"]] + [""]
    if report.get("not_run"):
        lines += ["## Not run (the check is incomplete: a part not run is not a pass)", ""]
        lines += [f"- {s}" for s in report["not_run"]] + [""]
    if BF16_DROPPED in report["skipped"]:
        lines += [f"Note: {BF16_DROPPED}.", ""]
    return "\n".join(lines)


def _cell(text) -> str:
    """Text for a markdown table cell (its pipes escaped)."""
    return str(text).replace("|", "\\|")


def _md_logits(r: dict) -> list[str]:
    lines = [f"## (a) Logits, {r['config']} at {r['batch']}x3x{r['resolution'][0]}x{r['resolution'][1]}, "
             "against the fp32 CPU logits", "", f"Condition: {r['condition']}.", "",
             "| model | variant | max abs logit (CPU) | max abs diff | rel diff | tolerance | top-1 agree | pass |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['structure']} | {x['variant']} | | | {x['error']} | {x['tolerance']:g} | | NO |")
            continue
        lines.append(f"| {x['structure']} | {x['variant']} | {x['max_abs_logit_cpu']:.4g} | {x['max_abs_diff']:.3g} | "
                     f"{x['rel_diff']:.3g} | {x['tolerance']:g} | {x['top1_agree']:.2f} | {'yes' if x['ok'] else 'NO'} |")
    return lines


def _md_latency(r: dict) -> list[str]:
    timing = ", ".join(f"batch {b}: {t['warmup']} warm-up + {t['repeats']} timed" for b, t in r["timing"].items())
    lines = [f"## (b) Latency of the deploy model ({timing}; {r['statistic']})", "",
             f"Condition: {r['condition']}.", "",
             "| model | batch | dtype | memory format | latency ms | spread % | pass | p90 ms | IQR ms | "
             "re-measured | images/s |", "|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['model']} | {x['batch']} | {x['dtype']} | "
                     f"{'channels_last' if x['channels_last'] else 'NCHW'} | {x['latency_ms']:.3f} | "
                     f"{x['spread_pct']} | {'yes' if x['ok'] else 'NO'} | {x['p90_ms']:.3f} | {x['iqr_ms']:.3f} | "
                     f"{x['remeasured']} | {x['images_per_s']} |")
    return lines


def _md_train(r: dict) -> list[str]:
    lines = [f"## (c) One training step of {r['config']}, batch {r['batch']} at "
             f"{r['resolution'][0]}x{r['resolution'][1]} (forward + backward + AdamW, after warm-up)", "",
             f"Condition: {r['condition']}.", "",
             "| amp | memory format | grad scaler | timed steps skipped | losses finite | median ms | "
             "min ms | spread % | images/s | peak MiB | pass |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['amp']} | {'channels_last' if x['channels_last'] else 'NCHW'} | "
                     f"{'yes' if x['grad_scaler'] else 'no'} | {x['skipped_timed']} of {x['steps_timed']} | "
                     f"{x['finite']} | {x['step_ms']:.2f} | {x['min_ms']:.2f} | {x['spread_pct']} | "
                     f"{x['images_per_s']} | {x['peak_memory_mib']} | {'yes' if x['ok'] else 'NO'} |")
    s = r["grad_scaler_check"]
    lines += ["", f"GradScaler check ({s['amp_dtype']}): " + "; ".join(
        f"{x['loss']} loss: step taken {x['taken']}, parameters moved {x['parameters_moved']}, scale "
        f"{x['scale_before']:g} -> {x['scale_after']:g}" for x in s["steps"]) + f" - {'pass' if s['ok'] else 'FAIL'}."]
    return lines


def _md_evaluator(r: dict) -> list[str]:
    lines = [f"## (c) The train evaluator end to end ({r['config']}, procedural data, 1 epoch then resumed to 2)",
             "", f"Condition: {r['condition']}.", "",
             "| amp | channels_last | accuracy per epoch | train loss | wall s | pass |", "|---|---|---|---|---:|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['amp']} | yes | {', '.join(f'{v:.3f}' for v in x['history'])} | "
                     f"{', '.join(str(v) for v in x['train_loss'])} | {x['wall_s']} | {'yes' if x['ok'] else 'NO'} |")
    return lines


def _md_op(r: dict) -> list[str]:
    peak = f"{r['peak_gbps']} GB/s ({r['peak_source']})" if r["peak_gbps"] else f"unknown ({r['peak_source']})"
    lines = ["## (d) Aggregation op `overlock::na2d_av`: achieved memory bandwidth", "",
             f"Condition: {r['condition']}.", "",
             f"Bytes: {r['bytes_rule']}. Device copy: {r['copy_gbps']} GB/s; nominal peak: {peak}.", "",
             "| shape | B | dtype | fwd ms | fwd GB/s | % of copy | % of peak | bwd ms | bwd GB/s | "
             "% of copy | % of peak | pass |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['shape']} | {x['B']} | {x['dtype']} | {x['forward_ms']:.4f} | "
                     f"{x['forward_gbps']} | {x['forward_pct_of_copy']} | {x['forward_pct_of_peak']} | "
                     f"{x['backward_ms']:.4f} | {x['backward_gbps']} | {x['backward_pct_of_copy']} | "
                     f"{x['backward_pct_of_peak']} | {'yes' if x['ok'] else 'NO'} |")
    return lines


SECTIONS = {"logits": _md_logits, "latency": _md_latency, "train_step": _md_train,
            "evaluator": _md_evaluator, "aggregation_op": _md_op}


# ------------------------------------------------------------------------------------- main
PARTS = {   # run order: cheap first, the latency grid (the long one) last
    "logits": ("(a) logits against the CPU", check_logits),
    "aggregation_op": ("(d) na2d_av bandwidth", op_bandwidth),
    "train_step": ("(c) AMP training step", time_train_steps),
    "evaluator": ("(c) train evaluator, AMP + channels_last", run_evaluator),
    "latency": ("(b) latency grid", measure_latencies),
}
MIN_PART_S = {"logits": 20, "aggregation_op": 10, "train_step": 20, "evaluator": 20, "latency": 20}


def _drop_bf16(plan: Plan) -> str:
    """A GPU without bf16 (before Ampere): its variants are dropped; the note says so."""
    plan.layouts = [(d, c) for d, c in plan.layouts if d != "bf16"]
    plan.logit_variants = [v for v in plan.logit_variants if v[1] != "bf16"]
    plan.train_variants = [(a, c) for a, c in plan.train_variants if a != "bf16"]
    plan.evaluator_amps = tuple(a for a in plan.evaluator_amps if a != "bf16")
    return BF16_DROPPED


BF16_DROPPED = "every bf16 variant: skipped, this GPU does not support bf16"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer variants and rounds")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes on the CPU: checks the script, not a GPU (see the report's "
                         "'not reached' list)")
    ap.add_argument("--device", default=None, help="cuda (default), cuda:N, or cpu (implies --dry-run)")
    ap.add_argument("--out", default=None,
                    help="output folder (default benchmarks/results/; runs/gpu-check-dry-run/ for a dry run)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock budget (default 450)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)          # run one part here
    ap.add_argument("--child-result", default=None, help=argparse.SUPPRESS)   # ... writing this file
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.dry_run else "cuda"
    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device {args.device!r}: not a device (cuda, cuda:N or cpu)")
    if device.type not in ("cuda", "cpu"):
        ap.error(f"--device {args.device!r}: cuda, cuda:N or cpu")
    if device.type == "cpu":
        args.dry_run = True
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    return args


def no_device_line(device: torch.device) -> str | None:
    """One line when the CUDA device asked for is not here (None when it is)."""
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return (f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build: "
                f"{torch.version.cuda or 'none'}) sees no GPU. Install a CUDA build of torch "
                "(docs/how-to/gpu.md), or check this script on the CPU with --dry-run.")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return (f"gpu_check: --device {device}: this machine has {count} CUDA device(s) "
                f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return _child(args)
    line = no_device_line(torch.device(args.device))
    if line:
        print(line, file=sys.stderr)
        return NO_CUDA_EXIT
    return _run(args, argv)


# ----------------------------------------------------------------------- one part, isolated
def _child(args) -> int:
    """Run one part in this process and write {"result", "skipped"} (or {"error"}) as JSON."""
    device = torch.device(args.device)
    if os.environ.get(FAULT_ENV) == args.child:
        os.abort()   # tests: a part whose process dies, as a CUDA fault can kill it
    if device.type == "cuda":
        use_driver_version(os.environ.get(DRIVER_ENV) or "unknown")
        if device.index is not None:
            torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)   # a dry run checks code paths; one thread stays fast on a busy host
    plan, budget = plan_for(args), Budget(args.budget_s + RESERVE_S)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        budget.skipped.append(_drop_bf16(plan))
    fn = environment if args.child == "environment" else PARTS[args.child][1]
    try:
        doc = {"result": fn(plan, device, budget), "skipped": budget.skipped}
        code = 0
    except Exception as e:   # noqa: BLE001 - a broken part is reported, the others still run
        traceback.print_exc()
        doc, code = {"error": _first_line(e), "skipped": budget.skipped}, 1
    Path(args.child_result).write_text(json.dumps(doc, default=str))
    return code


def run_isolated(key: str, args, seconds: float, driver: str) -> dict:
    """Run part `key` in its own Python process; {"result"/"error", "skipped", "wall_s"}. A
    process that dies (a CUDA fault, out of memory, a signal) or overruns is reported as an error
    with its last output line."""
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, os.path.abspath(__file__), "--child", key, "--child-result", str(result_file),
               "--device", args.device, "--budget-s", f"{max(seconds, 0):.1f}"]
        cmd += ["--quick"] * args.quick + ["--dry-run"] * args.dry_run
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, DRIVER_ENV: driver},
                                  timeout=max(seconds, 0) + CHILD_GRACE_S)
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish within {max(seconds, 0) + CHILD_GRACE_S:.0f} s (killed)",
                    "skipped": [], "wall_s": round(time.perf_counter() - t0, 1)}
        sys.stderr.write(proc.stderr[-20000:])
        wall = round(time.perf_counter() - t0, 1)
        if result_file.is_file():
            return {**json.loads(result_file.read_text()), "wall_s": wall}
    how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"exit {proc.returncode}")
    return {"error": f"its process died ({how}): {_first_line(proc.stderr) or 'no output'}",
            "skipped": [], "wall_s": wall}


def _run(args, argv) -> int:
    device = torch.device(args.device)
    facts = nvidia_smi_facts() if device.type == "cuda" else {"driver": None}
    out = Path(args.out or (REPO / "runs" / "gpu-check-dry-run" if args.dry_run else REPO / "benchmarks" / "results"))
    budget = Budget(args.budget_s)
    report = {
        "kind": "overlock-nas gpu check", "version": 2, "dry_run": args.dry_run,
        "plan": plan_for(args).name, "device": str(device), "driver": facts["driver"],
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "budget_s": args.budget_s, "parts": {},
        "not_reached": NOT_REACHED_ON_CPU if device.type == "cpu" else [],
    }
    env = run_isolated("environment", args, budget.left(), facts["driver"] or "")
    report["environment"] = {**env.get("result", {"error": env.get("error")}), **facts}
    failed = "error" in env
    for key, (title, _) in PARTS.items():
        if key in args.parts.split(","):
            failed |= _run_part(key, title, args, budget, facts, report) == "FAILED"
    report["skipped"] = budget.skipped
    report["not_run"] = not_run(report)
    report["verdict"] = "failed" if failed else "incomplete" if report["not_run"] else "passed"
    report["wall_s"] = round(budget.elapsed(), 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu-check.md").write_text(markdown(report))
    print(summary_line(report) + f"; wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}")
    return {"failed": FAIL_EXIT, "incomplete": INCOMPLETE_EXIT, "passed": PASS_EXIT}[report["verdict"]]


def not_run(report: dict) -> list[str]:
    """What was planned and not run: whole parts, then items inside a part that ran (a GPU
    without bf16 is noted in `skipped` but is no gap: those variants cannot run there)."""
    parts = [f"{title}: not run (time budget)" for title, p in report["parts"].items() if p["status"] == "not run"]
    return parts + [s for s in report["skipped"] if s != BF16_DROPPED]


def summary_line(report: dict) -> str:
    """One line: the verdict, and every part or item not run (a part not run is not a pass)."""
    verdict = {"failed": "FAILED", "passed": "all checks passed",
               "incomplete": "INCOMPLETE (no check failed, but not everything ran)"}[report["verdict"]]
    parts = [t for t, p in report["parts"].items() if p["status"] == "not run"]
    gaps = (f"; parts not run: {', '.join(parts)}" if parts else "")
    items = len(report["not_run"]) - len(parts)
    gaps += f"; {items} item(s) inside parts not run" if items else ""
    return f"gpu_check: {verdict} in {report['wall_s']:.0f} s{gaps}"


def _run_part(key, title, args, budget, facts, report) -> bool:
    """Run one part isolated, record and print its verdict beside its measured value; returns its
    status: "ok", "FAILED", or "not run" (the time budget could not hold it)."""
    if not budget.fits(title, MIN_PART_S[key] if not args.dry_run else 0):
        budget.skipped.pop()                      # listed once, as a part not run (report["not_run"])
        report["parts"][title] = {"status": "not run", "note": "time budget"}
        print(f"gpu_check: {title}: NOT RUN (time budget)", flush=True)
        return "not run"
    print(f"gpu_check: {title} ...", flush=True)
    done = run_isolated(key, args, budget.left(), facts["driver"] or "")
    budget.skipped += [s for s in done["skipped"] if s not in budget.skipped]
    result = done.get("result")
    if result is not None:
        report[key] = result
        status, note = ("ok" if result.get("ok") else "FAILED"), ""
    else:
        status, note = "FAILED", done["error"]
    entry = {"status": status, "wall_s": done["wall_s"], "note": note}
    if result is not None:
        entry.update(condition=result.get("condition", ""), measured=result.get("measured", ""))
    report["parts"][title] = entry
    said = f"{entry.get('condition', '')}: measured {entry.get('measured', '')}" if result is not None else note
    print(f"gpu_check: {title}: {status} in {done['wall_s']:.1f} s - {said}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
