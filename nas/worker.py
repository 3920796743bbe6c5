"""What runs inside a Ray worker: build an evaluator, score one config, measure latencies.

The driver (`nas.engine`) never imports torch for these; it submits `nas.worker:run_evaluation`
and `nas.worker:run_latencies` by name through `nas.executor`. Every function here returns a dict
and never raises for a trial's own error: `{"ok": False, "reason": one line, "error": traceback}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from typing import Any

from .executor import resolve

_EVALUATOR_CACHE: dict[str, Any] = {}


def make_evaluator(name: str, settings: dict):
    """A built-in evaluator by name, or `module:attribute` called with the settings dict."""
    if ":" in name:
        return resolve(name)(settings)
    from nas.evaluators import get_evaluator

    return get_evaluator(name, settings)


def _cached_evaluator(name: str, settings: dict):
    key = json.dumps([name, settings], sort_keys=True, default=str)
    if key not in _EVALUATOR_CACHE:
        _EVALUATOR_CACHE[key] = make_evaluator(name, settings)
    return _EVALUATOR_CACHE[key]


def _resolve_device(device: str) -> str:
    """The torch device this worker uses for the study's `device` (auto, cpu, cuda, cuda:N):
    `auto` decided here (`nas.latency.device.resolve_device`), `cuda:N` as Ray numbers it."""
    from nas.latency.device import resolve_device

    local = resolve_device(device)
    return visible_cuda(local) if local.startswith("cuda") else local


def visible_cuda(device: str, visible: str | None = None) -> str:
    """`cuda:N` as this process sees it. Ray gives a GPU worker its own GPU(s) through
    `CUDA_VISIBLE_DEVICES`, renumbered from 0: physical GPU N is `cuda:<its place in that list>`,
    and a worker that Ray gave another GPU uses its own, `cuda:0` (GPU N belongs to someone else).
    Without the variable every GPU is visible under its own number, so `cuda:N` stays.

        >>> visible_cuda("cuda:3", visible="3")
        'cuda:0'
        >>> visible_cuda("cuda:3", visible="1,3")
        'cuda:1'
        >>> visible_cuda("cuda:3", visible="5")
        'cuda:0'
    """
    index = device.partition(":")[2]
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not index or visible is None:
        return device
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if not ids:
        return device           # no GPU visible: torch says so when the device is used
    return f"cuda:{ids.index(index)}" if index in ids else "cuda:0"


def describe_device(device: str, threads: int | None) -> dict:
    """Runs on the measuring worker: which device its latencies are measured on.

    Returns {"ok", "device" (the torch device used here), "device_string" (the latency store's
    key, `nas.latency.device.device_string`), "node" (Ray node id), "host", "visible" (CUDA_VISIBLE_DEVICES)};
    only this process touches CUDA, never the driver.
    """
    try:
        from nas.latency.device import device_string

        local = _resolve_device(device)
        if local.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"device={device!r} but CUDA is not available on "
                                 f"{socket.gethostname()}")
        text = device_string(local, threads)
    except Exception as e:  # noqa: BLE001
        return _failure(e)
    return {"ok": True, "device": local, "device_string": text, "node": _node_id(),
            "host": socket.gethostname(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside Ray
        return None


def _failure(e: BaseException) -> dict:
    """{ok: False, reason, error} for an exception raised by trial code."""
    reason = getattr(e, "reason", None)
    text = " ".join(str(e).split())
    if not reason:
        if isinstance(e, MemoryError) or "out of memory" in text.lower() \
                or "can't allocate memory" in text.lower():
            reason = f"out of memory: {text[:200]}"
        else:
            reason = f"{type(e).__name__}: {text[:240]}" if text else type(e).__name__
    return {"ok": False, "reason": reason,
            "error": "".join(traceback.format_exception(e))[-4000:]}


def run_evaluation(evaluator: str, settings: dict, config: dict, *, budget_epochs: int | None,
                   device: str, seed: int, weights_name: str,
                   resume_files: dict[str, tuple[str, bytes]] | None = None) -> dict:
    """Runs in a Ray worker: score one config. Never raises for trial errors.

    Files the evaluator writes (weights, optimiser state) come back as bytes, so workers need no
    shared filesystem; `resume_files` brings them back for the next rung.
    """
    from overlock import OverLoCKConfig

    work = tempfile.mkdtemp(prefix="overlock-nas-")
    try:
        try:
            ev = _cached_evaluator(evaluator, settings)
            resume_from = None
            for key, (name, data) in (resume_files or {}).items():
                path = os.path.join(work, name)
                with open(path, "wb") as fh:
                    fh.write(data)
                if key == "weights":
                    resume_from = path
            t0 = time.perf_counter()
            result = ev.evaluate(OverLoCKConfig.from_dict(config), budget_epochs=budget_epochs,
                                 device=_resolve_device(device), seed=seed, workdir=work,
                                 resume_from=resume_from, weights_name=weights_name)
            wall = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - every trial error becomes a FAIL record
            return _failure(e)
        out = {k: v for k, v in dict(result).items() if k not in ("weights", "state")}
        out.setdefault("wall_s", wall)
        files = {}
        for key in ("weights", "state"):
            path = result.get(key)
            if path and os.path.exists(path):
                with open(path, "rb") as fh:
                    files[key] = (os.path.basename(path), fh.read())
        out.update(ok=True, files=files, host=socket.gethostname())
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_latency(config: dict, *, device: str, latency: dict, num_threads: int | None) -> dict:
    """Runs on the measuring worker (which holds its GPU or cores alone): one config's latency."""
    return run_latencies([config], device=device, latency=latency, num_threads=num_threads)[0]


def run_latencies(configs: list[dict], *, device: str, latency: dict, num_threads: int | None,
                  limit_s: float | None = None) -> list[dict]:
    """Runs on the measuring worker: the latencies of the configs queued for it, measured together
    (`measure_latencies`: their rounds interleaved), one result per config, in their order.

    A config that fails (it raises, runs out of memory, or the set runs past its time) does not
    cost the others their readings: the set is halved and each half measured again, until the
    failing config is measured alone and fails with its own one-line reason. `limit_s` bounds the
    whole call (the driver's limit, `nas.search.pricing.measuring_limit_s`; default none); each
    try gets `latency.timeout_s` per config in it, within what is left. With `profile_stages` each config is measured alone (the breakdown is
    per config).
    """
    from overlock import OverLoCKConfig

    per_config = latency.get("timeout_s")
    deadline = time.monotonic() + limit_s if limit_s else None
    parsed, out = [], [None] * len(configs)
    for i, config in enumerate(configs):
        try:
            parsed.append((i, OverLoCKConfig.from_dict(config)))
        except Exception as e:  # noqa: BLE001
            out[i] = _failure(e)
    groups = [[p] for p in parsed] if latency.get("profile_stages") else [parsed]
    for group in groups:
        for i, result in _measured(group, device, latency, num_threads, per_config, deadline):
            out[i] = result
    return out


def _measured(items: list, device: str, latency: dict, num_threads: int | None,
              per_config: float | None, deadline: float | None) -> list[tuple[int, dict]]:
    """(index, result) of each (index, config) of `items`, measured together; halved on failure."""
    if not items:
        return []
    seconds = None
    if per_config:
        seconds = per_config * len(items)
        if deadline is not None:
            seconds = min(seconds, deadline - time.monotonic())
        if seconds <= 0:
            return [(i, _failure(Timeout(f"timeout: no time left to measure it (latency.timeout_s "
                                         f"{per_config:g} per config)"))) for i, _ in items]
    what = "measurement" if len(items) == 1 else f"measurement of {len(items)} configs"
    try:
        t0 = time.perf_counter()
        with time_limit(seconds, what):
            readings = _measure([c for _, c in items], device, latency, num_threads)
        wall = round(time.perf_counter() - t0, 3)
    except Exception as e:  # noqa: BLE001
        if len(items) == 1:
            return [(items[0][0], _failure(e))]
        half = len(items) // 2
        return (_measured(items[:half], device, latency, num_threads, per_config, deadline)
                + _measured(items[half:], device, latency, num_threads, per_config, deadline))
    return [(i, {"ok": True, **r, "latency_wall_s": wall}) for (i, _), r in zip(items, readings)]


def _measure(configs: list, device: str, latency: dict, num_threads: int | None) -> list[dict]:
    from nas.latency.measure import measure_latencies, measure_latency

    settings = dict(device=_resolve_device(device), batch=latency["batch"], dtype=latency["dtype"],
                    channels_last=latency["channels_last"], warmup=latency["warmup"],
                    repeats=latency["repeats"], threads=num_threads)
    if latency.get("profile_stages"):
        return [measure_latency(c, profile_stages=True, **settings) for c in configs]
    readings = measure_latencies(configs, **settings)
    if len(readings) != len(configs):
        raise RuntimeError(f"measure_latencies returned {len(readings)} readings for {len(configs)} configs")
    return readings


def warm(seconds: float = 0.2) -> int:
    """Runs in a training worker before the first trial: import what every trial needs, so the
    slots start together instead of one process start-up apart. Returns the worker's pid."""
    import torch  # noqa: F401

    import overlock  # noqa: F401
    import space  # noqa: F401

    time.sleep(seconds)     # held a moment, so concurrent warm-ups land in distinct processes
    return os.getpid()


class Timeout(Exception):
    """Raised inside the work that ran past its time limit; `reason` is the one-line record."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise `Timeout` in this (main) thread once `seconds` of wall clock have passed (SIGALRM
    timer; Python code and torch ops between kernels are interrupted, the worker lives on). Off
    the main thread or without `seconds` it only runs the body; the driver's own timer remains."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise Timeout(f"timeout: {what} ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
