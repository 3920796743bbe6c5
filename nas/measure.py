"""Moved to `nas.latency.measure` (the device string to `nas.latency.device`, the store to
`nas.latency.store`); this path re-exports them for one release."""

from nas.latency.device import _cpu_name, _cuda_driver, device_string  # noqa: F401
from nas.latency.measure import *  # noqa: F401,F403
from nas.latency.measure import (DTYPES, GROUP, PROTOCOL, REPEATS, ROUNDS,  # noqa: F401
                                 STAGE_REPEATS, WARMUP, _cudnn_autotune,
                                 _measure_group, _stats, _time_rounds, measure_latencies,
                                 measure_latency, settle_large_blocks)
from nas.latency.store import (CACHE_ENV, STORE_FILE, LatencyCache, cache_root,  # noqa: F401
                               device_cache_dir, device_store, latency_key)
