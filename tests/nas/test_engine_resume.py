"""Resuming a stored study: interrupted trials continue, nothing counts twice, and a resume that
would mix latencies measured differently is refused."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import SearchEngine, StudyMismatch, open_storage
from nas.study import parse_study
from nas_testing import study_dict

A = {"region_count": 4, "widths[3]": 64}    # scores 0.7 at full budget (fake_evaluators.Scripted)
B = {"region_count": 1, "widths[3]": 32}    # scores 0.3


def evaluations(tmp_path: Path) -> list[dict]:
    log = tmp_path / "evals.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def stored(tmp_path: Path, spec) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"))


def new_study(tmp_path: Path, spec) -> optuna.Study:
    (tmp_path / "run").mkdir(exist_ok=True)
    study = optuna.create_study(study_name="tiny", storage=open_storage(spec, tmp_path / "run"),
                                directions=spec.directions)
    study.set_metric_names(spec.objectives)
    return study


def interrupted_after_rung_1(tmp_path: Path, spec, study: optuna.Study) -> str:
    """Trial 0 (config A) as Ctrl-C leaves it after its first rung: FAIL, superseded, its rung-1
    score and weights kept, its params queued again with `requeued_from`."""
    study.enqueue_trial(A)
    trial = study.ask()
    config = spec.space.suggest(trial)
    chash = config.config_hash()
    for k, v in {"config": config.to_dict(), "config_hash": chash, "seed": 1234,
                 "rung_scores": {"1": 0.95}, "epochs": 1, "fidelity": 1 / 3, "eval_wall_s": 0.5,
                 "superseded": True, "reason": "interrupted"}.items():
        trial.set_user_attr(k, v)
    study.tell(trial, state=TrialState.FAIL)
    weights = tmp_path / "run" / "weights" / f"0-{chash}.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_text(json.dumps({"epochs": 1, "hash": chash}))    # the scripted evaluator's format
    Path(str(weights)[:-len(".safetensors")] + ".state.pt").write_text("optimiser state")
    study.enqueue_trial(A, user_attrs={"requeued_from": 0}, skip_if_exists=False)
    return chash


def test_an_interrupted_trial_continues_from_its_last_rung_and_its_score_counts_once(tmp_path, local_ray):
    # successive halving needs 3 architectures at a rung before it cuts: A (interrupted, then run
    # again) and B are 2, so B continues. Before, A's rung-1 score was counted for the superseded
    # trial and again for its re-run (3 scores: B was cut), and A was retrained from epoch 0.
    spec = parse_study(study_dict(tmp_path, trials=2, parallel=1, evaluator={"rungs": [1, 3]},
                                  successive_halving={"eta": 2, "min_trials": 3}), label="t")
    study = new_study(tmp_path, spec)
    chash = interrupted_after_rung_1(tmp_path, spec, study)
    study.enqueue_trial(B)

    lines = []
    SearchEngine(spec, on_progress=lambda p, line: line and lines.append(line)).run()
    trials = stored(tmp_path, spec).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE], \
        [t.user_attrs.get("reason") for t in trials]
    again, b = trials[1], trials[2]
    assert again.user_attrs["continued_from"] == 0 and again.user_attrs["seed"] == 1234
    assert again.user_attrs["rung_scores"] == {"1": 0.95, "3": pytest.approx(again.values[0])}
    assert again.user_attrs["epochs"] == 3 and again.user_attrs["fidelity"] == 1
    # A resumed from its rung-1 weights (no epoch trained twice); B trained both rungs
    assert [(e["hash"] == chash, e["budget"], e["resume"]) for e in evaluations(tmp_path)] == \
        [(True, 3, True), (False, 1, False), (False, 3, True)]
    assert "#1 continues from 1 epochs (trained by #0)" in lines
    # the original's files were taken over, not left behind; finished trials keep only weights
    weights = sorted(p.name for p in (tmp_path / "run" / "weights").iterdir())
    assert weights == sorted([f"1-{chash}.safetensors", f"2-{b.user_attrs['config_hash']}.safetensors"])
    assert again.user_attrs["weights"] == f"weights/1-{chash}.safetensors"


def test_a_failed_trial_leaves_no_files(tmp_path, local_ray):
    spec = parse_study(study_dict(tmp_path, trials=1, evaluator={"rungs": [1, 3], "script": {4: "raise"}}),
                       label="t")
    study = new_study(tmp_path, spec)
    chash = interrupted_after_rung_1(tmp_path, spec, study)     # its re-run raises at rung 3
    SearchEngine(spec).run()
    trials = stored(tmp_path, spec).get_trials()
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["continued_from"] == 0
    assert trials[1].user_attrs["reason"] == "RuntimeError: scripted failure"
    assert not list((tmp_path / "run" / "weights").iterdir()), chash


LATENCY = {"repeats": 5, "warmup": 1, "threads": 1}


def latency_study(tmp_path: Path, **overrides):
    data = study_dict(tmp_path, objectives=["flops", "latency_ms"], evaluator=None, trials=1,
                      latency=LATENCY)
    data.update(overrides)
    return parse_study(data, label="study.yaml")


def stored_latency_study(tmp_path: Path, latency: dict, device: str = "cpu") -> optuna.Study:
    """A stored study as the engine records it, with one finished trial (the budget of 1 spent)."""
    spec = latency_study(tmp_path)
    study = new_study(tmp_path, spec)
    study.set_user_attr("constraints", {})
    study.set_user_attr("space", spec.space_dict)
    study.set_user_attr("device", device)
    study.set_user_attr("latency", latency)
    trial = study.ask()
    spec.space.suggest(trial)
    study.tell(trial, [1.0, 1.0])
    return study


@pytest.mark.parametrize("change, message", [
    ({"latency": {**LATENCY, "repeats": 7}}, "latency.repeats: stored 5, now 7"),
    ({"latency": {**LATENCY, "dtype": "bf16"}}, "latency.dtype: stored 'fp32', now 'bf16'"),
    ({"device": "cuda"}, "device: 'cuda' differs from 'cpu', which the stored study measured its latencies on"),
])
def test_a_resume_that_would_mix_latencies_measured_differently_is_refused(tmp_path, change, message):
    latency = latency_study(tmp_path).latency.model_dump()
    stored_latency_study(tmp_path, latency)
    with pytest.raises(StudyMismatch) as info:
        SearchEngine(latency_study(tmp_path, **change)).run()
    text = str(info.value)
    assert text.startswith("study.yaml: ") and message in text and "\n" not in text, text


def test_an_old_study_without_later_latency_keys_resumes(tmp_path, local_ray):
    latency = latency_study(tmp_path).latency.model_dump()
    defaults = type(latency_study(tmp_path).latency)().model_dump()
    old = {k: v for k, v in latency.items() if k in ("batch", "dtype", "channels_last", "warmup",
                                                     "repeats", "threads", "profile_stages")}
    assert all(latency[k] == defaults[k] for k in set(latency) - set(old))   # later keys: defaults
    stored_latency_study(tmp_path, old)
    # scheduling settings may change: they never change a measured value
    spec = latency_study(tmp_path, latency={**LATENCY, "timeout_s": 30, "ahead": 1})
    result = SearchEngine(spec).run()                         # nothing left to run: resumes, ends
    assert not result.interrupted and len(stored(tmp_path, latency_study(tmp_path)).trials) == 1


def test_latencies_measured_on_another_machine_are_not_mixed_in(tmp_path, local_ray):
    spec = latency_study(tmp_path)
    study = stored_latency_study(tmp_path, spec.latency.model_dump())
    trial = study.ask()
    spec.space.suggest(trial)
    trial.set_user_attr("latency_device", "cpu: Some Other CPU x64 threads, torch 2.0.0, na2d_av pure PyTorch")
    study.tell(trial, [1.0, 1.0])
    with pytest.raises(StudyMismatch) as info:
        SearchEngine(latency_study(tmp_path, trials=3)).run()
    text = str(info.value)
    assert text.startswith("study.yaml: latency: this run measures on 'cpu: ") and \
        "but the stored study's latencies were measured on 'cpu: Some Other CPU x64 threads" in text, text
    assert len(stored(tmp_path, spec).trials) == 2
