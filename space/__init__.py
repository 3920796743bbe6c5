"""The OverLoCK design space: configs, declarative spaces, sampling and the analytic cost model.

    >>> import space
    >>> s = space.load_space("studies/spaces/xt_t.yaml")
    >>> config = s.sample(seed=0)
    >>> space.complexity(config).flops      # multiply-adds, fvcore convention
"""

from overlock.config import ConfigError, OverLoCKConfig

from .cost import Cost, complexity, macs_label
from .feasibility import (FeasibleFraction, feasible_fraction, is_feasible, sample_feasible,
                          violations)
from .spec import Dimension, SearchSpace, SpaceError, load_space

__all__ = ["OverLoCKConfig", "ConfigError", "Cost", "complexity", "macs_label", "SearchSpace",
           "Dimension", "SpaceError", "load_space", "FeasibleFraction", "feasible_fraction",
           "is_feasible", "sample_feasible", "violations"]
