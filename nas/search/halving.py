"""Successive halving as a pure decision: no Optuna, Ray or torch here.

A trial trains to each rung budget in turn. After rung `i` it continues only if its signal is in
the top 1/eta of the signals recorded at that rung (one per architecture; all of them continue
while fewer than `min_trials` have one); else it is pruned, with the reason. After the last rung
it completes. The signal is the rung's accuracy (`rung_scores`) or, with `signal: val_loss`,
minus its validation loss (`rung_val_loss`): higher is always better.

    >>> rungs = Rungs(budgets=[1, 3], eta=2, min_trials=2, signal="accuracy", metric="accuracy")
    >>> rungs.record("1", "hash-a", 0.9)
    >>> rungs.record("1", "hash-b", 0.5)
    >>> rungs.decide(0, 0.5)
    Decision(action='prune', reason='successive halving: accuracy 0.5 after 1 epochs is below the top 1/2 of 2 trials (cutoff 0.9)')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

CONTINUE, PRUNE, COMPLETE = "continue", "prune", "complete"


@dataclass(frozen=True)
class Decision:
    """What to do after a rung, and why in words: for `continue` what the trial scored
    ("accuracy 0.81 at 1"), for `prune` the trial's stored reason."""

    action: str
    reason: str = ""


def decide(rung: int, value: float, ranked: list[float], *, n_rungs: int, budget, eta: float,
           min_trials: int, signal: str, metric: str) -> Decision:
    """The decision after rung `rung` (0-based, of `n_rungs`) at rung budget `budget`, for a
    trial whose signal is `value`; `ranked` holds the signals recorded at this rung (this trial's
    among them, when it has one)."""
    if rung + 1 >= n_rungs:
        return Decision(COMPLETE)
    scores = sorted(ranked, reverse=True)
    keep = max(1, int(len(scores) / eta))
    cutoff = scores[keep - 1] if scores else value
    if signal == "val_loss":   # ranked by minus the loss; said as the loss itself
        said, shown, limit, side = "validation loss", -value, -cutoff, "above the best"
    else:
        said, shown, limit, side = metric, value, cutoff, "below the top"
    if len(scores) < min_trials or value >= cutoff:
        return Decision(CONTINUE, f"{said} {shown:.4g} at {budget}")
    return Decision(PRUNE, f"successive halving: {said} {shown:.4g} after {budget} epochs is "
                           f"{side} 1/{eta:g} of {len(scores)} trials (cutoff {limit:.4g})")


def rung_signal(user_attrs: Mapping, budget: str, signal: str) -> float | None:
    """What halving ranks rung `budget` by (higher is better), from a trial's records: its
    accuracy (`rung_scores`) or minus its validation loss (`rung_val_loss`); None if unrecorded."""
    if signal == "val_loss":
        loss = (user_attrs.get("rung_val_loss") or {}).get(budget)
        return None if loss is None else -float(loss)
    score = (user_attrs.get("rung_scores") or {}).get(budget)
    return None if score is None else float(score)


@dataclass
class Rungs:
    """The rung budgets and every signal recorded at each: {budget: {config hash: signal}}, one
    per architecture, so a re-run of it (an interrupted trial's re-queued copy, an adopted orphan)
    replaces, never adds. `budgets` is `[None]` without halving (one run at the full budget)."""

    budgets: list
    eta: float = 3.0
    min_trials: int = 1
    signal: str = "accuracy"
    metric: str = "accuracy"
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [str(b) for b in self.budgets]

    def is_last(self, rung: int) -> bool:
        return rung + 1 >= len(self.budgets)

    def signal_of(self, user_attrs: Mapping, budget: str) -> float | None:
        return rung_signal(user_attrs, budget, self.signal)

    def record(self, budget: str, chash: str, value: float) -> None:
        self.scores.setdefault(str(budget), {})[chash] = value

    def remember(self, user_attrs: Mapping, chash: str) -> None:
        """A stored trial's rung signals (on resume)."""
        for budget in (user_attrs.get("rung_scores") or {}):
            value = self.signal_of(user_attrs, str(budget))
            if value is not None:
                self.record(str(budget), chash, value)

    def decide(self, rung: int, value: float) -> Decision:
        budget = self.budgets[rung]
        return decide(rung, value, list(self.scores.get(str(budget), {}).values()),
                      n_rungs=len(self.budgets), budget=budget, eta=self.eta,
                      min_trials=self.min_trials, signal=self.signal, metric=self.metric)
