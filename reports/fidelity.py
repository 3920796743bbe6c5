"""Was successive halving trustworthy? Rung scores against final scores, per study (issue 12).

Successive halving stops trials on their score at an early rung; that is only sound if early
scores rank trials as their final scores do. Over the trials that reached the full budget (not
reused from another trial), this compares each earlier rung's score with the final one.

    >>> from reports import load_study_data
    >>> from reports.fidelity import rung_agreement, agreement_text
    >>> agreement_text(rung_agreement(load_study_data("runs/quickstart").trials))
    'rung 3 of 6 epochs: Spearman rho 0.83 over 8 trials that reached the end (reliable)'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

__all__ = ["RungAgreement", "rung_agreement", "agreement_text", "MIN_TRIALS"]

MIN_TRIALS = 4   # fewer trials at the end say nothing about a ranking


@dataclass(frozen=True)
class RungAgreement:
    rung: int          # epochs at the early rung
    final: int         # epochs of the full budget
    n: int             # trials with both scores
    spearman: float    # NaN when n < 2 or a score is constant

    @property
    def verdict(self) -> str:
        if self.n < MIN_TRIALS or math.isnan(self.spearman):
            return "too few trials to tell"
        rho = round(self.spearman, 2)   # the verdict agrees with the rho printed beside it
        if rho >= 0.8:
            return "reliable"
        if rho >= 0.5:
            return "rough: halving may have stopped good trials"
        return "unreliable: prefer later rungs or no halving"


def _rungs(value) -> dict[int, float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in value.items():
        try:
            out[int(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return {k: v for k, v in out.items() if math.isfinite(v)}


def rung_agreement(trials: pd.DataFrame, signal: str = "accuracy") -> list[RungAgreement]:
    """One entry per early rung (ascending); [] when the study has no rungs or no finished trial.

    `trials` is the report's frame (`reports.data.trials_frame`): columns `state`, `rung_scores`
    (JSON {epochs: score}), optionally `rung_val_loss` (JSON {epochs: validation loss}),
    `fidelity` and `reused_from`. `signal` is what the early rung is ranked by: `accuracy` (its
    score) or `val_loss` (minus its validation loss); the final rung is always the score."""
    column = {"accuracy": "rung_scores", "val_loss": "rung_val_loss"}[signal]
    if trials.empty or "rung_scores" not in trials.columns or column not in trials.columns:
        return []
    done = trials[(trials["state"] == "COMPLETE") & trials["rung_scores"].notna() & trials[column].notna()]
    if "fidelity" in done.columns:
        done = done[pd.to_numeric(done["fidelity"], errors="coerce").fillna(0) >= 1.0]
    if "reused_from" in done.columns:
        done = done[done["reused_from"].isna()]
    finals = [_rungs(v) for v in done["rung_scores"]]
    early = finals if signal == "accuracy" else [
        {k: -v for k, v in _rungs(v).items()} for v in done[column]]
    pairs_of = [(e, f) for e, f in zip(early, finals) if len(f) >= 2]
    if not pairs_of:
        return []
    final = max(max(f) for _, f in pairs_of)
    pairs_of = [(e, f) for e, f in pairs_of if final in f]
    out = []
    for rung in sorted({k for e, _ in pairs_of for k in e if k < final}):
        pairs = pd.DataFrame([(e[rung], f[final]) for e, f in pairs_of if rung in e],
                             columns=["rung", "final"])
        rho = float("nan")
        if len(pairs) >= 2 and pairs["rung"].nunique() > 1 and pairs["final"].nunique() > 1:
            rho = float(pairs["rung"].rank().corr(pairs["final"].rank()))
        out.append(RungAgreement(rung, final, len(pairs), rho))
    return out


def agreement_text(agreements: list[RungAgreement], signal: str = "accuracy") -> str | None:
    """One line for the report ("rung 3 of 6 epochs: Spearman rho 0.83 over 8 trials ..."; with
    `signal="val_loss"`, "validation loss at rung 3 of 6 epochs: ..."), or None without rungs."""
    if not agreements:
        return None
    parts = []
    said = "validation loss at rung" if signal == "val_loss" else "rung"
    for a in agreements:
        rho = "n/a" if math.isnan(a.spearman) else f"{a.spearman:.2f}"
        parts.append(f"{said} {a.rung} of {a.final} epochs: Spearman rho {rho} over {a.n} trial"
                     f"{'' if a.n == 1 else 's'} that reached the end ({a.verdict})")
    return "; ".join(parts)
