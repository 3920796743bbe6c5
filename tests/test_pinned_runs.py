"""Run directories written by earlier engines still read: storage, `overlock-nas report` and
`overlock-nas export --best` on checked-in runs (tests/data/runs/, made by tests/data/make_journal.py
with the real engine, evaluator and latency measurement; never edited).

Each pinned run has its facts written out below, read off the search's own summary when it was made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from nas import storage
from nas.cli import main

RUNS = Path(__file__).parent / "data" / "runs"
PINNED = sorted(p.name for p in RUNS.iterdir() if (p / "study.log").is_file())

# name -> what the engine printed when it wrote the run
FACTS = {
    "tiny-0.1.0+8705fc4": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [2, 4, 9, 10], "over_budget": [0, 1, 3, 6, 7, 8, 11], "stopped_early": [5],
        "reused": {7: 0, 8: 6, 10: 2, 11: 1}, "front": [2, 4, 9, 10], "best": 9,
        "best_hash": "3c546bec9f19854c",
    },
}


def test_every_pinned_run_has_its_facts():
    assert PINNED and set(PINNED) == set(FACTS)


@pytest.fixture(params=PINNED)
def run(request, tmp_path) -> tuple[Path, dict]:
    """A copy of a pinned run directory (commands must never touch the checked-in one)."""
    copy = tmp_path / "run"
    shutil.copytree(RUNS / request.param, copy)
    return copy, FACTS[request.param]


def _numbers(trials) -> list[int]:
    return sorted(t.number for t in trials)


def test_storage_reads_the_pinned_run(run):
    run_dir, facts = run
    study, _ = storage.open_study(run_dir)
    trials = study.get_trials()
    assert [o.name for o in storage.study_objectives(study)] == facts["objectives"]
    assert _numbers(t for t in trials if t.state == TrialState.COMPLETE) == facts["complete"]
    assert _numbers(storage.pareto_front(study)) == facts["front"]
    budgets = study.user_attrs["constraints"]
    assert budgets == facts["budgets"]
    infeasible = [t.number for t in trials if not storage.feasibility(t, budgets)[0]]
    assert infeasible == facts["over_budget"]
    assert [t.number for t in trials if t.state == TrialState.PRUNED and not storage.full_fidelity(t)
            and t.number not in facts["over_budget"]] == facts["stopped_early"]
    assert {t.number: t.user_attrs["reused_from"] for t in trials
            if t.user_attrs.get("reused_from") is not None} == facts["reused"]


def test_report_reads_the_pinned_run(run):
    from reports import load_study_data

    run_dir, facts = run
    journal = (run_dir / "study.log").read_bytes()
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(run_dir / "r.html")])
    assert result.exit_code == 0, result.output
    assert (run_dir / "r.html").read_text().startswith("<!DOCTYPE html>")
    df = load_study_data(run_dir).trials.set_index("number")
    assert len(df) == len(facts["complete"]) + len(facts["over_budget"]) + len(facts["stopped_early"])
    assert sorted(df.index[df["pareto"].astype(bool)]) == facts["front"]
    assert sorted(df.index[~df["feasible"].astype(bool)]) == facts["over_budget"]
    assert (run_dir / "study.log").read_bytes() == journal   # reading never writes


@pytest.mark.slow   # torch.export + fvcore of the chosen network
def test_export_best_reads_the_pinned_run(run, tmp_path):
    from safetensors.torch import load_file

    import overlock

    run_dir, facts = run
    out = tmp_path / "best"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--best", "-o", str(out), "--no-onnx"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["trial"] == facts["best"] and meta["config_hash"] == facts["best_hash"]
    assert meta["weights"]["source"] == "trial" and all(c["passed"] for c in meta["checks"] if "passed" in c)
    trained = load_file(run_dir / meta["weights"]["file"])
    model = overlock.create_model(out)
    assert all((model.state_dict()[k] == v).all() for k, v in trained.items())
