"""Gate training by a zero-cost proxy (study key `proxy_gate`, issue 12).

Before a feasible config is trained, its zero-cost proxy (synflow, NASWOT or ZiCo; one batch at
initialisation, a second or so) or its supernet score (`proxy: supernet`, `weights: DIR`: the
accuracy of its inherited weights, about a second on a CPU) is computed in the driver. Once `min_trials` configs have a proxy
score, a config whose score is below the `drop_bottom` quantile of the scores so far is told
PRUNED with the reason, never trained; the others train as usual. Scores are stored on each trial
(`gate_score`), so a resumed study gates against everything it saw before.

Whether a proxy is worth gating on depends on the space and the data: measure it first with
`benchmarks/bench_proxy_fidelity.py` (docs/explanation/search.md has the table for the quickstart
space). A gate on a proxy that ranks poorly only discards good configs.

    proxy_gate: {proxy: synflow, drop_bottom: 0.3, min_trials: 8}
"""

from __future__ import annotations

import numpy as np

__all__ = ["ProxyGate"]


class ProxyGate:
    """The gate of one study: the proxy evaluator and the scores seen so far.

    Args:
        proxy: "synflow", "naswot", "zico", or "supernet" (a config's accuracy with weights
            inherited from a trained supernet, BN statistics re-estimated).
        drop_bottom: fraction in (0, 1): configs below this quantile of the scores so far are
            not trained.
        min_trials: scores needed before the gate closes on anything.
        dataset: the `dataset:` settings the proxy draws its batch from (the train evaluator's).
        batch_size: images in the proxy's batch.
        resolution: the proxy's input size (default: the evaluator's).
        weights: proxy "supernet" only: the folder `overlock-nas supernet train` wrote.
    """

    def __init__(self, proxy: str, drop_bottom: float, min_trials: int, dataset: dict | None = None,
                 batch_size: int = 64, resolution=None, weights: str | None = None):
        from nas.evaluators import get_evaluator

        if proxy == "supernet":       # the supernet's card names its data set and resolution
            settings = {"weights": weights}
        else:
            settings = {"batch_size": batch_size, "resolution": resolution}
            if dataset:
                settings["dataset"] = dataset
        self.proxy, self.drop_bottom, self.min_trials = proxy, drop_bottom, min_trials
        self.evaluator = get_evaluator(proxy, {k: v for k, v in settings.items() if v is not None})
        self.scores: list[float] = []

    @classmethod
    def for_study(cls, spec, trials) -> "ProxyGate":
        """The gate of a study's `proxy_gate` (its batch from the train evaluator's data set),
        remembering the scores of its stored `trials`."""
        s, evaluator = spec.proxy_gate, spec.evaluator.settings
        gate = cls(s.proxy, s.drop_bottom, s.min_trials, evaluator.get("dataset"), s.batch_size,
                   evaluator.get("resolution"), s.weights)
        gate.remember(trials)
        return gate

    def remember(self, trials) -> None:
        """Add the `gate_score` of stored trials (a resumed study)."""
        for t in trials:
            score = t.user_attrs.get("gate_score")
            if isinstance(score, (int, float)) and np.isfinite(score):
                self.scores.append(float(score))

    def check(self, config, seed: int) -> tuple[float | None, str | None]:
        """(score, reason to stop or None). A proxy that cannot score the config (a TrialError)
        gives (None, None): the config trains, the gate does not guess."""
        from nas.evaluators import TrialError

        try:
            score = float(self.evaluator.evaluate(config, seed=seed)["score"])
        except TrialError:
            return None, None
        reason = None
        if len(self.scores) >= self.min_trials:
            cutoff = float(np.quantile(self.scores, self.drop_bottom))
            if score < cutoff:
                reason = (f"proxy gate: {self.proxy} {score:.4g} is in the bottom {self.drop_bottom:.0%} "
                          f"of {len(self.scores)} configs so far (cutoff {cutoff:.4g}); not trained")
        self.scores.append(score)
        return score, reason
