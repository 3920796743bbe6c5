"""The feasible fraction of a space under its budgets, and constraint-aware sampling (what a
budget is and what a config breaks: `space.budgets`)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from overlock.config import OverLoCKConfig

from .budgets import EXACT_METRICS, config_violations, exact_budgets, within
from .spec import SearchSpace, SpaceError

PRICED_METRICS = EXACT_METRICS       # only budgets known before training are checked here


@dataclass(frozen=True)
class FeasibleFraction:
    fraction: float
    exact: bool           # True: by enumeration; False: estimated by sampling
    evaluated: int
    ci95: tuple[float, float]

    def describe(self) -> str:
        if self.exact:
            return f"{self.fraction:.1%} (exact, {self.evaluated} configs enumerated)"
        lo, hi = self.ci95
        return (f"{self.fraction:.1%} (estimated from {self.evaluated} random samples, "
                f"95% CI {lo:.1%}-{hi:.1%})")


priced_budgets = exact_budgets       # the budgets the analytic cost model can check
violations = config_violations       # {metric: value - budget} of a config's exact budgets


def is_feasible(config: OverLoCKConfig, budgets: dict) -> bool:
    return within(config_violations(config, budgets))


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def feasible_fraction(space: SearchSpace, budgets: dict, max_enumerate: int = 20_000,
                      samples: int = 2_000, seed: int = 0) -> FeasibleFraction:
    """Fraction of the space within `budgets`, under the space's sampling distribution (each
    decision uniform, as `SearchSpace.sample` and a random sampler draw): exact by enumeration
    (each config weighted by its probability) when the space has at most `max_enumerate` points,
    else estimated from `samples` samples with a 95% Wilson interval."""
    budgets = priced_budgets(budgets)
    size = space.size()
    if size is not None and size <= max_enumerate:
        n, mass, ok = 0, 0.0, 0.0
        for config, p in space.enumerate_weighted():
            n += 1
            mass += p
            ok += p * is_feasible(config, budgets)
        fraction = ok / mass if mass else 0.0
        return FeasibleFraction(fraction, True, n, (fraction, fraction))
    rng = random.Random(seed)
    ok = 0
    for _ in range(samples):
        ok += is_feasible(space.sample(rng), budgets)
    return FeasibleFraction(ok / samples, False, samples, _wilson(ok, samples))


def sample_feasible(space: SearchSpace, budgets: dict, seed: int | random.Random | None = None,
                    max_tries: int = 10_000) -> OverLoCKConfig:
    """A uniformly drawn config within the budgets (rejection sampling)."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    for _ in range(max_tries):
        config = space.sample(rng)
        if is_feasible(config, budgets):
            return config
    raise SpaceError(f"no config within budgets {priced_budgets(budgets)} in {max_tries} samples "
                     f"of space {space.name!r}: loosen a budget or narrow the space")
