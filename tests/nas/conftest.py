"""A local Ray shared by a test module (the engine uses an already started Ray, not its own)."""

import os
import sys

import pytest

from nas_testing import HERE


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # loopback only
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    finally:
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    assert str(HERE) in sys.path   # workers get the driver's import paths from the executor
    yield
    ray.shutdown()
