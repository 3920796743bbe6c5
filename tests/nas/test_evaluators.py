"""Evaluators: proxy training learns, resumes exactly between rungs, fails cleanly; zero-cost
proxies are finite and rank a big net above a tiny one."""

import math

import pytest
import torch
from safetensors.torch import load_file

from nas.evaluators import TrialError, get_evaluator
from overlock import OverLoCKConfig

SMALL_DATA = {"kind": "procedural", "train_size": 48, "val_size": 24}
# The quickstart budget (tells the engine's studies/quickstart.yaml what learns in seconds).
QUICK = {"epochs": 5, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 0.5, "resolution": 32,
         "threads": 1, "dataset": {"kind": "procedural", "train_size": 600, "val_size": 300}}


def _fast(**extra):
    return {"epochs": 3, "batch_size": 16, "resolution": 32, "warmup_epochs": 0.5,
            "dataset": SMALL_DATA, **extra}


@pytest.mark.slow
def test_proxy_training_really_learns(tiny_config, tmp_path):
    ev = get_evaluator("train", QUICK)
    result = ev.evaluate(tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path),
                         resume_from=None)
    # 10 balanced classes: chance is 0.10
    assert result["score"] >= 0.35, result["history"]
    # batch-norm recalibration makes the first rung informative (not every trial at chance)
    assert result["history"][0] > 0.15, result["history"]
    assert result["epochs"] == 5 and result["fidelity"] == 1.0 and len(result["history"]) == 5
    assert result["train_loss"][-1] < result["train_loss"][0]
    assert len(result["val_loss"]) == 5 and result["val_loss"][-1] < result["val_loss"][0]
    assert result["val_loss"][0] < math.log(10)      # below chance's cross-entropy after one epoch


def test_resume_between_rungs_equals_continuous_training(tiny_config, tmp_path):
    ev = get_evaluator("train", _fast(rungs=[1]))
    assert ev.rungs == [1, 3]
    straight = ev.evaluate(tiny_config, budget_epochs=3, device="cpu", seed=7,
                           workdir=str(tmp_path / "a"), resume_from=None)
    rung1 = ev.evaluate(tiny_config, budget_epochs=1, device="cpu", seed=7,
                        workdir=str(tmp_path / "b"), resume_from=None, weights_name="t1")
    assert rung1["epochs"] == 1 and rung1["fidelity"] == pytest.approx(1 / 3)
    resumed = ev.evaluate(tiny_config, budget_epochs=3, device="cpu", seed=7,
                          workdir=str(tmp_path / "c"), resume_from=rung1["weights"], weights_name="t1")
    assert resumed["epochs"] == 3 and resumed["fidelity"] == 1.0
    assert resumed["history"] == straight["history"]
    assert resumed["train_loss"] == straight["train_loss"]
    assert resumed["val_loss"] == straight["val_loss"]    # the rung's validation loss is carried over
    a, b = load_file(straight["weights"]), load_file(resumed["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a restart at the rung (2 fresh epochs) would have repeated epochs 1-2, not continued to 2-3
    restart = ev.evaluate(tiny_config, budget_epochs=2, device="cpu", seed=7,
                          workdir=str(tmp_path / "d"), resume_from=None)
    assert restart["train_loss"] == straight["train_loss"][:2]
    assert resumed["train_loss"][1:] != restart["train_loss"]


def test_weights_are_safetensors_with_config_metadata(tiny_config, tmp_path):
    from safetensors import safe_open

    ev = get_evaluator("train", _fast(epochs=1))
    result = ev.evaluate(tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path),
                         resume_from=None, weights_name="3-abc")
    assert result["weights"] == str(tmp_path / "3-abc.safetensors")
    with safe_open(result["weights"], "pt") as fh:
        meta = fh.metadata()
    assert OverLoCKConfig.from_json(meta["config"]).widths == tiny_config.widths
    assert int(meta["epochs"]) == 1 and 0.0 <= result["score"] <= 1.0


def test_nan_loss_is_a_trial_error(tiny_config, tmp_path):
    ev = get_evaluator("train", _fast(lr=1e30, warmup_epochs=0, epochs=2))
    with pytest.raises(TrialError) as info:
        ev.evaluate(tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path),
                    resume_from=None)
    assert "loss became nan" in info.value.reason and "\n" not in info.value.reason


def test_out_of_memory_is_a_trial_error(tiny_config, tmp_path, monkeypatch):
    import overlock.model

    def boom(self, x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    monkeypatch.setattr(overlock.model.OverLoCK, "forward", boom)
    with pytest.raises(TrialError, match=r"^out of memory on cpu \(batch 16\)"):
        get_evaluator("train", _fast()).evaluate(tiny_config, budget_epochs=1, device="cpu", seed=0,
                                                 workdir=str(tmp_path), resume_from=None)


def test_resume_problems_are_trial_errors(tiny_config, tmp_path):
    ev = get_evaluator("train", _fast(epochs=2))
    with pytest.raises(TrialError, match="resume: weights .* not found"):
        ev.evaluate(tiny_config, budget_epochs=2, device="cpu", seed=0, workdir=str(tmp_path),
                    resume_from=str(tmp_path / "missing.safetensors"))
    first = ev.evaluate(tiny_config, budget_epochs=1, device="cpu", seed=0, workdir=str(tmp_path),
                        resume_from=None)
    changed = get_evaluator("train", _fast(epochs=2, lr=5e-3))
    with pytest.raises(TrialError, match=r"settings changed .*\(lr\)"):
        changed.evaluate(tiny_config, budget_epochs=2, device="cpu", seed=0, workdir=str(tmp_path),
                         resume_from=first["weights"])


def test_threads_setting_does_not_leak(tiny_config, tmp_path):
    before = torch.get_num_threads()
    get_evaluator("synflow", {"threads": 1, "dataset": SMALL_DATA}).evaluate(
        tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path), resume_from=None)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name, settings, message", [
    ("grid", {}, "unknown evaluator 'grid'"),
    ("train", {"epochz": 3}, "unknown setting 'epochz'"),
    ("train", {"epochs": 0}, "epochs=0 must be an integer >= 1"),
    ("train", {"epochs": 4, "rungs": [2, 6]}, "last rung 6 exceeds epochs=4"),
    ("train", {"rungs": [3, 1]}, "strictly increasing"),
    ("train", {"amp": "fp8"}, "amp='fp8' must be one of"),
    ("train", {"dataset": {"kind": "imagefolder", "path": "/no/data"}}, "dataset.path='/no/data'"),
    ("zico", {"lr": 1e-3}, "unknown setting 'lr'"),
])
def test_bad_settings_raise_value_error_naming_them(name, settings, message):
    with pytest.raises(ValueError) as info:
        get_evaluator(name, settings)
    assert message in str(info.value)


def test_resolved_settings_round_trip():
    ev = get_evaluator("train", {"epochs": 6, "rungs": [1, 3], "resolution": "32x48"})
    assert ev.metric == "accuracy" and ev.rungs == [1, 3, 6]
    assert ev.settings["resolution"] == [32, 48] and ev.settings["dataset"]["kind"] == "procedural"
    again = get_evaluator("train", ev.settings)
    assert again.settings == ev.settings and again.rungs == ev.rungs
    for proxy in ("synflow", "naswot", "zico"):
        zc = get_evaluator(proxy, None)
        assert zc.metric == proxy and zc.rungs == [] and get_evaluator(proxy, zc.settings).settings == zc.settings


def test_zero_cost_proxies_are_finite_and_synflow_prefers_a_bigger_net(tiny_config, tmp_path):
    big = tiny_config.replace(base_depths=(2, 2, 3), focus_depths=(2, 2), widths=(32, 64, 128, 192),
                              head_width=256, focus_heads=(2, 2))
    scores = {}
    for proxy in ("synflow", "naswot", "zico"):
        ev = get_evaluator(proxy, {"batch_size": 16, "resolution": 32, "dataset": SMALL_DATA})
        for label, config in (("tiny", tiny_config), ("big", big)):
            r = ev.evaluate(config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path),
                            resume_from=None)
            assert math.isfinite(r["score"]) and r["weights"] is None and r["fidelity"] == 1.0
            scores[proxy, label] = r["score"]
    assert scores["synflow", "big"] > 100 * scores["synflow", "tiny"] > 0
    assert scores["naswot", "tiny"] > 0 and scores["zico", "tiny"] > 0
    # same seed, same score
    again = get_evaluator("naswot", {"batch_size": 16, "resolution": 32, "dataset": SMALL_DATA}).evaluate(
        tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path), resume_from=None)
    assert again["score"] == scores["naswot", "tiny"]


def test_channels_last_training_runs(tiny_config, tmp_path):
    ev = get_evaluator("train", _fast(epochs=1, channels_last=True))
    r = ev.evaluate(tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path),
                    resume_from=None)
    assert math.isfinite(r["train_loss"][0]) and 0 <= r["score"] <= 1


def test_amp_bf16_training_runs(tiny_config, tmp_path):
    # AMP is what a GPU trial uses by default (amp: auto); CPU autocast exercises the same op path
    ev = get_evaluator("train", _fast(epochs=1, amp="bf16"))
    r = ev.evaluate(tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path),
                    resume_from=None)
    assert math.isfinite(r["train_loss"][0])
