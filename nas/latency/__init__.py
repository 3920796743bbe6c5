"""Latency: measured once, stored for every study on the device, predicted before measuring.

The rooms, in the order data flows through them:

- `device`: which device a reading is made on - `resolve_device` (`device: auto`, decided in the
  process that measures) and `device_string` (the name a device's store is kept under).
- `protocol`: the measuring protocol's settings, version and yardstick, and a reading's
  uncertainty (torch-free: every reading and store key names its version).
- `measure`: the one measuring protocol (`measure_latency`, `measure_latencies`; torch).
- `store`: readings by key in JSON files that outlive a study - `measurement_settings` (what a
  reading is valid for) and `store_key` (where it is kept), `device_store`, `LatencyCache`.
- `model`: a per-device latency model fitted on stored readings (`fit`, `load`, `model_path`).
- `predictor`: a study's model at work: spare measuring configs far over the latency budget.
- `_malloc`: glibc's allocator thresholds (fixed before measuring; also used by decode workers).

Only `measure` imports torch at import time; this package's own names are the torch-free ones,
so the driver and the reports can read the store without it. Nothing here imports the search,
the engine or the commands.
"""

from .device import device_string, resolve_device
from .store import (LatencyCache, device_cache_dir, device_store, latency_key, measurement_settings,
                    store_key)

__all__ = ["device_string", "resolve_device", "LatencyCache", "device_cache_dir", "device_store",
           "latency_key", "measurement_settings", "store_key"]
