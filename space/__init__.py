"""The OverLoCK design space: configs, declarative spaces, sampling and the analytic cost model.

    >>> import space
    >>> s = space.load_space("studies/spaces/xt_t.yaml")
    >>> config = s.sample(seed=0)
    >>> space.complexity(config).flops      # multiply-adds, fvcore convention

Names are loaded on first use (PEP 562): the cost model imports the model's blocks (torch), and
`space.budgets`, which `nas.storage` and the search driver read at import, must not.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "OverLoCKConfig": "overlock.config", "ConfigError": "overlock.config",
    "Cost": "space.cost", "complexity": "space.cost", "macs_label": "space.cost",
    "FeasibleFraction": "space.feasibility", "feasible_fraction": "space.feasibility",
    "is_feasible": "space.feasibility", "sample_feasible": "space.feasibility",
    "violations": "space.feasibility",
    "Dimension": "space.spec", "SearchSpace": "space.spec", "SpaceError": "space.spec",
    "load_space": "space.spec",
}
_SUBMODULES = ("budgets", "cost", "feasibility", "spec")

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'space' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
