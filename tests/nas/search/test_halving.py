"""Successive halving decides without a study: `nas.search.halving` is pure (no Optuna, Ray, torch)."""

import subprocess
import sys
from pathlib import Path

import pytest

from nas.search.halving import COMPLETE, CONTINUE, PRUNE, Decision, Rungs, decide, rung_signal

REPO = Path(__file__).resolve().parents[3]


def _decide(rung, value, ranked, **kw):
    args = dict(n_rungs=3, budget=1, eta=2, min_trials=2, signal="accuracy", metric="accuracy")
    args.update(kw)
    return decide(rung, value, ranked, **args)


def test_the_last_rung_completes_whatever_the_score():
    assert _decide(2, 0.0, [0.9, 0.8, 0.7]) == Decision(COMPLETE)
    assert _decide(0, 0.0, [], n_rungs=1) == Decision(COMPLETE)


def test_every_trial_continues_until_min_trials_have_a_score():
    d = _decide(0, 0.1, [0.9, 0.1], min_trials=3)
    assert d == Decision(CONTINUE, "accuracy 0.1 at 1")


def test_the_top_one_over_eta_continues_and_the_rest_is_pruned_with_the_reason():
    ranked = [0.9, 0.8, 0.5, 0.4]                     # eta 2: the top 2 continue, cutoff 0.8
    assert _decide(0, 0.8, ranked).action == CONTINUE
    d = _decide(0, 0.5, ranked)
    assert d == Decision(PRUNE, "successive halving: accuracy 0.5 after 1 epochs is below the top "
                                "1/2 of 4 trials (cutoff 0.8)")
    # eta 3 keeps max(1, int(4 / 3)) = 1: only the best
    assert _decide(0, 0.8, ranked, eta=3).action == PRUNE
    assert _decide(0, 0.9, ranked, eta=3).action == CONTINUE


def test_a_validation_loss_is_ranked_by_its_negative_and_said_as_itself():
    # losses 0.2, 0.3, 0.6: signals -0.2, -0.3, -0.6; eta 2 keeps one (cutoff -0.2)
    d = _decide(1, -0.3, [-0.2, -0.3, -0.6], signal="val_loss", budget=3)
    assert d == Decision(PRUNE, "successive halving: validation loss 0.3 after 3 epochs is above "
                                "the best 1/2 of 3 trials (cutoff 0.2)")
    assert _decide(1, -0.2, [-0.2, -0.3, -0.6], signal="val_loss").reason == "validation loss 0.2 at 1"


def test_rung_signals_come_from_a_trials_records():
    ua = {"rung_scores": {"1": 0.7, "3": 0.8}, "rung_val_loss": {"1": 1.25}}
    assert rung_signal(ua, "1", "accuracy") == 0.7
    assert rung_signal(ua, "1", "val_loss") == -1.25
    assert rung_signal(ua, "3", "val_loss") is None
    assert rung_signal({}, "1", "accuracy") is None


def test_rungs_keep_one_signal_per_architecture():
    rungs = Rungs([1, 3], eta=2, min_trials=2)
    rungs.remember({"rung_scores": {"1": 0.9}}, "a")
    rungs.record("1", "a", 0.2)                # the same architecture run again replaces
    rungs.record("1", "b", 0.5)
    assert rungs.scores == {"1": {"a": 0.2, "b": 0.5}}
    assert rungs.decide(0, 0.2).action == PRUNE
    assert rungs.decide(1, 0.0).action == COMPLETE and rungs.is_last(1) and not rungs.is_last(0)


@pytest.mark.parametrize("module", ["nas.search.halving"])
def test_halving_imports_neither_optuna_ray_nor_torch(module):
    code = (f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} "
            "& {'optuna', 'ray', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "[]"
