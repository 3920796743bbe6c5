"""glibc's allocator thresholds, for the two places that need a fixed policy.

By default glibc adapts: each time a block allocated with mmap (128 KiB or more at first) is freed,
it raises its mmap threshold to that block's size, up to 32 MiB, and the heap trim threshold to
twice that. A process therefore behaves one way while it is young and another once it has freed a
few large tensors. Two callers want one behaviour from the start:

- decode workers (`nas.data.stream`): large blocks always mmapped, so a freed decoded image goes
  back to the system (`release_large_blocks`);
- latency measurement (`nas.latency.measure`): the adapted state a long-running process
  reaches, so the first configs a process measures are not timed with page faults the later
  ones never see (`settle_large_blocks`).

Setting either threshold turns the adaptation off for the rest of the process. On another C
library these calls do nothing and say so (False).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1   # mallopt parameters, glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2 ** 20   # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(param, value))
    except (OSError, AttributeError):   # not glibc: its allocator has its own policy
        return False


def release_large_blocks(threshold: int = 128 * 1024) -> bool:
    """Allocate every block of `threshold` bytes or more with mmap, and unmap it when freed."""
    return _mallopt(M_MMAP_THRESHOLD, threshold)


_settled = False


def settle_large_blocks() -> bool:
    """Fix the thresholds where glibc's adaptation ends (mmap 32 MiB, trim 64 MiB); once a process."""
    global _settled
    if not _settled:
        _settled = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and _mallopt(
            M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX)
    return _settled
