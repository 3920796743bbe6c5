"""`trials_count`: the budget counts trained architectures (default) or every sampled one; draws
over an exact budget never become trials (nas.search.proposals: they are counted in
`rejected_draws`), and a screen can skip configs on an estimate."""

import json
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nas.engine import SearchEngine, open_storage
from nas.study import parse_study
from nas_testing import study_dict

BUDGET = 2.0e6   # MACs: the 4 architectures with widths[3] = 128 (of 12) are over it


def stored(tmp_path: Path, spec) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"))


def evaluations(tmp_path: Path) -> list[dict]:
    log = tmp_path / "evals.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_trained_counts_trained_architectures_and_skips_those_over_budget(tmp_path, local_ray):
    spec = parse_study(study_dict(tmp_path, trials=5, parallel=2, trials_count="trained",
                                  constraints={"flops": BUDGET}), label="t")
    lines = []
    result = SearchEngine(spec, on_progress=lambda p, line: line and lines.append(line)).run()
    study = stored(tmp_path, spec)
    trials = study.get_trials()
    trained = [t for t in trials if t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs]
    skipped = [t for t in trials if t.user_attrs.get("infeasible")]
    assert len(trained) == 5 and len({t.user_attrs["config_hash"] for t in trained}) == 5
    assert len(evaluations(tmp_path)) == 5                      # each trained once, nothing else
    reused = [t for t in trials if "reused_from" in t.user_attrs]   # over budget ones included
    assert len(trials) == 5 + len([t for t in skipped if t not in reused]) + len(reused)
    for t in skipped:      # recorded with its constraint, so the sampler learns; never trained
        assert t.state == TrialState.PRUNED and t.system_attrs["constraints"][0] > 0
    p = result.progress
    assert (p.counts, p.counted, p.target, p.infeasible) == ("trained", 5, 5, len(skipped))
    assert study.user_attrs["trials_count"] == "trained"
    assert study.user_attrs["skipped_over_budget"] == len(skipped)


def test_trained_stops_when_no_new_architecture_within_budget_is_left(tmp_path, local_ray):
    spec = parse_study(study_dict(tmp_path, objectives=["flops", "params"], evaluator=None, trials=20,
                                  trials_count="trained", constraints={"flops": BUDGET}), label="t")
    lines = []
    result = SearchEngine(spec, on_progress=lambda p, line: line and lines.append(line)).run()
    trials = stored(tmp_path, spec).get_trials()
    new = Counter(t.user_attrs["config_hash"] for t in trials if "reused_from" not in t.user_attrs)
    assert len(new) == 8 and max(new.values()) == 1      # each architecture within budget once...
    assert all(t.user_attrs["flops"] <= BUDGET for t in trials)         # ...the 4 others rejected
    assert sum(sum(t.user_attrs.get("rejected_draws", {}).values()) for t in trials) >= 4
    assert sum(t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs for t in trials) == 8
    assert not result.interrupted and result.progress.counted == 8
    assert result.progress.stopped == ("all 12 architectures of the space were drawn: no new "
                                       "architecture within budget is left to train")
    assert "stopped asking: all 12 architectures" in " ".join(lines)


def test_sampled_counts_every_draw_and_an_old_study_keeps_counting_that_way(tmp_path, local_ray):
    def spec(key: bool):
        data = study_dict(tmp_path, objectives=["flops", "params"], evaluator=None, trials=6,
                          constraints={"flops": BUDGET})
        if not key:
            del data["trials_count"]          # the file does not say: the default is trained
        return parse_study(data, label="t")
    SearchEngine(spec(key=True)).run()                            # study_dict: trials_count sampled
    study = stored(tmp_path, spec(True))
    trials = study.get_trials()
    assert len(trials) == 6 and study.user_attrs["trials_count"] == "sampled"
    assert all(t.user_attrs["flops"] <= BUDGET for t in trials)   # over-budget draws: no trials
    study.set_user_attr("trials_count", None)                     # as a study begun before the key
    assert spec(key=False).trials_count == "trained"
    SearchEngine(spec(key=False)).run()
    assert len(stored(tmp_path, spec(True)).trials) == 6         # still counted as sampled: done


def test_a_screen_skips_configs_estimated_over_budget(tmp_path, local_ray):
    spec = parse_study(study_dict(tmp_path, trials=4, trials_count="trained",
                                  objectives=["accuracy", "latency_ms"], constraints={"latency_ms": 50},
                                  latency={"repeats": 3, "warmup": 0, "threads": 1}), label="t")
    (tmp_path / "run").mkdir()
    study = optuna.create_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"),
                                directions=spec.directions)
    study.set_metric_names(spec.objectives)
    study.enqueue_trial({"region_count": 1, "widths[3]": 32})
    engine = SearchEngine(spec)
    engine.screens.append(lambda config: {"latency_ms": 1e3} if config.region_count == 1 else {})
    engine.run()
    trials = stored(tmp_path, spec).get_trials()
    screened = [t for t in trials if "estimated" in t.user_attrs]
    assert screened and all(t.params["region_count"] == 1 for t in screened)
    assert sum(t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs
               for t in trials) == 4                                     # screened: not counted
    for t in screened:
        assert t.state == TrialState.PRUNED and t.user_attrs["infeasible"]
        assert t.user_attrs["estimated"] == {"latency_ms": 1e3} and "latency_ms" not in t.user_attrs
        assert t.system_attrs["constraints"] == [1e3 - 50]
        assert t.user_attrs["reason"] == "over budget before training: latency_ms 1000.00 ms (estimated) > 50.00 ms"
    hashes = {e["hash"] for e in evaluations(tmp_path)}
    assert not hashes & {t.user_attrs["config_hash"] for t in screened}


def test_search_reports_the_trained_budget_and_what_it_skipped(tmp_path, local_ray):
    from click.testing import CliRunner

    from nas.cli import main
    from nas_testing import write_study

    study = write_study(tmp_path, objectives=["flops", "params"], evaluator=None, trials=6,
                        trials_count="trained", constraints={"flops": BUDGET}, seed=0)
    res = CliRunner().invoke(main, ["search", str(study)])
    assert res.exit_code == 0, res.output
    spec = parse_study(study_dict(tmp_path), label="t")
    trials = stored(tmp_path, spec).get_trials()
    rejected = sum(sum(t.user_attrs["rejected_draws"].values()) for t in trials if "rejected_draws" in t.user_attrs)
    assert rejected > 0 and "/6 trained | " in res.output                    # live progress
    assert "0 over budget (skipped, not trained)" in res.output              # final summary...
    assert f"draws rejected before training: {rejected} of " in res.output   # ...and the draws
