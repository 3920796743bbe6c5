"""The report says whether successive halving was trustworthy (issue 12 §3)."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from reports.fidelity import agreement_text, rung_agreement

PINNED = Path(__file__).resolve().parents[1] / "data" / "runs" / "tiny-0.1.0+8705fc4"


def _frame(rows):
    return pd.DataFrame([{"state": s, "fidelity": f, "reused_from": r,
                          "rung_scores": None if rs is None else json.dumps(rs)} for s, f, r, rs in rows])


def test_agreement_counts_only_trials_that_reached_the_end():
    rows = [("COMPLETE", 1.0, None, {"2": 0.1 * i, "4": 0.2 * i, "8": 0.3 * i}) for i in range(1, 7)]
    rows += [("PRUNED", 0.25, None, {"2": 0.9}),                        # stopped at rung 1
             ("COMPLETE", 1.0, 3.0, {"2": 0.0, "4": 0.9, "8": 0.0}),    # reused: counted once
             ("FAIL", None, None, None)]
    out = rung_agreement(_frame(rows))
    assert [(a.rung, a.final, a.n) for a in out] == [(2, 8, 6), (4, 8, 6)]
    assert all(a.spearman == pytest.approx(1.0) and a.verdict == "reliable" for a in out)
    assert agreement_text(out).startswith("rung 2 of 8 epochs: Spearman rho 1.00 over 6 trials")


def test_a_reversed_ranking_is_called_unreliable():
    rows = [("COMPLETE", 1.0, None, {"1": 0.1 * i, "3": 1 - 0.1 * i}) for i in range(1, 6)]
    (a,) = rung_agreement(_frame(rows))
    assert a.spearman == pytest.approx(-1.0) and a.verdict.startswith("unreliable")


def test_the_verdict_agrees_with_the_printed_rho():
    from reports.fidelity import RungAgreement

    a = RungAgreement(3, 6, 5, 0.7999999999999999)
    assert agreement_text([a]).endswith("Spearman rho 0.80 over 5 trials that reached the end (reliable)")


def test_no_rungs_no_line():
    assert rung_agreement(_frame([("COMPLETE", 1.0, None, None)])) == []
    assert agreement_text([]) is None
    flat = rung_agreement(_frame([("COMPLETE", 1.0, None, {"1": 0.5, "2": 0.1 * i}) for i in range(5)]))
    assert math.isnan(flat[0].spearman) and flat[0].verdict == "too few trials to tell"


def test_pinned_study_reports_its_rung_agreement():
    """On a run directory the real engine wrote: the header names the data set and the halving line."""
    from reports import load_study_data
    from reports.page import header_html

    sd = load_study_data(PINNED)
    (a,) = rung_agreement(sd.trials)
    done = sd.trials[(sd.trials.state == "COMPLETE") & sd.trials.reused_from.isna()]
    pairs = [json.loads(v) for v in done.rung_scores]
    expected = pd.Series([p["1"] for p in pairs]).rank().corr(pd.Series([p["2"] for p in pairs]).rank())
    assert (a.rung, a.final, a.n) == (1, 2, len(pairs)) and a.spearman == pytest.approx(expected)
    html = header_html(sd, [])
    assert "halving" in html and "rung 1 of 2 epochs" in html
    assert "data set" in html and "procedural" in html


def test_the_validation_loss_at_a_rung_is_ranked_against_the_final_accuracy():
    # rung accuracy ranks the trials backwards; the rung validation loss ranks them right
    rows = [{"state": "COMPLETE", "fidelity": 1.0, "reused_from": None,
             "rung_scores": json.dumps({"1": 0.9 - 0.1 * i, "4": 0.1 * i}),
             "rung_val_loss": json.dumps({"1": 3.0 - 0.2 * i, "4": 1.0})} for i in range(1, 7)]
    rows.append({"state": "COMPLETE", "fidelity": 1.0, "reused_from": None,   # from before val_loss
                 "rung_scores": json.dumps({"1": 0.95, "4": 0.05}), "rung_val_loss": None})
    frame = pd.DataFrame(rows)
    (acc,) = rung_agreement(frame)
    (loss,) = rung_agreement(frame, "val_loss")
    assert (acc.n, loss.n) == (7, 6)
    assert acc.spearman < -0.9 and loss.spearman == pytest.approx(1.0)
    assert agreement_text([loss], "val_loss").startswith(
        "validation loss at rung 1 of 4 epochs: Spearman rho 1.00 over 6 trials")
    assert rung_agreement(frame.drop(columns="rung_val_loss"), "val_loss") == []
