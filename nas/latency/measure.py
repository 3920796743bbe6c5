"""Latency of the deploy model: the one place latency is measured (the store: `nas.latency.store`).

    >>> from nas.latency.measure import measure_latency
    >>> r = measure_latency(overlock.PRESETS["overlock_xt"], device="cpu", threads=2)
    >>> r["latency_ms"], r["latency_spread_ms"], r["latency_device"]          # doctest: +SKIP
    (61.2, 0.9, 'cpu: AMD EPYC x2 threads, torch 2.13.0, na2d_av pure PyTorch')

What is timed: the re-parameterised deploy model (dilated branches merged), eval mode, under
`torch.inference_mode`, one forward of `batch x C x H x W`.

- CPU: torch threads set to `threads` and the measuring thread pinned to the least busy core(s)
  for the measurement (both restored after). With one thread the clock is the thread's CPU time
  (`time.thread_time`): on a shared machine, time spent descheduled is not the model's latency,
  and wall time under a load of 14 on 2 cores read 4-7x the model's time with no two runs alike
  (docs/explanation/latency.md). With more threads the clock is wall time (OpenMP workers spin, so CPU
  time is not a latency). `latency_clock` says which; `latency_wall_ms` keeps the wall median.
- Allocator: before the first measurement a process fixes glibc's thresholds where its adaptation
  ends (`nas.latency._malloc.settle_large_blocks`). Left adaptive, the first configs a process measured
  paid page faults for every large activation until a few had been freed: the first group of 8
  configs read up to 1.6x its steady figure (xt_t, 64x64, 1 thread, same process later), whatever
  the warm-up; with the thresholds fixed the first group reads as the later ones.
- CUDA: CUDA events around each forward after warm-up, `torch.cuda.synchronize()` before reading;
  fp16 / bf16 by converting the model and input (`.to(dtype)`), channels_last optional;
  `torch.backends.cudnn.benchmark` on (kernels autotuned during warm-up), restored afterwards.

Protocol (one, for every caller: `overlock-nas profile`, the study's measuring worker, `latency
fit` and the benchmarks; its settings, version and history are `nas.latency.protocol`'s): `warmup`
untimed forwards, then `repeats` timed forwards in `rounds` rounds, back to back (rounds spread
the samples over time, so a burst of interference spoils one round, not the result). Configs
measured together take turns round by round (`measure_latencies`, GROUP at a time), and on CPU the
yardstick model takes its turn in every round too. A round's fastest forward is its least
disturbed one (interference only ever adds time). On CPU `latency_ms` is the median over rounds
of the config's round minimum relative to the yardstick's, times the yardstick's nominal time on
this device (`nas.latency.store.nominal_yardstick_ms`): the machine's own speed drifts between
processes, and the ratio does not. `latency_raw_ms` is the median of the config's round minima as
timed, `latency_yardstick_ms` the yardstick's now and `latency_speed` nominal / now. On CUDA
`latency_ms` is the median of the round minima. p90, interquartile range (`latency_spread_ms`) and
min are over all timed forwards, as timed. Each reading states its 95 % uncertainty from its
rounds (`latency_uncertainty_pct`); while it is wider than +-UNCERTAINTY_TARGET_PCT one more set
of rounds is taken and pooled, up to MAX_SETS sets (`latency_sets`; `latency_remeasured` when more
than one). Every reading records the protocol it was taken by (`latency_protocol_version`,
`latency_protocol`) and its round minima (`latency_round_minima_ms`). The per-stage breakdown (`profile_stages=True`) runs
separately, after the timing, so its hooks never inflate `latency_ms`; each stage runs inside a
`record_function("stage:<name>")` range, so it is labelled in any torch.profiler trace.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ._malloc import settle_large_blocks
from .device import device_string
from .protocol import (GROUP, MAX_SETS, REPEATS, ROUNDS, STATISTIC, UNCERTAINTY_TARGET_PCT, VERSION,
                       WARMUP, YARDSTICK, YARDSTICK_INPUT, describe, uncertainty_pct)

__all__ = ["measure_latency", "measure_latencies", "Progress", "DTYPES", "WARMUP", "REPEATS", "ROUNDS",
           "GROUP", "PROTOCOL"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROTOCOL = STATISTIC
STAGE_REPEATS = 10        # forwards profiled for the per-stage breakdown


# ------------------------------------------------------------------------------------- model
def _deploy_model(config_or_model, device, dtype, channels_last, resolution):
    """(deploy model on device/dtype, input tensor)."""
    from overlock import OverLoCK, OverLoCKConfig

    if isinstance(config_or_model, OverLoCKConfig):
        config = config_or_model
        torch.manual_seed(0)
        model = OverLoCK(config, deploy=True)
    elif isinstance(config_or_model, nn.Module):
        model = copy.deepcopy(config_or_model)
        if hasattr(model, "reparam") and not getattr(model, "deployed", True):
            model.reparam()
        config = getattr(model, "config", None)
    else:
        raise TypeError(f"measure_latency takes an OverLoCKConfig or a model, not {type(config_or_model).__name__}")
    if resolution is None:
        if config is None:
            raise ValueError("resolution is required for a model without a .config")
        resolution = config.resolution
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    in_chans = config.in_chans if config is not None else 3
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(device=device, dtype=dtype).to(memory_format=memory_format)
    x = torch.randn(1, in_chans, *resolution, generator=torch.Generator().manual_seed(0))
    return model, x, tuple(resolution)


@contextlib.contextmanager
def _pinned_threads(threads: int | None):
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


@contextlib.contextmanager
def _cudnn_autotune(cuda: bool):
    """On CUDA, let cuDNN pick its fastest kernels for these shapes during warm-up
    (`cudnn.benchmark`), as a deployed model would; the flag is restored afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or cuda
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _idle_cores(n: int, sample_s: float = 0.05) -> set[int]:
    """The `n` cores of this process's affinity that were idlest over `sample_s` (/proc/stat)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) <= n:
        return set(allowed)

    def idle() -> dict[int, int]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    out[int(name[3:])] = int(fields[3]) + int(fields[4])   # idle + iowait
        return out

    try:
        before = idle()
        time.sleep(sample_s)
        after = idle()
    except (OSError, ValueError, IndexError):
        return set(allowed[-n:])
    return set(sorted(allowed, key=lambda c: after.get(c, 0) - before.get(c, 0), reverse=True)[:n])


@contextlib.contextmanager
def _pinned_cores(threads: int | None):
    """Pin the measuring thread to the idlest `threads` core(s) (no migrations: a migrated forward
    refills its caches); the affinity is restored afterwards. No-op where affinity is unsupported."""
    if not threads or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cores = _idle_cores(threads)
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        yield None
        return
    try:
        yield sorted(cores)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)


def _stats(rounds_ms: list[list[float]]) -> dict:
    ordered = sorted(t for r in rounds_ms for t in r)
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[8]
    minima = [min(r) for r in rounds_ms]
    return {"latency": statistics.median(minima), "median": statistics.median(ordered), "p90": p90,
            "iqr": q3 - q1, "min": ordered[0], "minima": minima}


def _per_round(entry: dict) -> list[float]:
    """The values a reading is the median of: its round minima, relative to the yardstick's in
    the same rounds when it was calibrated."""
    minima = [min(r) for r in entry["timed"]]
    if not entry["yardstick"]:
        return minima
    return [m / y for m, y in zip(minima, entry["yardstick"])]


@dataclass(frozen=True)
class Progress:
    """Where one set of rounds stands: handed to `progress=` after the warm-up and after each
    round (with its pause), never inside a timed round, so reporting costs the readings nothing.

    Attributes:
        configs: configs whose rounds are interleaved in this set.
        done: rounds finished (0: the warm-up has just finished).
        rounds: rounds in the set.
        elapsed_s: wall seconds since the set's warm-up began.
        left_s: estimated wall seconds until the set ends: the rounds left at the forward time
            seen so far, and the pauses between them.
        remeasure: the set is the second one, for configs whose first rounds disagreed.
    """

    configs: int
    done: int
    rounds: int
    elapsed_s: float
    left_s: float
    remeasure: bool = False


def _time_rounds(pairs, repeats: int, warmup: int, rounds: int, clock: str,
                 progress: Callable[[Progress], None] | None = None,
                 remeasure: bool = False, configs: int | None = None) -> list[tuple[list, list]]:
    """For each (model, input) of `pairs`: (per round: ms of each timed forward by `clock`, wall ms
    of every timed forward). The rounds run back to back and are interleaved across the pairs:
    round r of every model runs before round r + 1 of any, so a stretch of interference is shared,
    not one model's. `progress` is told where the set stands between rounds (`Progress`), of
    `configs` configs (default: every pair; the yardstick is not one)."""
    per_round = [repeats // rounds + (1 if i < repeats % rounds else 0) for i in range(rounds)]
    per_round = [n for n in per_round if n > 0]
    out = [([], []) for _ in pairs]
    tell = _Teller(progress, per_round, configs or len(pairs), remeasure)
    with torch.inference_mode():
        # warm-up interleaved like the rounds: switching models is part of the steady state
        for _ in range(warmup):
            for model, x in pairs:
                model(x)
        tell.warmed_up(warmup)
        for r, n in enumerate(per_round):
            round_start = time.perf_counter()
            for (model, x), (timed, walls) in zip(pairs, out):
                times = _cuda_round(model, x, n) if clock == "cuda" else _cpu_round(model, x, n, clock, walls)
                timed.append(times)
                if clock == "cuda":
                    walls.extend(times)
            tell.round_done(r, time.perf_counter() - round_start)
    return out


class _Teller:
    """Tells `progress` where a set of rounds stands and how long it has left: the rounds left
    at the wall time per forward seen so far (the warm-up's, then the timed rounds')."""

    def __init__(self, progress, per_round: list[int], configs: int, remeasure: bool):
        self.progress, self.per_round, self.configs = progress, per_round, configs
        self.remeasure = remeasure
        self.start = time.perf_counter()
        self.timed_s = self.timed_forwards = 0.0

    def warmed_up(self, warmup: int) -> None:
        if self.progress is not None and warmup > 0:
            self._tell(0, (time.perf_counter() - self.start) / (warmup * self.configs))

    def round_done(self, r: int, round_s: float) -> None:
        if self.progress is None:
            return
        self.timed_s += round_s
        self.timed_forwards += self.per_round[r] * self.configs
        self._tell(r + 1, self.timed_s / self.timed_forwards)

    def _tell(self, done: int, forward_s: float) -> None:
        left = sum(self.per_round[done:]) * self.configs * forward_s
        self.progress(Progress(configs=self.configs, done=done, rounds=len(self.per_round),
                               elapsed_s=time.perf_counter() - self.start, left_s=left,
                               remeasure=self.remeasure))


def _cpu_round(model, x, n: int, clock: str, walls: list) -> list[float]:
    """ms of `n` forwards by the thread's CPU time (`thread_cpu`) or the wall clock; the wall
    times are appended to `walls` either way."""
    cpu_clock = clock == "thread_cpu"
    times = []
    for _ in range(n):
        c0, t0 = time.thread_time() if cpu_clock else 0.0, time.perf_counter()
        model(x)
        wall = (time.perf_counter() - t0) * 1e3
        walls.append(wall)
        times.append((time.thread_time() - c0) * 1e3 if cpu_clock else wall)
    return times


def _cuda_round(model, x, n: int) -> list[float]:
    """ms of `n` forwards by CUDA events, read after one synchronize."""
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for s, e in events:
        s.record()
        model(x)
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in events]


# ---------------------------------------------------------------------------------- stages
def _stage_times(model, x, repeats: int, cuda: bool) -> dict[str, float]:
    """Median ms per stage of `model.stage_modules()` over `repeats` forwards, and "other": the
    median whole forward of the same run minus the stages.

    Each stage module runs inside a `record_function("stage:<name>")` range, so the stages show
    up by name in any torch.profiler trace taken around a measurement. The times themselves come
    from the same hooks: CUDA events on GPU, `perf_counter` on CPU, which cost far less than an
    op-level profiler (that roughly doubled a small model's forward here).
    """
    stages = model.stage_modules()
    calls: dict[str, list] = {name: [] for name in stages}
    handles = _stage_hooks(stages, calls, cuda)
    try:
        totals = _hooked_forwards(model, x, repeats, cuda, calls)
    finally:
        for h in handles:
            h.remove()
    if cuda:
        calls = {n: [s.elapsed_time(e) for s, e in c] for n, c in calls.items()}
        totals = [s.elapsed_time(e) for s, e in totals]
    return _stage_medians(stages, calls, totals)


def _stage_hooks(stages: dict, calls: dict[str, list], cuda: bool) -> list:
    """Forward hooks that open a `stage:<name>` profiler range around each stage module and
    append its time to `calls[name]` (ms on CPU; a (start, end) CUDA event pair on GPU)."""
    from torch.autograd.profiler import record_function

    open_ranges: dict[int, tuple] = {}

    def pre(name):
        def hook(mod, args):
            rf = record_function(f"stage:{name}")
            rf.__enter__()
            open_ranges[id(mod)] = (rf, _start_mark(cuda))
        return hook

    def post(name):
        def hook(mod, args, out):
            rf, start = open_ranges.pop(id(mod))
            calls[name].append(_elapsed_since(start, cuda))
            rf.__exit__(None, None, None)
        return hook

    handles = []
    for name, modules in stages.items():
        for m in modules:
            handles.append(m.register_forward_pre_hook(pre(name)))
            handles.append(m.register_forward_hook(post(name)))
    return handles


def _start_mark(cuda: bool):
    """A recorded CUDA event, or the CPU clock now."""
    if not cuda:
        return time.perf_counter()
    start = torch.cuda.Event(enable_timing=True)
    start.record()
    return start


def _elapsed_since(start, cuda: bool):
    """ms since a `_start_mark` on CPU; on GPU the (start, end) event pair, read after a sync."""
    if not cuda:
        return (time.perf_counter() - start) * 1e3
    end = torch.cuda.Event(enable_timing=True)
    end.record()
    return (start, end)


def _hooked_forwards(model, x, repeats: int, cuda: bool, calls: dict[str, list]) -> list:
    """One untimed forward (the hooks' first call), then `repeats` timed whole forwards; the
    stage times of the untimed one are dropped. Returns the whole forwards' times."""
    with torch.inference_mode():
        model(x)
        for name in calls:
            calls[name].clear()
        if cuda:
            torch.cuda.synchronize()
        totals = []
        for _ in range(repeats):
            start = _start_mark(cuda)
            model(x)
            totals.append(_elapsed_since(start, cuda))
        if cuda:
            torch.cuda.synchronize()
    return totals


def _stage_medians(stages: dict, calls: dict[str, list], totals: list[float]) -> dict[str, float]:
    """Per stage, the median over forwards of the summed time of its modules (each forward calls
    every module of a stage once); "other" is what runs between the stages (context upsampling,
    concatenations): the median whole forward less the stages."""
    out = {}
    for name, modules in stages.items():
        per_forward, ms = len(modules), calls[name]
        if not ms or per_forward == 0:
            out[name] = 0.0
            continue
        sums = [sum(ms[i:i + per_forward]) for i in range(0, len(ms) - per_forward + 1, per_forward)]
        out[name] = round(statistics.median(sums), 4)
    out["other"] = round(max(0.0, statistics.median(totals) - sum(out.values())), 4)
    return out


# -------------------------------------------------------------------------------------- API
def measure_latency(config_or_model, *, device: str = "cpu", batch: int = 1, dtype: str = "fp32",
                    channels_last: bool = False, warmup: int = WARMUP, repeats: int = REPEATS,
                    threads: int | None = None, profile_stages: bool = False,
                    resolution: int | tuple[int, int] | None = None, rounds: int = ROUNDS,
                    pin: bool = True, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Measure the deploy model's forward latency (`measure_latencies` of one config: the same
    protocol).

    Args:
        config_or_model: an `OverLoCKConfig` (built in deploy structure, seed 0) or a model (copied
            and re-parameterised if it is not yet).
        device: "cpu", "cuda" or "cuda:N".
        batch: images per forward.
        dtype: "fp32", "fp16" or "bf16" (model and input converted).
        channels_last: NHWC memory format for model and input.
        warmup: untimed forwards first.
        repeats: timed forwards (split into `rounds`).
        threads: CPU threads to pin torch to during the measurement (default: leave as is).
        rounds: rounds the timed forwards are split into (`latency_ms` = median of round minima).
        pin: on CPU, pin the measuring thread to the idlest core(s) while measuring.
        profile_stages: also return `latency_stages_ms` (median ms per stage, plus "other" for what
            runs between stages) from a separate, instrumented run.
        resolution: input (H, W) or int; default the config's.
        progress: called with a `Progress` after the warm-up and after each round (between
            rounds: it never runs inside a timed one).

    Returns:
        dict with latency_ms (median of round minima), latency_uncertainty_pct (its 95 % uncertainty,
        +-% from the rounds), latency_p90_ms, latency_spread_ms (IQR), latency_min_ms,
        latency_device, latency_batch, latency_dtype, latency_channels_last, latency_repeats,
        latency_resolution ([H, W]), latency_sets (sets of rounds pooled), latency_remeasured
        (more than one), latency_first_uncertainty_pct (when re-measured), latency_round_minima_ms,
        latency_stages_ms (when profiled), and the protocol: latency_clock ("thread_cpu", "wall"
        or "cuda"), latency_rounds, latency_protocol (in words), latency_protocol_version,
        latency_wall_ms (median wall time of the timed forwards), latency_cores (pinned cores or
        None).

    Raises:
        ValueError: unknown dtype, bad batch/repeats, or CUDA asked for but absent.
    """
    return _measure_group([config_or_model], device=device, batch=batch, dtype=dtype,
                          channels_last=channels_last, warmup=warmup, repeats=repeats,
                          threads=threads, profile_stages=profile_stages, resolution=resolution,
                          rounds=rounds, pin=pin, progress=progress)[0]


def measure_latencies(configs, *, group: int = GROUP, **settings) -> list[dict[str, Any]]:
    """`measure_latency` of several configs, their rounds interleaved `group` models at a time.

    Round r of every model of a group is timed before round r + 1 of any, so the load of a shared
    machine is spread evenly over the group's configs instead of falling on whichever config was
    being measured at the time (the protocol that agreed best across processes,
    docs/explanation/latency.md). Same settings and result keys as `measure_latency`; `group` bounds the
    models held in memory at once. `profile_stages` is not supported here. `progress` hears from
    each group in turn (`Progress.configs` is that group's size).
    """
    if settings.get("profile_stages"):
        raise ValueError("measure_latencies: profile_stages is per config; use measure_latency")
    configs = list(configs)
    out = []
    for i in range(0, len(configs), max(1, group)):
        out += _measure_group(configs[i:i + max(1, group)], **settings)
    return out


def _check_settings(device: str, dtype: str, batch: int, repeats: int, warmup: int, rounds: int) -> bool:
    """True for CUDA; ValueError (one line) for settings no measurement can use."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")
    if batch < 1 or repeats < 2 or warmup < 0 or rounds < 1:
        raise ValueError(f"batch={batch}, repeats={repeats}, warmup={warmup}, rounds={rounds}: need "
                         "batch >= 1, repeats >= 2, warmup >= 0, rounds >= 1")
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    return cuda


def _build(items, device: str, dtype: str, channels_last: bool, resolution, batch: int) -> list[tuple]:
    """(deploy model, input batch, resolution) of each item, on the device in its dtype."""
    dev = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    built = []
    for item in items:
        model, x, res = _deploy_model(item, dev, DTYPES[dtype], channels_last, resolution)
        x = x.expand(batch, *x.shape[1:]).contiguous(memory_format=memory_format).to(dev, DTYPES[dtype])
        built.append((model, x, res))
    return built


def _timed_with_recheck(pairs, repeats: int, warmup: int, rounds: int, clock: str, progress=None,
                        yardsticks: list | None = None, yardstick_of: list | None = None) -> list[dict]:
    """Per pair: {"timed": round times, "walls": wall ms, "yardstick": the minima of its
    yardstick's rounds beside its own (empty when not calibrated), "sets": sets of rounds pooled,
    "first_uncertainty": the first set's uncertainty (%)}. `yardsticks` are (model, input) pairs
    taking their turn in every round, `yardstick_of[i]` pair i's. While a pair's uncertainty is
    wider than UNCERTAINTY_TARGET_PCT one more set of its rounds (and its yardstick's) is taken
    and pooled, up to MAX_SETS sets."""
    yardsticks = yardsticks or []
    out = [{"timed": [], "walls": [], "yardstick": [], "sets": 0} for _ in pairs]
    todo = list(range(len(pairs)))
    for n_set in range(MAX_SETS):
        sticks = sorted({yardstick_of[i] for i in todo}) if yardsticks else []
        timings = _time_rounds([pairs[i] for i in todo] + [yardsticks[j] for j in sticks], repeats,
                               warmup if n_set == 0 else min(warmup, 1), rounds, clock, progress,
                               remeasure=n_set > 0, configs=len(todo))
        stick_minima = {j: [min(r) for r in timings[len(todo) + k][0]] for k, j in enumerate(sticks)}
        for i, (timed, walls) in zip(todo, timings):
            entry = out[i]
            entry["timed"] += timed
            entry["walls"] += walls
            entry["sets"] += 1
            if yardsticks:
                entry["yardstick"] += stick_minima[yardstick_of[i]]
            if n_set == 0:
                entry["first_uncertainty"] = uncertainty_pct(_per_round(entry))
        todo = [i for i in todo if uncertainty_pct(_per_round(out[i])) > UNCERTAINTY_TARGET_PCT]
        if not todo:
            break
    return out


_YARDSTICKS: dict = {}


def _yardstick(device: str, dtype: str, channels_last: bool):
    """The yardstick (`nas.latency.protocol.YARDSTICK`) and its input, on `device` in `dtype` and
    memory format; built once a process."""
    from overlock import PRESETS

    key = (str(device), dtype, bool(channels_last))
    if key not in _YARDSTICKS:
        fields = {k: v for k, v in YARDSTICK.items() if k != "preset"}
        batch, chans, h, w = YARDSTICK_INPUT
        config = PRESETS[YARDSTICK["preset"]].replace(**fields, resolution=(h, w), in_chans=chans)
        model, x, _ = _deploy_model(config, torch.device(device), DTYPES[dtype], channels_last, (h, w))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        x = x.expand(batch, *x.shape[1:]).contiguous(memory_format=memory_format).to(device, DTYPES[dtype])
        _YARDSTICKS[key] = (model, x)
    return _YARDSTICKS[key]


def _measure_group(items, *, device: str = "cpu", batch: int = 1, dtype: str = "fp32",
                   channels_last: bool = False, warmup: int = WARMUP, repeats: int = REPEATS,
                   threads: int | None = None, profile_stages: bool = False, resolution=None,
                   rounds: int = ROUNDS, pin: bool = True, progress=None) -> list[dict[str, Any]]:
    """The one protocol, for every caller: settings checked, allocator settled, threads set,
    models (and on CPU the yardstick) built, the measuring thread pinned, rounds timed (and
    re-timed while too uncertain), readings calibrated against the device's nominal yardstick."""
    cuda = _check_settings(device, dtype, batch, repeats, warmup, rounds)
    rounds = min(rounds, repeats)
    settle_large_blocks()
    with _pinned_threads(threads if not cuda else None), _cudnn_autotune(cuda):
        built = _build(items, device, dtype, channels_last, resolution, batch)
        n_threads = None if cuda else torch.get_num_threads()
        clock = "cuda" if cuda else ("thread_cpu" if n_threads == 1 else "wall")
        yardsticks = [] if cuda else [_yardstick(device, dtype, channels_last)]
        with _pinned_cores(n_threads if pin else None) as cores:
            timings = _timed_with_recheck([(m, x) for m, x, _ in built], repeats, warmup, rounds, clock,
                                          progress, yardsticks, [0] * len(built))
        name = device_string(device, threads)
        nominal = None if cuda else _nominal(name, dtype, channels_last, timings)
        common = {"latency_device": name, "latency_batch": batch,
                  "latency_dtype": dtype, "latency_channels_last": bool(channels_last),
                  "latency_repeats": repeats, "latency_clock": clock, "latency_rounds": rounds,
                  "latency_protocol": describe(clock, len(items)), "latency_protocol_version": VERSION,
                  "latency_cores": cores}
        results = []
        for (model, x, res), timing in zip(built, timings):
            result = _result(timing, nominal) | common | {"latency_resolution": list(res)}
            if profile_stages:
                result["latency_stages_ms"] = _stage_times(model, x, min(repeats, STAGE_REPEATS), cuda)
            results.append(result)
    return results


def _nominal(device_name: str, dtype: str, channels_last: bool, timings: list[dict]) -> float:
    """The yardstick's nominal ms on this device: stored, else what this group measured (the
    median of its first set's round minima), stored now."""
    from datetime import datetime, timezone

    from .store import nominal_yardstick_ms

    first_set = timings[0]["yardstick"][:len(timings[0]["timed"]) // timings[0]["sets"]]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return nominal_yardstick_ms(device_name, dtype, channels_last, statistics.median(first_set), when)["ms"]


def _result(timing: dict, nominal: float | None) -> dict[str, Any]:
    """The statistics of one config's timed forwards as result keys; calibrated by the yardstick's
    `nominal` ms when it took its turns beside the config."""
    stats = _stats(timing["timed"])
    per_round = _per_round(timing)
    result = {"latency_remeasured": timing["sets"] > 1, "latency_sets": timing["sets"]}
    if timing["sets"] > 1:
        result["latency_first_uncertainty_pct"] = round(timing["first_uncertainty"], 2)
    if timing["yardstick"]:
        now = statistics.median(timing["yardstick"])
        result |= {"latency_ms": round(statistics.median(per_round) * nominal, 4),
                   "latency_raw_ms": round(stats["latency"], 4),
                   "latency_yardstick_ms": round(now, 4), "latency_yardstick_nominal_ms": round(nominal, 4),
                   "latency_speed": round(nominal / now, 4)}
    else:
        result["latency_ms"] = round(stats["latency"], 4)
    return result | {
        "latency_uncertainty_pct": round(uncertainty_pct(per_round), 2),
        "latency_p90_ms": round(stats["p90"], 4),
        "latency_spread_ms": round(stats["iqr"], 4),
        "latency_min_ms": round(stats["min"], 4),
        "latency_wall_ms": round(statistics.median(timing["walls"]), 4),
        "latency_round_minima_ms": [round(m, 4) for m in stats["minima"]],
    }
