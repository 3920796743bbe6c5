"""The hypervolume-against-trials figure and its share of rejected draws: from the proposer's
`rejected_draws` attribute, and, for studies written before it, from PRUNED infeasible trials."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from nas.storage import Objective
from reports import figures as F
from reports import load_study_data
from reports.data import StudyData, trials_frame

PINNED = Path(__file__).resolve().parents[1] / "data" / "runs" / "tiny-0.1.0+48ca207"
OBJECTIVES = [Objective("accuracy", "maximize"), Objective("flops", "minimize")]


def _study(trials) -> StudyData:
    for number, t in enumerate(trials):
        t.number = number
    budgets = {"flops": 100.0}
    return StudyData(study_name="s", storage_label="memory", run_dir=None, storage_url=None, user_attrs={},
                     objectives=OBJECTIVES, constraints=budgets, trials=trials_frame(trials, OBJECTIVES, budgets))


def _trial(state, values=None, constraint=-1.0, **attrs):
    return create_trial(state=state, values=values, params={"x": 1}, distributions={"x": IntDistribution(0, 2)},
                        user_attrs={"flops": values[1] if values else 150.0, **attrs},
                        system_attrs={"constraints": [constraint]})


def test_rejected_draws_from_the_proposer_attribute():
    sd = _study([_trial(TrialState.COMPLETE, [0.5, 50.0], rejected_draws={"flops": 3}),
                 _trial(TrialState.COMPLETE, [0.7, 80.0], rejected_draws={}),
                 _trial(TrialState.COMPLETE, [0.6, 40.0], rejected_draws={"flops": 1, "params": 2})])
    rd = F.rejected_draws(sd)
    assert rd["draws"].tolist() == [4, 5, 9] and rd["rejected"].tolist() == [3, 3, 6]
    fig = F.hypervolume_figure(sd)
    assert isinstance(fig, F.Figure) and "6 of 9 draws (66.7%)" in fig.caption
    assert "flops 4, params 2" in fig.caption
    share = [t for t in fig.figure.data if t.name == "rejected draws, all so far"][0]
    assert list(share.y) == pytest.approx([3 / 4, 3 / 5, 6 / 9])
    assert fig.figure.layout.yaxis2.title.text == "draws rejected"
    hv = fig.figure.data[0]
    assert list(hv.x) == [0, 1, 2] and hv.y[0] <= hv.y[1] <= hv.y[2]


def test_older_studies_count_pruned_infeasible_trials_as_rejected_draws(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(PINNED, run)
    sd = load_study_data(run)
    pruned_over = int(((sd.trials["state"] == "PRUNED") & (sd.trials["infeasible"] == True)).sum())  # noqa: E712
    assert pruned_over > 0 and "rejected_draws" not in sd.trials.columns
    rd = F.rejected_draws(sd)
    assert rd["rejected"].iloc[-1] == pruned_over and rd["draws"].iloc[-1] == len(sd.trials)
    reasons = {}
    for r in rd["reasons"]:
        for k, v in r.items():
            reasons[k] = reasons.get(k, 0) + v
    assert reasons == {"params": pruned_over}       # the study's one budget
    fig = F.hypervolume_figure(sd)
    assert f"{pruned_over} of {len(sd.trials)} draws" in fig.caption
