"""The proposal contract: what a proposer hands the driver, how it prices a draw, and why a draw
is rejected. A proposer (`nas.search.proposals.ShadowProposer`, `nas.search.frontier`) imports
this module, never another proposer; the factory (`nas.search.proposals.make_proposer`) imports
the proposers.

- `Proposal`: the params of the next trial, the config they build, its exact cost, and the draws
  rejected before it (per reason).
- `Pricer`: a config's exact cost (`space.complexity`, cached) and the budget it breaks, if any
  (`space.budgets`), then its latency checks (`nas.search.pricing.LatencyPricer.for_proposals`).
- the reasons a draw is rejected for (recorded per trial in `rejected_draws`, docs/storage.md),
  `ProposalError` (no config within the budgets) and the limits on drawing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from optuna.distributions import BaseDistribution

from nas._optuna import CONSTRAINTS_KEY
from space.budgets import EXACT_METRICS, broken, violations

# exact budget -> the reason a draw over it is rejected for
REASONS = {"flops": "flops", "flops_paper": "flops", "params": "params", "memory_mb": "memory"}
LATENCY_REASON = "latency_predicted"    # the latency model is sure it is over the budget
STORED_LATENCY_REASON = "latency_stored"   # measured over it on this device by an earlier study
MEASURED_LATENCY_REASON = "latency_measured"   # measured over it just now, before it was a trial
INVALID_REASON = "invalid"               # the space's rules refused the combination drawn
MAX_UNIFORM_DRAWS = 20_000               # uniform draws for one trial before giving up

__all__ = ["EXACT_METRICS", "INVALID_REASON", "LATENCY_REASON", "MAX_UNIFORM_DRAWS",
           "MEASURED_LATENCY_REASON", "Pricer", "Proposal", "ProposalError", "REASONS",
           "STORED_LATENCY_REASON", "count"]


class ProposalError(RuntimeError):
    """No config within the budgets could be drawn; the message is one line for the user."""


@dataclass
class Proposal:
    """The params of the next trial, the config they build, and what was rejected before it."""

    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    config: Any
    metrics: dict[str, float]
    rejected: dict[str, int] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)   # copied onto the real trial
    shadow_trial: Any = None     # the shadow study's RUNNING trial it was drawn as


# ------------------------------------------------------------------------------------- pricing
class Pricer:
    """Prices a config exactly and says which budget, if any, it breaks.

    Args:
        budgets: {metric: budget} in the study's order (the order constraints are stored in).
        latency_screen: `config -> (reason, latency ms)` when the config is known to be over the
            latency budget before it is measured: `latency_predicted` (the latency model's
            prediction less its margin is above it) or `latency_stored` (a latency measured on
            this device by an earlier study); else None.
        latency_confirm: the same for the one config about to become a trial, which may measure
            it first (`latency_measured`, `latency.measure_first`); called by `confirm`.
        latency_odds: `config -> probability` that the config is within the latency budget, by
            what is known before measuring it (`frontier` weighs its candidates by it).
        latency_prefetch: `configs -> [(config, (reason, ms))]`: of a proposer's candidates,
            best first, those `latency_confirm` would measure one at a time, measured together
            now (`latency.measure_first`, up to 8); called by `prefetch`.
    """

    def __init__(self, budgets: dict[str, float], latency_screen: Callable | None = None,
                 latency_confirm: Callable | None = None, latency_odds: Callable | None = None,
                 latency_prefetch: Callable | None = None):
        self.budgets = dict(budgets)
        self.latency_screen = latency_screen
        self.latency_confirm = latency_confirm
        self.latency_prefetch = latency_prefetch
        self._latency_odds = latency_odds
        self._cache: dict[str, dict] = {}
        self.rejected_hashes: set[str] = set()     # architectures found over a budget
        # hash -> (reason, ms, config) of the ones rejected on their latency (benchmarks check them)
        self.latency_rejections: dict[str, tuple] = {}

    def metrics(self, config) -> dict[str, float]:
        """flops, flops_paper, params, memory_mb of `config` (cached by its hash)."""
        key = config.config_hash()
        found = self._cache.get(key)
        if found is None:
            import space

            found = self._cache[key] = {k: float(v) for k, v in
                                        space.complexity(config).as_metrics().items()}
        return found

    def judge(self, config) -> tuple[str | None, dict[str, float], dict[str, float]]:
        """(reason or None, {budget: value - budget} of the values known, metrics)."""
        metrics = self.metrics(config)
        known = violations(metrics, self.budgets)
        over = broken(known)
        if over:
            self.rejected_hashes.add(config.config_hash())
            return REASONS[over[0]], known, metrics
        if self.latency_screen is not None and "latency_ms" in self.budgets:
            reason = self._over_latency(config, self.latency_screen(config), known)
            if reason is not None:
                return reason, known, metrics
        return None, known, metrics

    def _over_latency(self, config, found: tuple | None, known: dict[str, float]) -> str | None:
        """The reason of `found` ((reason, ms) from a latency check) when it is over the latency
        budget, recorded as a rejection (with its excess in `known`); else None."""
        if found is None or found[1] <= self.budgets["latency_ms"]:
            return None
        self.rejected_hashes.add(config.config_hash())
        self.latency_rejections[config.config_hash()] = (found[0], float(found[1]), config)
        known["latency_ms"] = float(found[1]) - self.budgets["latency_ms"]
        return found[0]

    def latency_odds(self, config) -> float:
        """The probability that `config` is within the latency budget (1.0 without one)."""
        if self._latency_odds is None or "latency_ms" not in self.budgets:
            return 1.0
        return float(self._latency_odds(config))

    def confirm(self, config, known: dict[str, float]) -> str | None:
        """The last check of a config `judge` accepted, before it becomes a trial: its latency
        known or measured now (`latency_confirm`). The reason when it is over the latency budget
        (then `known` gets its excess), else None."""
        if self.latency_confirm is None or "latency_ms" not in self.budgets:
            return None
        return self._over_latency(config, self.latency_confirm(config), known)

    def prefetch(self, configs: list) -> dict[str, str]:
        """Measure together, now, the candidates (best first) whose latency `confirm` would
        measure one at a time (`latency_prefetch`), so the next proposals find them measured.
        Returns {config hash: reason} of those measured over the latency budget: rejected draws."""
        if self.latency_prefetch is None or "latency_ms" not in self.budgets:
            return {}
        over = {}
        for config, found in self.latency_prefetch(configs):
            reason = self._over_latency(config, found, {})
            if reason is not None:
                over[config.config_hash()] = reason
        return over

    def constraint_attrs(self, known: dict[str, float], named: bool) -> dict[str, Any]:
        """System attrs holding these constraint values as the engine stores them (the list in
        budget order, an unknown value 0.0; plus named ones for studies that have them)."""
        names = list(self.budgets)
        if not names:
            return {}
        attrs: dict[str, Any] = {CONSTRAINTS_KEY: [float(known.get(n, 0.0)) for n in names]}
        if named:
            attrs.update({f"{CONSTRAINTS_KEY}:{n}": float(v) for n, v in known.items()})
        return attrs


def count(rejected: dict[str, int], reason: str) -> None:
    """One more draw rejected for `reason`."""
    rejected[reason] = rejected.get(reason, 0) + 1
