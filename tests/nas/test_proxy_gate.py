"""`proxy_gate`: configs whose zero-cost proxy is in the bottom fraction so far are not trained."""

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import SearchEngine, open_storage
from nas.study import StudyFileError, parse_study
from nas_testing import study_dict


def test_gated_configs_are_pruned_untrained(tmp_path, local_ray):
    gate = {"proxy": "synflow", "drop_bottom": 0.5, "min_trials": 3}
    spec = parse_study(study_dict(tmp_path, trials=6, parallel=1, proxy_gate=gate), label="t")
    (tmp_path / "run").mkdir()
    study = optuna.create_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"),
                                directions=spec.directions)
    study.set_metric_names(spec.objectives)
    # three wide networks open the gate; the narrow ones after them score a lower synflow
    for region_count, width in ((1, 128), (2, 128), (3, 64), (4, 32), (1, 32)):
        study.enqueue_trial({"region_count": region_count, "widths[3]": width})
    SearchEngine(spec).run()
    trials = [t for t in study.get_trials() if t.user_attrs.get("reused_from") is None]
    log = tmp_path / "evals.jsonl"
    trained = {json.loads(line)["hash"] for line in log.read_text().splitlines()} if log.exists() else set()

    scored = [t for t in trials if "gate_score" in t.user_attrs]
    gated = [t for t in trials if str(t.user_attrs.get("reason", "")).startswith("proxy gate: synflow")]
    assert len(scored) >= 4 and gated, [t.user_attrs.get("reason") for t in trials]
    for t in gated:
        assert t.state == TrialState.PRUNED and t.user_attrs["config_hash"] not in trained
        # below the median of the scores before it
        earlier = [s.user_attrs["gate_score"] for s in scored if s.number < t.number]
        assert len(earlier) >= 3 and t.user_attrs["gate_score"] < np.quantile(earlier, 0.5)
    for t in scored[:3]:          # the gate stays open until min_trials scores exist
        assert t not in gated


def test_gate_needs_the_accuracy_objective(tmp_path):
    data = study_dict(tmp_path, proxy_gate={"proxy": "synflow"}, objectives=["synflow", "flops"],
                      evaluator={"name": "synflow"})
    with pytest.raises(StudyFileError, match="proxy_gate: gates training"):
        parse_study(data, label="t")
    with pytest.raises(StudyFileError, match="proxy_gate.proxy"):
        parse_study(study_dict(tmp_path, proxy_gate={"proxy": "params"}), label="t")
