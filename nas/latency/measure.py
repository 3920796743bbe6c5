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
fit` and the benchmarks; defaults WARMUP 10, REPEATS 30, ROUNDS 5, the study's): `warmup` untimed
forwards, then `repeats` timed forwards in `rounds` rounds (rounds spread the samples over time,
so a burst of interference spoils one round, not the result). Configs measured together have
their rounds interleaved (`measure_latencies`, GROUP 8); fewer than GROUP configs - one config in
`profile` or in the measuring worker - idle between rounds for the missing configs' share of the
time, so every reading's rounds span the same time whether one config or eight were measured.
`latency_ms` is the median of the rounds' minima (interference only ever adds time: a round's
fastest forward is its least disturbed one, and the median over rounds discards a round that was
disturbed throughout); p90, interquartile range (`latency_spread_ms`) and min are over all timed
forwards. When the rounds disagree (their minima's range > 10 % of `latency_ms`) one more set of
rounds is measured and both sets pooled; `latency_remeasured` and `latency_first_spread_ms` (the
first set's range) record that. Measured under a load of 13-18 on 2 cores (16 configs, two
separate processes, docs/explanation/latency.md): wall-clock medians agreed within +-10 % for 0 % of the
configs, this protocol for 100 %. The per-stage breakdown (`profile_stages=True`) runs
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

__all__ = ["measure_latency", "measure_latencies", "Progress", "DTYPES", "SPREAD_REMEASURE", "WARMUP",
           "REPEATS", "ROUNDS", "GROUP", "PROTOCOL"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SPREAD_REMEASURE = 0.10   # one more set of rounds when the round minima spread > 10 %
# The one protocol: profile, the study's measuring worker (nas.study.LatencySettings' defaults),
# `latency fit` and the benchmarks all measure with these unless a user asks otherwise.
WARMUP = 10               # untimed forwards before the rounds
REPEATS = 30              # timed forwards, taken in ROUNDS rounds
ROUNDS = 5
GROUP = 8                 # configs whose rounds are interleaved; fewer are paced to its time span
PACE_MAX_S = 10.0         # the longest idle pause between two rounds (a big model on a busy host)
PROTOCOL = "median of round minima"
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
            "iqr": q3 - q1, "min": ordered[0], "round_range": max(minima) - min(minima)}


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
                 remeasure: bool = False) -> list[tuple[list, list]]:
    """For each (model, input) of `pairs`: (per round: ms of each timed forward by `clock`, wall ms
    of every timed forward). The rounds are interleaved across the pairs: round r of every model
    runs before round r + 1 of any, so a stretch of interference is shared, not one model's.
    Fewer than GROUP pairs are paced (`_pause_after_round`): every reading, of one config or of
    eight, has its rounds spread over the same span of time. `progress` is told where the set
    stands between rounds (`Progress`)."""
    per_round = [repeats // rounds + (1 if i < repeats % rounds else 0) for i in range(rounds)]
    per_round = [n for n in per_round if n > 0]
    out = [([], []) for _ in pairs]
    tell = _Teller(progress, per_round, len(pairs), clock, remeasure)
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
            round_s = time.perf_counter() - round_start
            if r < len(per_round) - 1:
                _pause_after_round(round_s, len(pairs), clock)
            tell.round_done(r, round_s)
    return out


class _Teller:
    """Tells `progress` where a set of rounds stands and how long it has left: the rounds left
    at the wall time per forward seen so far (the warm-up's, then the timed rounds'), each
    followed by the pause `_pause_after_round` would take (none after the last)."""

    def __init__(self, progress, per_round: list[int], configs: int, clock: str, remeasure: bool):
        self.progress, self.per_round, self.configs = progress, per_round, configs
        self.clock, self.remeasure = clock, remeasure
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
        left = 0.0
        for r in range(done, len(self.per_round)):
            round_s = self.per_round[r] * self.configs * forward_s
            last = r == len(self.per_round) - 1
            left += round_s + (0.0 if last else _pause_s(round_s, self.configs, self.clock))
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


def _pause_s(round_s: float, measured: int, clock: str) -> float:
    """The pause after a round of `measured` configs that took `round_s` (`_pause_after_round`)."""
    if clock == "cuda" or measured >= GROUP or round_s <= 0:
        return 0.0
    return min(PACE_MAX_S, round_s * (GROUP - measured) / measured)


def _pause_after_round(round_s: float, measured: int, clock: str) -> None:
    """Idle after a round of `measured` configs that took `round_s` of wall time, for the time
    the missing configs of a GROUP would have taken at the same load (at most PACE_MAX_S).

    Why: in a group, a config's rounds are spread over GROUP configs' worth of time, so they
    sample the machine (co-runners, the host's other tenants) at GROUP times as many moments as
    a lone config's rounds run back to back; a lone reading was the noisier one across
    processes (docs/explanation/latency.md). Idling, not measuring more, keeps the CPU cost. CPU only:
    an idle GPU lowers its clocks, and CUDA rounds are milliseconds long. Without pacing it
    sleeps 0: a yield, so the next round starts on a fresh time slice.
    """
    time.sleep(_pause_s(round_s, measured, clock))


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
    protocol, its rounds paced to a group's time span).

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
        dict with latency_ms (median of round minima), latency_p90_ms, latency_spread_ms (IQR), latency_min_ms,
        latency_device, latency_batch, latency_dtype, latency_channels_last, latency_repeats,
        latency_resolution ([H, W]), latency_remeasured (bool), latency_first_spread_ms (when
        re-measured), latency_stages_ms (when profiled), and the protocol: latency_clock
        ("thread_cpu", "wall" or "cuda"), latency_rounds, latency_protocol, latency_wall_ms
        (median wall time of the timed forwards), latency_cores (pinned cores or None).

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


def _timed_with_recheck(pairs, repeats: int, warmup: int, rounds: int, clock: str,
                        progress=None) -> list[dict]:
    """Per pair: {"timed": round times, "walls": wall ms, "first_spread": the first set's round
    range when its rounds disagreed and one more set was measured and pooled, else None}."""
    timings = _time_rounds(pairs, repeats, warmup, rounds, clock, progress)
    first = [_stats(timed) for timed, _ in timings]
    again = [i for i, st in enumerate(first) if st["round_range"] > SPREAD_REMEASURE * st["latency"]]
    more = _time_rounds([pairs[i] for i in again], repeats, min(warmup, 1), rounds, clock, progress,
                        remeasure=True) if again else []
    out = []
    for i, (timed, walls) in enumerate(timings):
        entry = {"timed": timed, "walls": walls, "first_spread": None}
        if i in again:
            extra_timed, extra_walls = more[again.index(i)]
            entry = {"timed": timed + extra_timed, "walls": walls + extra_walls,
                     "first_spread": first[i]["round_range"]}
        out.append(entry)
    return out


def _measure_group(items, *, device: str = "cpu", batch: int = 1, dtype: str = "fp32",
                   channels_last: bool = False, warmup: int = WARMUP, repeats: int = REPEATS,
                   threads: int | None = None, profile_stages: bool = False, resolution=None,
                   rounds: int = ROUNDS, pin: bool = True, progress=None) -> list[dict[str, Any]]:
    """The one protocol, for every caller: settings checked, allocator settled, threads set,
    models built, the measuring thread pinned, rounds timed (and re-timed when they disagree)."""
    cuda = _check_settings(device, dtype, batch, repeats, warmup, rounds)
    rounds = min(rounds, repeats)
    settle_large_blocks()
    with _pinned_threads(threads if not cuda else None), _cudnn_autotune(cuda):
        built = _build(items, device, dtype, channels_last, resolution, batch)
        n_threads = None if cuda else torch.get_num_threads()
        clock = "cuda" if cuda else ("thread_cpu" if n_threads == 1 else "wall")
        with _pinned_cores(n_threads if pin else None) as cores:
            timings = _timed_with_recheck([(m, x) for m, x, _ in built], repeats, warmup, rounds, clock,
                                          progress)
        common = {"latency_device": device_string(device, threads), "latency_batch": batch,
                  "latency_dtype": dtype, "latency_channels_last": bool(channels_last),
                  "latency_repeats": repeats, "latency_clock": clock, "latency_rounds": rounds,
                  "latency_protocol": _protocol_text(clock, len(items)), "latency_cores": cores}
        results = []
        for (model, x, res), timing in zip(built, timings):
            result = _result(timing) | common | {"latency_resolution": list(res)}
            if profile_stages:
                result["latency_stages_ms"] = _stage_times(model, x, min(repeats, STAGE_REPEATS), cuda)
            results.append(result)
    return results


def _protocol_text(clock: str, measured: int) -> str:
    """`latency_protocol`: the statistic, the clock, and how the rounds were spread over time."""
    text = f"{PROTOCOL}, {clock} clock"
    if measured > 1:
        text += f", rounds interleaved over {measured} configs"
    if clock != "cuda" and measured < GROUP:
        text += f", paced to {GROUP} configs' time"
    return text


def _result(timing: dict) -> dict[str, Any]:
    """The statistics of one config's timed forwards as result keys."""
    stats = _stats(timing["timed"])
    result = {"latency_remeasured": timing["first_spread"] is not None}
    if timing["first_spread"] is not None:
        result["latency_first_spread_ms"] = round(timing["first_spread"], 4)
    return result | {
        "latency_ms": round(stats["latency"], 4),
        "latency_p90_ms": round(stats["p90"], 4),
        "latency_spread_ms": round(stats["iqr"], 4),
        "latency_min_ms": round(stats["min"], 4),
        "latency_wall_ms": round(statistics.median(timing["walls"]), 4),
    }
