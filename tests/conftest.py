import os
import sys

import pytest
import torch

# One intra-op thread: tests run tiny models, and on 2 shared cores OpenMP barriers under
# oversubscription make small ops ~100x slower.
torch.set_num_threads(int(os.environ.get("OVERLOCK_TEST_THREADS", "1")))

# Commands the tests run by name (`overlock-nas`, `ray` in docs/how-to/cluster.md's blocks) come from the
# environment running the tests (e.g. the project's .venv), even when it was not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

from overlock import OverLoCKConfig  # noqa: E402

TINY = dict(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1), widths=(16, 32, 64, 64),
            focus_heads=(1, 1), head_width=64, reparam_kernels=(5, 5, 7, 7), dynamic_kernels=(7, 5),
            small_kernel=3, region_count=3, resolution=(64, 64), num_classes=10)


@pytest.fixture
def tiny_config() -> OverLoCKConfig:
    return OverLoCKConfig(**TINY)


@pytest.fixture(autouse=True)
def _latency_store(tmp_path_factory, monkeypatch):
    """Every test gets its own per-device latency store (never the user's ~/.cache/overlock-nas)."""
    monkeypatch.setenv("OVERLOCK_NAS_CACHE", str(tmp_path_factory.mktemp("overlock-nas-cache")))
