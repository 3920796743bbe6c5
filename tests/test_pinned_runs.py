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
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from nas import storage
from nas.cli import main

RUNS = Path(__file__).parent / "data" / "runs"
PINNED = sorted(p.name for p in RUNS.iterdir() if (p / "study.log").is_file())

# name -> what the engine printed when it wrote the run, oldest first (the last is the current format)
FACTS = {
    "tiny-0.1.0+8705fc4": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [2, 4, 9, 10], "over_budget": [0, 1, 3, 6, 7, 8, 11], "stopped_early": [5],
        "reused": {7: 0, 8: 6, 10: 2, 11: 1}, "front": [2, 4, 9, 10], "best": 9,
        "best_hash": "3c546bec9f19854c",
    },
    # constraints stored once (the list); trials_count (trained) and skipped_over_budget; latency
    # protocol, clock, source and stage profiles; the data set each score was measured on
    "tiny-0.1.0+3ad15d3": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [2, 4, 9, 10], "over_budget": [0, 1, 3, 6, 7, 8, 11, 12, 13], "stopped_early": [5, 14],
        "reused": {7: 0, 8: 6, 10: 2, 11: 1, 12: 6, 13: 6}, "front": [2, 4, 10], "best": 4,
        "best_hash": "db0478f925ae6b3c",
    },
    # the validation loss per epoch and per rung (val_loss, rung_val_loss); the study's latency
    # settings name recheck_near
    "tiny-0.1.0+48ca207": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [2, 4, 9, 10], "over_budget": [0, 1, 3, 6, 7, 8, 11, 12, 13], "stopped_early": [5, 14],
        "reused": {7: 0, 8: 6, 10: 2, 11: 1, 12: 6, 13: 6}, "front": [4], "best": 4,
        "best_hash": "db0478f925ae6b3c",
    },
    # the driver split (nas/search/), draws proposed inside the exact budgets: no trial over the
    # params budget (rejected_draws on the trials instead), the paced latency protocol
    "tiny-0.1.0+97af0b9": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [0, 1, 2, 3, 4, 5], "over_budget": [], "stopped_early": [],
        "reused": {4: 0}, "front": [0, 2, 4], "best": 2,
        "best_hash": "e4b9bdc2400e25bb",
    },
    # the study's latency settings name measure_first (a draw measured before it is a trial)
    "tiny-0.1.0+0882de8": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [0, 1, 2, 3, 4, 5], "over_budget": [], "stopped_early": [],
        "reused": {4: 0}, "front": [0, 1, 2, 4], "best": 2,
        "best_hash": "e4b9bdc2400e25bb",
    },
    # latency protocol 2: readings beside the yardstick (latency_raw_ms, latency_speed, ...), each
    # with its uncertainty, sets and protocol version
    "tiny-0.1.0+091fdf8": {
        "objectives": ["accuracy", "flops", "latency_ms"], "budgets": {"params": 51500.0},
        "complete": [0, 1, 2, 3, 4, 5], "over_budget": [], "stopped_early": [],
        "reused": {4: 0}, "front": [0, 1, 2, 4], "best": 2,
        "best_hash": "e4b9bdc2400e25bb",
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
    sd = load_study_data(run_dir)
    records = [t.user_attrs["dataset"] for t in storage.open_study(run_dir)[0].get_trials()
               if "dataset" in t.user_attrs]   # the data set of each score (engines from 3ad15d3)
    assert sd.dataset == (storage.dataset_text(records[0]) if records else
                          storage.dataset_text(sd.user_attrs["evaluator"]["dataset"])
                          + " (the study's evaluator setting)")
    df = sd.trials.set_index("number")
    assert len(df) == len(facts["complete"]) + len(facts["over_budget"]) + len(facts["stopped_early"])
    assert sorted(df.index[df["pareto"].astype(bool)]) == facts["front"]
    assert sorted(df.index[~df["feasible"].astype(bool)]) == facts["over_budget"]
    assert (run_dir / "study.log").read_bytes() == journal   # reading never writes


def test_export_best_reads_the_pinned_run(run, tmp_path):
    from safetensors.torch import load_file

    import overlock

    run_dir, facts = run
    out = tmp_path / "best"
    # The programs (model.pt2, model.onnx) do not depend on the run's version; tests/nas/test_export.py
    # writes and checks them. Tracing one costs ~8 s a run here.
    result = CliRunner().invoke(main, ["export", str(run_dir), "--best", "-o", str(out), "--no-onnx",
                                       "--no-pt2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["trial"] == facts["best"] and meta["config_hash"] == facts["best_hash"]
    assert meta["weights"]["source"] == "trial" and all(c["passed"] for c in meta["checks"] if "passed" in c)
    trained = load_file(run_dir / meta["weights"]["file"])
    model = overlock.create_model(out)
    assert all((model.state_dict()[k] == v).all() for k, v in trained.items())


# ------------------------------------------------------------------ the synthetic study is the real one
# Keys the engine writes only under a condition the two studies need not share, each with the rule
# it follows (checked on both studies instead of the key-set comparison).
CONDITIONAL = {
    "flops_fvcore": "trial 0 and every fvcore_check_every-th trial priced (and trials reusing one)",
    "latency_first_spread_ms": "only when latency_remeasured (protocol 1)",
    "latency_first_uncertainty_pct": "only when latency_remeasured (protocol 2)",
    "latency_stages_ms": "only when the study's latency.profile_stages",
    "trained_num_classes": "only when the evaluator's data set has another class count than the config",
    "trained_resolution": "only when the evaluator trains at another resolution than the config's",
    "error": "only when the failure has a traceback",
    "data_skipped_first": "only when the evaluator skipped unreadable images",
    "preset": "only on official presets (written by the synthetic study only)",
}


def _category(trial) -> str:
    ua = trial.user_attrs
    if ua.get("preset"):
        return "preset"
    words = [trial.state.name] + (["reused"] if ua.get("reused_from") is not None else [])
    if ua.get("infeasible"):
        words.append("over budget after latency" if "latency_ms" in ua else "over budget")
    elif trial.state == TrialState.PRUNED:
        words.append("stopped early")
    return " ".join(words)


def _shape(value):
    """The JSON type of a value, and of a mapping's values (dicts are records, not free text)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()} if len(value) < 40 else "dict"
    return type(value).__name__


def _trial_shapes(study) -> dict[str, dict[str, set]]:
    out: dict[str, dict[str, set]] = {}
    for t in study.get_trials():
        shapes = out.setdefault(_category(t), {})
        for prefix, attrs in (("user_attrs.", t.user_attrs), ("system_attrs.", t.system_attrs)):
            for k, v in attrs.items():
                if k not in CONDITIONAL:
                    shapes.setdefault(prefix + k, set()).add(repr(_shape(v)) if prefix == "system_attrs." else type(v).__name__)
        shapes.setdefault("has params", set()).add(bool(t.params) and set(t.params) == set(t.distributions))
    return out


def _check_conditional(study) -> None:
    every = yaml.safe_load(study.user_attrs["study_file"]).get("fvcore_check_every", 25)
    for t in study.get_trials():
        ua = t.user_attrs
        first = "latency_first_spread_ms" if ua.get("latency_protocol_version", 1) == 1 else "latency_first_uncertainty_pct"
        assert (first in ua) == bool(ua.get("latency_remeasured")), t.number
        for key in ("num_classes", "resolution"):
            if f"trained_{key}" in ua:
                assert ua[f"trained_{key}"] != ua["config"][key], (t.number, key)
        if "flops_fvcore" in ua and ua.get("reused_from") is None:
            assert t.number == 0 or t.number % every == 0, t.number
            assert ua["flops_fvcore"] == ua["flops"]
        if "error" in ua:
            assert t.state == TrialState.FAIL and ua.get("reason")


@pytest.fixture(scope="module")
def real_and_synthetic(tmp_path_factory):
    from support.synthetic import write_synthetic_study

    newest = list(FACTS)[-1]           # the engine's current format
    real, _ = storage.open_study(RUNS / newest)
    run = write_synthetic_study(tmp_path_factory.mktemp("synthetic") / "run", n_trials=80, running=1,
                                seed=3)
    synthetic, _ = storage.open_study(run)
    return real, synthetic


def test_synthetic_study_attrs_are_the_engines(real_and_synthetic):
    real, synthetic = real_and_synthetic
    r, s = real.user_attrs, synthetic.user_attrs
    assert {k: type(v).__name__ for k, v in s.items()} == {k: type(v).__name__ for k, v in r.items()}
    # the fields that once differed: the evaluator's stored settings, the sampler, the latency dtype
    assert s["evaluator"]["name"] == r["evaluator"]["name"] == "train"
    assert _shape(s["evaluator"]) == _shape(r["evaluator"])
    assert _shape(s["latency"]) == _shape(r["latency"]) and s["latency"]["dtype"] == r["latency"]["dtype"]
    assert s["sampler"] == r["sampler"] == "nsga2" and s["device"] == r["device"]
    assert [o["name"] for o in s["objectives"]] == [o["name"] for o in r["objectives"]]
    assert synthetic.metric_names == real.metric_names


def test_synthetic_trial_attrs_are_the_engines(real_and_synthetic):
    real, synthetic = real_and_synthetic
    r, s = _trial_shapes(real), _trial_shapes(synthetic)
    common = set(r) & set(s)
    # the newest engine never creates a trial over an exact budget (the proposer rejects the
    # draw): the categories compared are those the newest pinned run holds
    assert "COMPLETE" in common, (sorted(r), sorted(s))
    assert any("reused" in c for c in common), (sorted(r), sorted(s))
    for category in sorted(common):
        assert s[category] == r[category], category
    records = [{k: _shape(t.user_attrs[k]) for k in ("dataset",) if k in t.user_attrs}
               for study in (real, synthetic) for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert records[0] == records[-1]                  # what the score was measured on, field by field
    for study in (real, synthetic):
        _check_conditional(study)
        latency = [t.user_attrs for t in study.get_trials() if "latency_ms" in t.user_attrs]
        assert latency and all(("latency_stages_ms" in ua) == study.user_attrs["latency"]["profile_stages"]
                               for ua in latency)
