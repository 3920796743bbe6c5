"""Moved to `nas.latency.store`; this path re-exports it for one release."""

from nas.latency.store import *  # noqa: F401,F403
from nas.latency.store import (CACHE_ENV, STORE_FILE, LatencyCache, cache_root,  # noqa: F401
                               device_cache_dir, device_store, latency_key)
