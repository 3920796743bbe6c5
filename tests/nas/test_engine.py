"""The ask/tell engine, in-process on a local Ray, with the scripted test evaluator."""

import json
import math
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import DriverBusy, DriverLock, SearchEngine, SearchError, StudyMismatch, open_storage
from nas.study import parse_study
from nas_testing import study_dict

BUDGET = 2.0e6   # MACs: every widths[3] = 128 architecture is over it


def evaluations(tmp_path: Path) -> list[dict]:
    log = tmp_path / "evals.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def load(tmp_path: Path, name: str = "tiny") -> optuna.Study:
    spec = parse_study(study_dict(tmp_path), label="t")
    return optuna.load_study(study_name=name, storage=open_storage(spec, tmp_path / "run"))


def test_study_records_constraints_dedup_and_successive_halving(tmp_path, local_ray):
    # 16 trials over 12 architectures: duplicates are certain
    spec = parse_study(study_dict(
        tmp_path, trials=16, parallel=2, constraints={"flops": BUDGET},
        evaluator={"rungs": [1, 3]}, successive_halving={"eta": 2, "min_trials": 2}), label="t")
    lines = []
    result = SearchEngine(spec, on_progress=lambda p, line: line and lines.append(line)).run()
    study = load(tmp_path)
    trials = study.get_trials()
    assert len(trials) == 16 and not result.interrupted
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), \
        [(t.number, t.state, t.user_attrs.get("reason")) for t in trials]
    assert study.metric_names == ["accuracy", "flops"]
    for key in ("overlock_nas_version", "study_file", "objectives", "constraints", "space",
                "space_size", "sampler", "seed", "device", "evaluator", "started_at", "wall_time_s"):
        assert key in study.user_attrs, key
    assert study.user_attrs["constraints"] == {"flops": BUDGET}

    evals = evaluations(tmp_path)
    trained = Counter((e["hash"], e["budget"]) for e in evals)
    assert max(trained.values()) == 1, "an architecture was evaluated twice at one budget"

    by_number = {t.number: t for t in trials}
    kinds = Counter()
    for t in trials:
        ua = t.user_attrs
        assert ua["config_hash"] and ua["flops"] > 0 and ua["params"] > 0 and "summary" in ua
        if ua.get("reused_from") is not None:
            kinds["reused"] += 1
            original = by_number[ua["reused_from"]]
            assert original.user_attrs["config_hash"] == ua["config_hash"]
            assert t.state == original.state and t.values == original.values
            continue
        if ua.get("infeasible"):
            kinds["infeasible"] += 1
            assert t.state == TrialState.PRUNED and ua["flops"] > BUDGET
            assert t.system_attrs["constraints"] == [ua["flops"] - BUDGET]   # the one stored list
            assert t.constraints == {"0": ua["flops"] - BUDGET} and ua["flops"] > BUDGET
            assert ua["config_hash"] not in {e["hash"] for e in evals}      # never trained
            assert "over budget before training: flops" in ua["reason"]
        elif t.state == TrialState.PRUNED:
            kinds["halved"] += 1
            assert ua["fidelity"] < 1 and ua["epochs"] == 1 and list(ua["rung_scores"]) == ["1"]
            assert "successive halving" in ua["reason"]
            assert t.constraints == {"0": ua["flops"] - BUDGET} and ua["flops"] <= BUDGET   # recorded
        else:
            kinds["complete"] += 1
            assert t.state == TrialState.COMPLETE
            assert ua["fidelity"] == 1.0 and ua["epochs"] == 3 and len(ua["history"]) == 3
            assert t.values == [pytest.approx(ua["score"]), ua["flops"]]
            assert t.system_attrs["constraints"] == [ua["flops"] - BUDGET] and ua["flops"] <= BUDGET
            assert (tmp_path / "run" / ua["weights"]).exists()
            assert not list((tmp_path / "run" / "weights").glob("*.state.pt"))
            # trained to rung 1, then resumed (not restarted) to the full budget
            assert [(e["budget"], e["resume"]) for e in evals if e["hash"] == ua["config_hash"]] \
                == [(1, False), (3, True)]
    assert kinds["reused"] >= 4 and kinds["complete"] >= 1
    # a draw over the budget never becomes a trial (nas.search.proposals): it is counted instead
    assert kinds["infeasible"] == 0 and kinds["halved"] >= 1, kinds
    assert sum(sum(t.user_attrs.get("rejected_draws", {}).values()) for t in trials) >= 1

    # the Pareto front: feasible, full fidelity, and the engine's summary agrees with optuna
    front = study.best_trials
    assert front and all(t.state == TrialState.COMPLETE and t.user_attrs["fidelity"] == 1.0
                         and t.constraints["0"] <= 0 for t in front)
    assert {t.number for t in result.pareto} == {t.number for t in front}
    p = result.progress
    assert (p.done, p.complete + p.infeasible + p.halved + p.failed, p.reused) == (16, 16, kinds["reused"])
    # the fvcore cross-check ran on trial 0 and agreed
    assert by_number[0].user_attrs["flops_fvcore"] == by_number[0].user_attrs["flops"]
    assert any(line.startswith("#") for line in lines)


def test_failures_are_recorded_and_the_study_goes_on(tmp_path, local_ray):
    script = {1: "raise", 2: "nan", 3: "hang", 4: "die_once", 5: "trial_error"}
    space = dict(study_dict(tmp_path)["space"])
    space["dimensions"] = {"region_count": {"choices": [1, 2, 3, 4, 5, 6]}}
    spec = parse_study(study_dict(
        tmp_path, space=space, trials=6, parallel=2, trial_timeout_s=8, max_retries=2,
        evaluator={"script": script}), label="t")
    # queue one trial per behaviour (users can enqueue architectures the same way)
    (tmp_path / "run").mkdir()
    storage = open_storage(spec, tmp_path / "run")
    study = optuna.create_study(study_name="tiny", storage=storage, directions=spec.directions)
    study.set_metric_names(spec.objectives)
    for r in range(1, 7):
        study.enqueue_trial({"region_count": r})

    SearchEngine(spec).run()
    trials = {t.params["region_count"]: t for t in load(tmp_path).get_trials()}
    assert len(trials) == 6
    reasons = {r: t.user_attrs.get("reason", "") for r, t in trials.items()}
    states = {r: t.state for r, t in trials.items()}
    assert states == {1: TrialState.FAIL, 2: TrialState.FAIL, 3: TrialState.FAIL,
                      4: TrialState.COMPLETE, 5: TrialState.FAIL, 6: TrialState.COMPLETE}, reasons
    assert reasons[1] == "RuntimeError: scripted failure"
    assert "Traceback" in trials[1].user_attrs["error"] and "scripted failure" in trials[1].user_attrs["error"]
    assert "not a finite number" in reasons[2]
    assert reasons[3] == "timeout: evaluation ran longer than 8 s"
    assert reasons[5] == "out of memory on cpu (scripted)"
    # the worker that died was retried by Ray: two attempts, one trial
    attempts = Counter(e["hash"] for e in evaluations(tmp_path))
    assert attempts[trials[4].user_attrs["config_hash"]] == 2
    assert math.isfinite(trials[6].values[0])


def test_second_driver_on_a_run_directory_is_refused(tmp_path):
    spec = parse_study(study_dict(tmp_path), label="t")
    with DriverLock(tmp_path / "run"):
        with pytest.raises(DriverBusy, match=r"another overlock-nas search is running on this run "
                                             r"directory \(pid \d+"):
            SearchEngine(spec).run()
    assert not (tmp_path / "run" / "study.log").exists()   # refused before touching storage


def test_changed_objectives_or_budgets_are_refused_on_resume(tmp_path):
    spec = parse_study(study_dict(tmp_path, objectives=["accuracy", "params"]), label="t")
    (tmp_path / "run").mkdir()
    study = optuna.create_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"),
                                directions=spec.directions)
    study.set_metric_names(spec.objectives)
    study.set_user_attr("constraints", {"flops": 3e6})
    other = parse_study(study_dict(tmp_path), label="study.yaml")   # objectives accuracy, flops
    with pytest.raises(StudyMismatch) as info:
        SearchEngine(other).run()
    assert str(info.value).startswith("study.yaml: objectives ['accuracy (maximize)', 'flops (minimize)'] "
                                      "differ from those stored in")
    assert "['accuracy (maximize)', 'params (minimize)']" in str(info.value)
    same = parse_study(study_dict(tmp_path, objectives=["accuracy", "params"],
                                  constraints={"flops": 2e6}), label="study.yaml")
    with pytest.raises(StudyMismatch, match="study.yaml: constraints differ from those the stored study"):
        SearchEngine(same).run()
    assert len(load(tmp_path).trials) == 0


def test_latency_is_measured_before_training_cached_and_budgeted(tmp_path, local_ray):
    latency = {"repeats": 5, "warmup": 1, "threads": 1}
    spec = parse_study(study_dict(tmp_path, trials=4, parallel=2, objectives=["accuracy", "latency_ms"],
                                  latency=latency), label="t")
    SearchEngine(spec).run()
    trials = load(tmp_path).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    for t in complete:
        ua = t.user_attrs
        assert t.values[1] == ua["latency_ms"] > 0
        assert ua["latency_device"].startswith("cpu: ") and ua["latency_batch"] == 1
        assert ua["latency_dtype"] == "fp32" and ua["latency_channels_last"] is False
        assert ua["latency_p90_ms"] >= ua["latency_raw_ms"] and ua["latency_spread_ms"] >= 0   # as timed
        assert ua["latency_ms"] > 0 and ua["latency_speed"] > 0
    cache = json.loads((tmp_path / "run" / "latency_cache.json").read_text())
    assert len(cache) == len({t.user_attrs["config_hash"] for t in complete})

    # a latency budget nothing meets: every trial is recorded, none is trained
    other = tmp_path / "b"
    other.mkdir()
    spec = parse_study(study_dict(other, trials=3, constraints={"latency_ms": 1e-4},
                                  latency=latency), label="t")
    SearchEngine(spec).run()
    trials = load(other).get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.PRUNED for t in trials)
    for t in trials:
        assert t.user_attrs["infeasible"] and t.constraints == {"0": t.user_attrs["latency_ms"] - 1e-4}
        assert t.user_attrs["reason"].startswith("over budget before training: latency_ms")
    assert evaluations(other) == []


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random", "gp"])
def test_every_sampler_runs_and_a_resumed_study_does_not_replay(tmp_path, local_ray, sampler):
    # objectives known without training: no evaluator runs, only the sampler and the records
    def spec(trials):
        return parse_study(study_dict(tmp_path, objectives=["flops", "params"], evaluator=None,
                                      constraints={"flops": BUDGET}, sampler={"name": sampler},
                                      trials=trials), label="t")
    SearchEngine(spec(6)).run()
    SearchEngine(spec(12)).run()          # same command, larger budget: continues the study
    trials = load(tmp_path).get_trials()
    assert len(trials) == 12 and study_sampler(tmp_path) == sampler
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert t.values == [t.user_attrs["flops"], t.user_attrs["params"]]
            assert t.user_attrs["fidelity"] == 1.0 and t.constraints == {"0": t.user_attrs["flops"] - BUDGET}
            assert t.constraints["0"] <= 0
    # a fixed seed would make the second run propose exactly the first run's sequence
    assert [t.params for t in trials[6:]] != [t.params for t in trials[:6]]


def study_sampler(tmp_path) -> str:
    return load(tmp_path).user_attrs["sampler"]


def test_trials_no_node_can_run_are_refused(tmp_path, local_ray):
    spec = parse_study(study_dict(tmp_path, resources={"cpus": 8}), label="study.yaml")
    with pytest.raises(SearchError, match=r"study.yaml: resources: one trial needs 8 CPUs and 0 GPUs "
                                          r"\(device cpu\), but no Ray node has them"):
        SearchEngine(spec).run()
    assert load(tmp_path).get_trials() == []


def _new_study(tmp_path, spec) -> optuna.Study:
    (tmp_path / "run").mkdir(exist_ok=True)
    study = optuna.create_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"),
                                directions=spec.directions)
    study.set_metric_names(spec.objectives)
    return study


def test_a_duplicate_of_a_trial_in_flight_waits_for_it(tmp_path, local_ray):
    spec = parse_study(study_dict(tmp_path, trials=3, parallel=2, evaluator={"sleep_s": 0.5}),
                       label="t")
    study = _new_study(tmp_path, spec)
    for params in ({"region_count": 2, "widths[3]": 64}, {"region_count": 2, "widths[3]": 64},
                   {"region_count": 3, "widths[3]": 64}):
        study.enqueue_trial(params)
    SearchEngine(spec).run()
    t0, t1, t2 = load(tmp_path).get_trials()
    assert t1.user_attrs["reused_from"] == 0 and t1.values == t0.values
    assert t0.state == t1.state == t2.state == TrialState.COMPLETE
    assert Counter(e["hash"] for e in evaluations(tmp_path)) == {
        t0.user_attrs["config_hash"]: 1, t2.user_attrs["config_hash"]: 1}


def test_an_orphan_that_finished_a_rung_continues_from_it(tmp_path, local_ray):
    """A trial left RUNNING after its first rung (driver killed) resumes from the rung's weights."""
    from overlock import OverLoCKConfig

    spec = parse_study(study_dict(tmp_path, trials=1, evaluator={"rungs": [1, 3]}), label="t")
    study = _new_study(tmp_path, spec)
    trial = study.ask()
    config = spec.space.suggest(trial)
    chash = config.config_hash()
    for k, v in {"config": config.to_dict(), "config_hash": chash, "rung_scores": {"1": 0.5},
                 "driver": "elsewhere"}.items():
        trial.set_user_attr(k, v)
    weights = tmp_path / "run" / "weights" / f"0-{chash}.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_text(json.dumps({"epochs": 1, "hash": chash}))   # the scripted evaluator's format

    SearchEngine(spec).run()
    (t,) = load(tmp_path).get_trials()
    assert t.state == TrialState.COMPLETE and t.user_attrs["epochs"] == 3 and t.user_attrs["fidelity"] == 1
    assert t.user_attrs["rung_scores"] == {"1": 0.5, "3": pytest.approx(t.values[0])}
    assert [(e["budget"], e["resume"]) for e in evaluations(tmp_path)] == [(3, True)]
    assert OverLoCKConfig.from_dict(t.user_attrs["config"]).config_hash() == chash


def test_each_budget_reaches_samplers_once_and_the_dashboard_list_greys_infeasible(tmp_path, local_ray):
    """Constraints are stored once, as the list optuna-dashboard reads; samplers see one value per
    budget (before: '0', '1', 'flops' and 'memory_mb', every violation counted twice)."""
    from optuna.samplers._tpe.sampler import _get_infeasible_trial_score
    from optuna.study._constrained_optimization import _get_feasible_trials

    from nas.storage import named_constraints, study_budgets

    spec = parse_study(study_dict(tmp_path, objectives=["flops", "params"], evaluator=None, trials=10,
                                  constraints={"flops": BUDGET, "memory_mb": 1e4}), label="t")
    SearchEngine(spec).run()
    study = load(tmp_path)
    budgets = study_budgets(study)
    assert list(budgets) == ["flops", "memory_mb"]
    finished = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # draws over these budgets never become trials (nas.search.proposals); an infeasible stored
    # trial (a measured latency budget) is checked in test_latency_is_measured_before_training...
    assert len(finished) == 10 and not any(t.user_attrs.get("infeasible") for t in finished)
    for t in finished:
        ua = t.user_attrs
        violations = [ua["flops"] - BUDGET, ua["memory_mb"] - 1e4]
        assert set(t.constraints) == {"0", "1"}                    # what every sampler reads
        assert t.system_attrs["constraints"] == violations          # what the dashboard reads
        assert named_constraints(t, budgets) == {"flops": violations[0], "memory_mb": violations[1]}
        assert _get_infeasible_trial_score(t) == sum(v for v in violations if v > 0)   # counted once
        assert (max(t.system_attrs["constraints"]) > 0) == bool(ua.get("infeasible"))
    assert {t.number for t in _get_feasible_trials(finished)} == \
        {t.number for t in finished if not t.user_attrs.get("infeasible")}


def test_a_study_begun_with_named_constraints_keeps_its_format(tmp_path, local_ray):
    """A run directory written before constraints were stored once (named + list) resumes: its
    trials keep one format (GPSampler refuses differing constraint counts) and read by name."""
    from optuna.distributions import CategoricalDistribution

    from nas.storage import named_constraints

    def spec(trials):
        return parse_study(study_dict(tmp_path, objectives=["flops", "params"], evaluator=None,
                                      trials=trials, constraints={"flops": BUDGET}), label="t")
    SearchEngine(spec(2)).run()
    study = load(tmp_path)
    old = study.get_trials()[0]
    # what the earlier engine wrote: set_constraint("flops") and the legacy list
    study.add_trial(optuna.trial.create_trial(
        params=old.params, distributions={k: CategoricalDistribution([v]) for k, v in old.params.items()},
        state=old.state, values=old.values, user_attrs={**old.user_attrs, "reused_from": old.number},
        system_attrs={"constraints": [old.constraints["0"]], "constraints:flops": old.constraints["0"]}))
    SearchEngine(spec(6)).run()
    trials = load(tmp_path).get_trials()
    assert len(trials) == 6
    for t in trials[3:]:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            assert set(t.constraints) == {"0", "flops"}
            assert named_constraints(t, {"flops": BUDGET}) == {"flops": t.user_attrs["flops"] - BUDGET}


def test_halving_can_rank_a_rung_by_validation_loss(tmp_path, local_ray):
    """signal: val_loss ranks each rung by the validation loss the evaluator reports (here the
    opposite order to its accuracy), records it as rung_val_loss, and says so in the reason."""
    spec = parse_study(study_dict(
        tmp_path, trials=10, parallel=1, evaluator={"rungs": [1, 3], "val_loss": "against_accuracy"},
        successive_halving={"eta": 2, "min_trials": 2, "signal": "val_loss"}), label="t")
    SearchEngine(spec).run()
    own = [t for t in load(tmp_path).get_trials() if "reused_from" not in t.user_attrs]
    halved = [t for t in own if t.state == TrialState.PRUNED and "successive halving" in t.user_attrs["reason"]]
    done = [t for t in own if t.state == TrialState.COMPLETE]
    assert halved and done
    for t in halved:
        ua = t.user_attrs
        assert ua["rung_val_loss"] == {"1": pytest.approx(ua["rung_scores"]["1"])}
        said, cutoff = ua["reason"].split("validation loss ")[1], ua["reason"].split("(cutoff ")[1]
        assert float(said.split()[0]) > float(cutoff.rstrip(")")), ua["reason"]
        assert "is above the best 1/2 of" in ua["reason"]
    # a higher rung-1 accuracy was stopped while a lower one went on: accuracy was not the rank
    assert max(t.user_attrs["rung_scores"]["1"] for t in halved) > min(
        t.user_attrs["rung_scores"]["1"] for t in done)


def test_the_halving_signal_is_a_choice_of_two(tmp_path):
    with pytest.raises(ValueError, match="successive_halving.signal") as info:
        parse_study(study_dict(tmp_path, successive_halving={"signal": "loss"}), label="t")
    assert "\n" not in str(info.value)


def test_halving_by_validation_loss_fails_a_trial_whose_evaluator_reports_none(tmp_path, local_ray):
    spec = parse_study(study_dict(
        tmp_path, trials=3, parallel=1, evaluator={"rungs": [1, 3]},
        successive_halving={"eta": 2, "min_trials": 2, "signal": "val_loss"}), label="t")
    SearchEngine(spec).run()
    trials = load(tmp_path).get_trials()
    assert trials and all(t.state == TrialState.FAIL for t in trials)
    assert {t.user_attrs["reason"] for t in trials} == {
        "successive_halving.signal=val_loss: the evaluator returned no finite val_loss"}
    assert all(list(t.user_attrs["rung_scores"]) == ["1"] for t in trials)   # what it did report is kept
