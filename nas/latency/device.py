"""Which device a latency is measured on: `device: auto` resolved, and the device string.

    >>> from nas.latency.device import device_string, resolve_device
    >>> resolve_device("auto")                      # doctest: +SKIP
    'cpu'
    >>> device_string("cpu", threads=2)             # doctest: +SKIP
    'cpu: AMD EPYC x2 threads, torch 2.13.0, na2d_av pure PyTorch'

The device string names the latency store a reading goes into (`nas.latency.store`), so every
caller - `profile`, `latency fit`, the study's measuring worker - must build it here. Torch is
imported only inside the functions: the driver imports this module without it.
"""

from __future__ import annotations

import platform

__all__ = ["resolve_device", "device_string"]


def resolve_device(device: str) -> str:
    """The torch device `device` stands for in this process: "auto" is "cuda" when this process
    sees a CUDA device, else "cpu"; "cpu", "cuda" and "cuda:N" are returned as given.

    The one place `auto` is decided (the measuring worker, a training worker, `profile`, `latency
    fit`): it runs where the work runs, never in the driver, which may have no GPU.
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_string(device: str = "cpu", threads: int | None = None) -> str:
    """What latencies on `device` are measured on, e.g. "cpu: AMD EPYC x2 threads, torch 2.13.0".

    CUDA: "cuda: NVIDIA H100 80GB HBM3, driver 550.54, CUDA 12.4, torch 2.13.0". Every string ends
    with the aggregation op's implementation (a pure-PyTorch na2d_av, not NATTEN).
    """
    import torch

    dev = torch.device(device)
    torch_version = torch.__version__.split("+")[0]
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        driver = _cuda_driver()
        text = f"cuda: {name}, driver {driver}, CUDA {torch.version.cuda}, torch {torch_version}"
    else:
        n = threads or torch.get_num_threads()
        text = f"{dev.type}: {_cpu_name()} x{n} threads, torch {torch_version}"
    return f"{text}, na2d_av pure PyTorch"


def _cuda_driver() -> str:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"
