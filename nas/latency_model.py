"""Moved to `nas.latency.model`; this path re-exports it for one release."""

from nas.latency.model import *  # noqa: F401,F403
from nas.latency.model import (FORMAT, KINDS, MIN_MEASUREMENTS, RIDGE_GRID, _flops_features,  # noqa: F401
                               _held_out_unselected, _loo, _solve)
