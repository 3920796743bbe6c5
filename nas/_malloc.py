"""Moved to `nas.latency._malloc`; this path re-exports it for one release."""

from nas.latency._malloc import release_large_blocks, settle_large_blocks  # noqa: F401
