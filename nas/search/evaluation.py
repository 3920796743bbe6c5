"""A trial's evaluations, rung by rung: what each result says, and where a continued trial picks up.

- `Evaluations.evaluated(lv, result)`: an evaluation's result, checked (a failure, a score that
  is not a finite number, no finite val_loss where halving ranks by it), recorded (through the
  recorder) with its weights files kept, then the halving decision on its rung (`halving`).
- `Evaluations.continued(lv)`: a trial that continues from a stored trial's last finished rung
  (its own when adopted, its original's when re-queued): the files and records taken over, that
  rung decided again.

Each returns a `Step`, which the driver applies (`nas.engine.SearchEngine._next_rung`): fail,
complete, prune, or continue to the next rung.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .halving import CONTINUE, COMPLETE, PRUNE  # noqa: F401 - the actions of a Step
from .recorder import IDENTITY_ATTRS

FAIL = "fail"
# records of the trial continued from that a re-queued copy does not take over
_NOT_TAKEN_OVER = {"reason", "error", "superseded", "requeued_from", "weights"}


@dataclass(frozen=True)
class Step:
    """What a finished rung means for its trial: `action` is halving's (CONTINUE, PRUNE,
    COMPLETE, with its `reason`) or FAIL (`reason`, `error`). CONTINUE without a reason goes on
    unranked (a continued rung trained under the other signal). `said`: a line to say first."""

    action: str
    reason: str = ""
    error: str = ""
    said: str | None = None


class Evaluations:
    """Args: rungs: the study's `Rungs`; weights: its `WeightsDir`; recorder: its `Recorder`;
    score_metric: the metric an evaluation's score is (`accuracy`)."""

    def __init__(self, rungs, weights, recorder, score_metric: str):
        self.rungs, self.weights, self.recorder = rungs, weights, recorder
        self.score_metric = score_metric

    def evaluated(self, lv, result: dict) -> Step:
        """The result of evaluating `lv` (a `nas.search.ledger.Live`) to its rung."""
        if not result.get("ok"):
            return Step(FAIL, result.get("reason") or "evaluation failed", result.get("error", ""))
        score = result.get("score")
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            return Step(FAIL, f"score is {score!r} (not a finite number)")
        lv.eval_s += float(result.get("wall_s") or 0.0)
        for key, (name, data) in (result.get("files") or {}).items():
            path = self.weights.write(name, data)
            if key == "weights":
                self.recorder.set(lv.trial, "weights", path)
        self.recorder.evaluation(lv.trial, result, lv.config.to_dict(), lv.eval_s)
        lv.metrics[self.score_metric] = float(score)
        budget = self.rungs.budgets[lv.rung]
        if budget is None:
            return self._decide(lv, float(score))
        key = str(budget)
        records = self.recorder.rung(lv.trial, key, score, (result.get("val_loss") or [None])[-1])
        ranked = self.rungs.signal_of(records, key)
        if ranked is None and not self.rungs.is_last(lv.rung):   # a last rung completes unranked
            return Step(FAIL, "successive_halving.signal=val_loss: the evaluator returned no finite "
                              "val_loss")
        if ranked is not None:
            self.rungs.record(key, lv.chash, ranked)
        return self._decide(lv, float(score) if ranked is None else ranked)

    def continued(self, lv) -> Step | None:
        """Continue from `lv.resume_from`'s last finished rung (its weights and optimiser state in
        RUN_DIR/weights): that rung decided again. None when there is nothing to continue from
        (the trial then starts from epoch 0; files nobody will read are deleted)."""
        src, lv.resume_from = lv.resume_from, None
        if src is None or src.user_attrs.get("config_hash") != lv.chash:
            return None
        rung_scores = src.user_attrs.get("rung_scores") or {}
        done = [i for i, b in enumerate(self.rungs.keys) if b in rung_scores]
        if not done or "weights" not in self.weights.paths(src.number, lv.chash):
            if src.number != lv.number:
                self.weights.delete(src.number, lv.chash)
            return None
        if src.number != lv.number:      # a re-queued copy takes over the original's files
            self.weights.move(src.number, lv.number, lv.chash)
            self.recorder.copy(lv.trial, src.user_attrs, skip=set(IDENTITY_ATTRS) | _NOT_TAKEN_OVER)
            self.recorder.set(lv.trial, "continued_from", src.number)
        self.recorder.set(lv.trial, "weights", self.weights.relative(lv.number, lv.chash))
        lv.rung = done[-1]
        lv.eval_s = float(src.user_attrs.get("eval_wall_s", 0.0))
        key = self.rungs.keys[lv.rung]
        lv.metrics[self.score_metric] = float(rung_scores[key])
        ranked = self.rungs.signal_of(src.user_attrs, key)
        said = f"#{lv.number} continues from {key} epochs (trained by #{src.number})"
        if ranked is None:    # trained under the other signal: go on, unranked, rather than lose it
            return Step(CONTINUE, said=said)
        self.rungs.record(key, lv.chash, ranked)
        return self._decide(lv, ranked, said)

    def _decide(self, lv, signal: float, said: str | None = None) -> Step:
        """Finished rung `lv.rung`: continue, prune or complete (`halving.decide`)."""
        decision = self.rungs.decide(lv.rung, signal)
        return Step(decision.action, decision.reason, said=said)
