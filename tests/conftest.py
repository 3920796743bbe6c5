import os

import pytest
import torch

# Two cores: keep intra-op threads predictable for every test.
torch.set_num_threads(int(os.environ.get("OVERLOCK_TEST_THREADS", "2")))

from overlock import OverLoCKConfig  # noqa: E402

TINY = dict(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1), widths=(16, 32, 64, 64),
            focus_heads=(1, 1), head_width=64, reparam_kernels=(5, 5, 7, 7), dynamic_kernels=(7, 5),
            small_kernel=3, region_count=3, resolution=(64, 64), num_classes=10)


@pytest.fixture
def tiny_config() -> OverLoCKConfig:
    return OverLoCKConfig(**TINY)
