"""The OverLoCK design space: configs, declarative spaces, sampling and the analytic cost model."""

from overlock.config import ConfigError, OverLoCKConfig

from .cost import Cost, complexity, macs_label

__all__ = ["OverLoCKConfig", "ConfigError", "Cost", "complexity", "macs_label"]
