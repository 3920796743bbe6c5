"""OverLoCK (Lou & Yu, CVPR 2025), parameterised for architecture search.

    >>> import overlock
    >>> model = overlock.create_model("overlock_t", num_classes=10)
    >>> model = overlock.create_model(overlock.OverLoCKConfig(region_count=5))
"""

from .config import PRESETS, ConfigError, OverLoCKConfig
from .factory import create_model, list_models, resolve_config
from .model import OverLoCK
from .ops import na2d_av

__all__ = ["OverLoCK", "OverLoCKConfig", "ConfigError", "PRESETS", "create_model", "list_models",
           "resolve_config", "na2d_av"]
