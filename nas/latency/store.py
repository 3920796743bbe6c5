"""The latency store: measured latencies by key, in JSON files that outlive a study.

    >>> from nas.latency.store import device_store, measurement_settings, store_key
    >>> settings = measurement_settings(device_name, batch=1, dtype="fp32", channels_last=False,
    ...                                 threads=1)
    >>> device_store(device_name).get(store_key(config, settings))              # doctest: +SKIP

`measurement_settings` builds the settings a reading (and a latency model fitted on readings) is
valid for, and `store_key` the key a reading is stored under at those settings: the one recipe
for the study's pricer, its latency model and `latency fit`, so what one writes the others find.

Torch-free on purpose: the driver, the reports and `latency fit`'s bookkeeping read and write the
store without importing torch (measuring is `nas.latency.measure`'s job, and only it needs torch).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path

from nas.util import write_atomic

from .protocol import VERSION

__all__ = ["measurement_settings", "store_key", "latency_key", "LatencyCache", "cache_root",
           "device_cache_dir", "device_store", "nominal_yardstick_ms", "CACHE_ENV", "STORE_FILE",
           "YARDSTICK_FILE"]


def measurement_settings(device_name: str, *, batch: int, dtype: str, channels_last: bool,
                         threads, resolution=None, protocol: int = VERSION) -> dict:
    """The settings readings are made at: {device, resolution, batch, dtype, channels_last,
    threads, protocol}, the form `nas.latency.model.fit` takes and a model file records.

    `device_name` is the device string (`nas.latency.device.device_string`); `resolution` is
    the one every reading shares ([H, W]), or None for each config's own; `protocol` the measuring
    protocol's version (`nas.latency.protocol`; today's unless a reading of an older one is meant).
    """
    if isinstance(resolution, int):
        resolution = [resolution, resolution]
    elif resolution is not None:
        resolution = [int(r) for r in resolution]
    return {"device": device_name, "resolution": resolution, "batch": batch, "dtype": dtype,
            "channels_last": channels_last, "threads": threads, "protocol": int(protocol)}


def store_key(config, settings: dict) -> str:
    """The key `config`'s reading at `settings` (`measurement_settings`) is stored under; the
    resolution is the settings', else the config's own. Settings without a protocol (a model file
    fitted before versions were recorded) are protocol 1's."""
    return latency_key(config, settings["device"], settings["batch"], settings.get("resolution"),
                       settings["dtype"], settings["channels_last"], settings.get("protocol", 1))


def latency_key(config, device_name: str, batch: int = 1, resolution=None, dtype: str = "fp32",
                channels_last: bool = False, protocol: int = VERSION) -> str:
    """Cache key of one measurement: architecture, device string, batch, resolution, dtype, format,
    and the measuring protocol's version (`nas.latency.protocol`). Protocol 1's keys carry no
    version (they were written before there was one), so what an earlier study stored is found
    under the key it was stored under, and never by a lookup for today's protocol.

    `config` is an `OverLoCKConfig` (keyed by `architecture_hash()`: the network, not the
    resolution it is priced at; `resolution` defaults to the config's) or a hash string (then
    `resolution` is required).
    """
    if isinstance(config, str):
        arch = config
        if resolution is None:
            raise ValueError("latency_key: resolution is required when config is a hash")
    else:
        arch = config.architecture_hash()
        if resolution is None:
            resolution = config.resolution
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    h, w = (int(r) for r in resolution)
    return (f"{arch}|{device_name}|batch={int(batch)}|res={h}x{w}"
            f"|dtype={dtype}|channels_last={int(bool(channels_last))}"
            + (f"|protocol={int(protocol)}" if int(protocol) != 1 else ""))


class LatencyCache:
    """Latency results by `latency_key`, in one JSON file (atomic writes, safe across processes).

        >>> cache = LatencyCache("run/latency_cache.json")
        >>> key = latency_key(config, device_string("cpu", 2), 1, None, "fp32", False)
        >>> cache.get(key) or cache.put(key, measure_latency(config, threads=2))   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._data: dict[str, dict] | None = None

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError):
            return {}  # a corrupt cache only costs re-measurement; the file is rewritten on put

    def get(self, key, *key_parts) -> dict | None:
        """The stored result for `key`, or None (re-reads the file when the key is not known yet).

        `get(config, device_name, batch, resolution, dtype, channels_last)` is the same as
        `get(latency_key(config, device_name, batch, resolution, dtype, channels_last))`.
        """
        if key_parts:
            key = latency_key(key, *key_parts)
        if self._data is None or key not in self._data:
            self._data = self._read()
        value = self._data.get(key)
        return dict(value) if value is not None else None

    def put(self, key, *args) -> dict:
        """Store `result` under `key` (merging with what other processes wrote); returns it.

        `put(key, result)`, or `put(config, device_name, batch, resolution, dtype, channels_last,
        result)` with the key built by `latency_key`.
        """
        if len(args) == 1:
            result = args[0]
        elif len(args) == 6:
            key, result = latency_key(key, *args[:5]), args[5]
        else:
            raise TypeError("put(key, result) or put(config, device_name, batch, resolution, dtype, "
                            "channels_last, result)")
        self.put_many({key: result})
        return result

    def put_many(self, results: dict[str, dict]) -> None:
        """Store several results by key in one read and one write of the file (a store shared by
        every study on a device grows: a put per result rewrote it once per reading)."""
        with self._locked() as data:
            data.update((key, dict(result)) for key, result in results.items())
            self._write(data)

    def setdefault(self, key: str, result: dict) -> dict:
        """The stored result for `key`; when there is none, `result`, stored. Atomic across
        processes: of two that race, both get the first one's."""
        with self._locked() as data:
            if key not in data:
                data[key] = dict(result)
                self._write(data)
            return dict(data[key])

    @contextlib.contextmanager
    def _locked(self):
        """The file's data, read under an exclusive lock that other processes' writers wait on
        (changes are written with `_write` inside the block)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                self._data = data
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, data: dict) -> None:
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True), fsync=True)

    def __len__(self) -> int:
        self._data = self._read()
        return len(self._data)

    def entries(self) -> dict[str, dict]:
        """Every stored result by key (a fresh read of the file)."""
        self._data = self._read()
        return {k: dict(v) for k, v in self._data.items()}

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


# ------------------------------------------------------------------------- per-device store
CACHE_ENV = "OVERLOCK_NAS_CACHE"
STORE_FILE = "latencies.json"
YARDSTICK_FILE = "yardstick.json"


def cache_root() -> Path:
    """Where latencies outlive a study: `$OVERLOCK_NAS_CACHE`, else `~/.cache/overlock-nas`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "overlock-nas"


def device_cache_dir(device_name: str) -> Path:
    """`cache_root()/latency/<slug>-<hash>` for one device string (`device_string()`): the folder
    that every study measuring on that device shares (latency store, latency models).

        >>> device_cache_dir("cpu: AMD EPYC x1 threads, torch 2.13.0, na2d_av pure PyTorch").name
        'cpu-amd-epyc-x1-threads-torch-2-13-0-na2d-av-pure-pytorch-131baff5'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")[:80] or "device"
    digest = hashlib.sha256(device_name.encode()).hexdigest()[:8]
    return cache_root() / "latency" / f"{slug}-{digest}"


def device_store(device_name: str) -> "LatencyCache":
    """The latency store of one device, read first by every study on it (safe under concurrent
    writers: `LatencyCache` merges under an fcntl lock and replaces the file atomically)."""
    folder = device_cache_dir(device_name)
    folder.mkdir(parents=True, exist_ok=True)
    label = folder / "device.txt"
    if not label.exists():      # what the folder is for, for humans (the slug is lossy)
        with contextlib.suppress(OSError):
            write_atomic(label, device_name + "\n")
    return LatencyCache(folder / STORE_FILE)


def nominal_yardstick_ms(device_name: str, dtype: str, channels_last: bool, measured_ms: float,
                         when: str, protocol: int = VERSION) -> dict:
    """The yardstick's nominal time on a device (`nas.latency.protocol`, version 2): the first
    time ever measured there at this dtype and memory format, kept in the device's folder
    (`yardstick.json`), else `measured_ms`, which becomes it (with when it was measured and the
    load average then). Returns {"ms", "measured_at", "load"}.

    Every calibrated reading on the device is scaled by this one number, so it is never replaced:
    deleting the file puts later readings on another scale than the store's.
    """
    folder = device_store(device_name).path      # the device's folder, made and labelled
    key = f"v{int(protocol)}|dtype={dtype}|channels_last={int(bool(channels_last))}"
    load = "/".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else None
    return LatencyCache(Path(folder).parent / YARDSTICK_FILE).setdefault(
        key, {"ms": float(measured_ms), "measured_at": when, "load": load})
