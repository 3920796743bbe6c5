"""`overlock-nas export --from-supernet [DIR]` (issue 19): a trial's weights inherited from a trained
supernet, batch norm re-estimated on the supernet's data set; with --train, fine-tuned from them."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from safetensors.torch import load_file

import overlock
from nas.cli import main
from nas.export import ExportError, TrainSpec, export_trial, open_study
from test_export import write_study
from test_supernet_train import TINY_SPACE

SN_DATA = {"kind": "procedural", "train_size": 16, "val_size": 16}
BN_NAMES = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory) -> Path:
    """A tiny supernet trained one step (16 images, batch 16): what `supernet train` writes."""
    from nas.supernet.train import train_supernet

    tmp = tmp_path_factory.mktemp("sn")
    (tmp / "tiny.yaml").write_text(TINY_SPACE)
    train_supernet(tmp / "tiny.yaml", SN_DATA, tmp / "sn", epochs=1, threads=1,
                   train_settings={"batch_size": 16, "eval_batch_size": 16, "bn_recalibration_batches": 1})
    return tmp / "sn"


def space_configs():
    from space import load_space
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.yaml"
        path.write_text(TINY_SPACE)
        space = load_space(path)
        return [space.sample(random.Random(i)) for i in range(3)]


def make_study(run_dir: Path, evaluator: dict | None = None, study_file: str | None = None) -> Path:
    """Trials 0-2: configs of the tiny space (untrained); trial 3: a config the supernet does not
    hold (widths 16-64, kernel 7). `evaluator` / `study_file` replace the stored study attrs."""
    trials = [("COMPLETE", c.to_dict(), 0.5 + 0.1 * i, 1.0, 1.0, False) for i, c in enumerate(space_configs())]
    trials.append(("COMPLETE", {}, 0.9, 1.0, 1.0, False))
    write_study(run_dir, trials=trials, budgets={})
    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.log")))
    study = optuna.load_study(study_name="synthetic", storage=storage)
    if evaluator is not None:
        study.set_user_attr("evaluator", evaluator)
    if study_file is not None:
        study.set_user_attr("study_file", study_file)
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run_dir, supernet_dir, tmp_path_factory):
    """Trial 0 exported with weights inherited from `supernet_dir` (no programs: fast)."""
    study = open_study(run_dir)[0]
    out = tmp_path_factory.mktemp("out") / "inherited"
    result = export_trial(study, study.trials[0], out, run_dir=run_dir, onnx=False, pt2=False,
                          from_supernet=str(supernet_dir))
    return study, out, result


def reference(study, supernet_dir, seed=0):
    """The trial's sub-network extracted by hand, BN re-estimated as the supernet evaluator does."""
    from nas.data import load_dataset
    from nas.training import Recipe
    from overlock.supernet import Supernet

    net = Supernet.load(supernet_dir / "supernet.safetensors").eval()
    sub = net.fit(overlock.OverLoCKConfig.from_dict(study.trials[0].user_attrs["config"]))
    model = net.extract(sub).eval()
    data = load_dataset(SN_DATA, (32, 32))
    Recipe.from_settings({"bn_recalibration_batches": 4, "batch_size": 64}).reestimate_bn(
        model, data.train, seed=seed)
    return net, sub, model, data


def test_weights_are_the_supernets_sub_network_with_re_estimated_bn(exported, supernet_dir):
    study, out, result = exported
    net, sub, model, _ = reference(study, supernet_dir)
    saved = load_file(str(out / "model.safetensors"))
    extracted = net.sub_state_dict(sub)
    assert saved.keys() == extracted.keys()
    for key, value in extracted.items():
        if not key.endswith(BN_NAMES):
            assert torch.equal(saved[key], value), key
    # batch norm: the sub-network's own statistics (as the evaluator re-estimates), not the supernet's
    assert any(not torch.equal(saved[k], extracted[k]) for k in saved if k.endswith("running_mean"))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(overlock.create_model(out).eval()(x), model(x))
    assert result.ok and result.meta["weights"]["source"] == "supernet"


def test_inherited_accuracy_is_the_supernet_evaluators(exported, supernet_dir):
    from nas.supernet.score import score_subnet

    study, _, result = exported
    net, sub, _, data = reference(study, supernet_dir)
    scored = score_subnet(net, sub, data, bn_batches=4, batch_size=64, eval_batch_size=256, seed=0)
    record = result.meta["weights"]["supernet"]
    assert record["inherited_accuracy"] == scored["accuracy"]
    assert record["inherited_val_loss"] == scored["val_loss"]


def test_config_json_and_card_name_the_supernet(exported, supernet_dir):
    _, out, _ = exported
    meta = json.loads((out / "config.json").read_text())
    record = meta["weights"]["supernet"]
    card = json.loads((supernet_dir / "card.json").read_text())
    assert record["folder"] == str(supernet_dir) and record["epochs"] == 1 and record["seed"] == 0
    assert record["dataset"] == card["dataset"] and record["rule"] == "sandwich"
    assert record["bn_recalibration"] == {"batches": 4, "batch_size": 32, "seed": 0, "images": 16,
                                          "from": "the scoring data set's training split, unaugmented"}
    assert record["validated_on"]["images"] == 16 and len(record["file"]["sha256"]) == 64
    text = (out / "README.md").read_text()
    for needle in (f"Inherited from the supernet `{supernet_dir}`", "not trained stand-alone",
                   "| inherited-weight accuracy | " + f"{record['inherited_accuracy']:.4f}",
                   card["dataset"]["description"], "trained 1 epoch (seed 0, sandwich rule)",
                   "re-estimated on 16 of its training images (4 batches of 32, seed 0)"):
        assert needle in text, needle


def test_train_starts_from_the_inherited_weights(exported, run_dir, supernet_dir, tmp_path, monkeypatch):
    """--from-supernet --train: the training run's model holds the inherited (BN re-estimated)
    weights before its first step; then it trains (the exported weights moved)."""
    from nas.training import Recipe

    study, inherited_out, _ = exported
    inherited = load_file(str(inherited_out / "model.safetensors"))
    seen = []
    real_epoch = Recipe.train_epoch

    def first_epoch(self, model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_epoch(self, model, *args, **kwargs)

    monkeypatch.setattr(Recipe, "train_epoch", first_epoch)
    spec = TrainSpec(epochs=1, dataset={**SN_DATA, "train_size": 16})
    result = export_trial(study, study.trials[0], tmp_path / "tuned", run_dir=run_dir, onnx=False,
                          pt2=False, train=spec, from_supernet=str(supernet_dir))
    assert len(seen) == 1 and seen[0].keys() == inherited.keys()
    assert all(torch.equal(seen[0][k], inherited[k]) for k in inherited), "not the inherited start"
    weights = result.meta["weights"]
    assert weights["source"] == "train" and weights["start"] == "supernet"
    assert weights["supernet"]["folder"] == str(supernet_dir)
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert any(not torch.equal(tuned[k], inherited[k]) for k in inherited if not k.endswith(BN_NAMES))
    assert "Fine-tuned at export time from the weights inherited from the supernet" in \
        (tmp_path / "tuned" / "README.md").read_text()


def test_the_studys_own_supernet_is_the_default(supernet_dir, tmp_path):
    evaluator = {"name": "supernet", "weights": str(supernet_dir), "bn_recalibration_batches": 2,
                 "batch_size": 8, "eval_batch_size": 16, "dataset": SN_DATA}
    run = make_study(tmp_path / "by-evaluator", evaluator=evaluator)
    result = CliRunner().invoke(main, ["export", str(run), "--trial", "1", "--from-supernet",
                                       "--no-onnx", "--no-pt2", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "inherited-weight accuracy" in result.output
    record = json.loads((tmp_path / "a" / "config.json").read_text())["weights"]["supernet"]
    assert record["folder"] == str(supernet_dir)
    assert record["bn_recalibration"]["batches"] == 2 and record["bn_recalibration"]["images"] == 16

    gate = f"name: x\nproxy_gate: {{proxy: supernet, weights: {supernet_dir}}}\n"
    run = make_study(tmp_path / "by-gate", study_file=gate)
    result = CliRunner().invoke(main, ["export", str(run), "--trial", "2", "--no-onnx", "--no-pt2",
                                       "-o", str(tmp_path / "b"), "--from-supernet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["weights"]["supernet"]["folder"] == \
        str(supernet_dir)


def _one_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def test_errors_are_one_line(run_dir, supernet_dir, tmp_path):
    def export(*args, run=run_dir):
        return CliRunner().invoke(main, ["export", str(run), "--no-onnx", "--no-pt2", *map(str, args)])

    _one_error(export("--trial", 3, "--from-supernet", supernet_dir), 1,
               "trial 3's config is not in the supernet", "widths[0]=16 is larger")
    _one_error(export("--trial", 0, "--from-supernet", tmp_path), 1,
               f"--from-supernet {tmp_path}: no supernet.safetensors and no card.json")
    _one_error(export("--trial", 0, "--from-supernet"), 1,
               "the study used no supernet", "--from-supernet DIR")
    _one_error(export("--trial", 0, "--from-supernet", supernet_dir, "--dataset", "procedural"), 2,
               "--dataset with --from-supernet", "add --train")
    _one_error(export("--trial", 0, "--from-supernet", supernet_dir, "--train", "--dataset",
                      "{kind: procedural, num_classes: 5, train_size: 16, val_size: 16}"), 1,
               "trained on 10 classes", "the --train data set has 5")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(supernet_dir, unfinished)
    card = json.loads((unfinished / "card.json").read_text())
    (unfinished / "card.json").write_text(json.dumps({**card, "epochs_done": 0}))
    _one_error(export("--trial", 0, "--from-supernet", unfinished), 1, "no finished epoch")
    assert not (run_dir / "exports").exists() or not any((run_dir / "exports").iterdir())


def test_class_count_of_the_studys_data_set(supernet_dir, tmp_path):
    five = {"name": "train", "epochs": 1, "dataset": {"kind": "procedural", "num_classes": 5,
                                                      "train_size": 16, "val_size": 16}}
    run = make_study(tmp_path / "five", evaluator=five)
    result = CliRunner().invoke(main, ["export", str(run), "--trial", "0", "--from-supernet",
                                       str(supernet_dir), "--no-onnx", "--no-pt2"])
    _one_error(result, 1, "trained on 10 classes", "the study's data set has 5")
    assert not (run / "exports").exists() or not any((run / "exports").iterdir())   # nothing half-written


def test_two_different_supernets_in_the_study_are_refused(supernet_dir, tmp_path):
    gate = "name: x\nproxy_gate: {proxy: supernet, weights: /elsewhere/supernet}\n"
    run = make_study(tmp_path / "two", evaluator={"name": "supernet", "weights": str(supernet_dir)},
                     study_file=gate)
    with pytest.raises(ExportError, match="names two supernets"):
        study = open_study(run)[0]
        export_trial(study, study.trials[0], tmp_path / "x", run_dir=run, onnx=False, pt2=False,
                     from_supernet=True)


def test_re_estimation_uses_the_trials_own_seed(run_dir, supernet_dir, tmp_path):
    """The export re-estimates BN with the sample the search scored with (the trial's `seed`
    attribute), so the inherited-weight accuracy it writes is the study's score, whatever --seed."""
    from nas.supernet.score import score_subnet

    import copy

    study = open_study(run_dir)[0]
    trial = copy.deepcopy(study.trials[0])
    trial.user_attrs["seed"] = 3
    result = export_trial(study, trial, tmp_path / "out", run_dir=run_dir, onnx=False, pt2=False,
                          seed=0, from_supernet=str(supernet_dir))
    net, sub, _, data = reference(study, supernet_dir)
    scored = score_subnet(net, sub, data, bn_batches=4, batch_size=64, eval_batch_size=256, seed=3)
    record = result.meta["weights"]["supernet"]
    assert record["bn_recalibration"]["seed"] == 3
    assert (record["inherited_accuracy"], record["inherited_val_loss"]) == (scored["accuracy"], scored["val_loss"])


def test_inherited_accuracy_is_the_studys_score_under_its_own_scoring_settings(supernet_dir, tmp_path):
    """A study that scored with the supernet on its own terms (a validation subset, other BN
    batches): the export measures the inherited weights the same way, so it writes the study's
    score for the trial, not a figure on the card's whole validation split."""
    from nas.evaluators import get_evaluator

    evaluator = {"name": "supernet", "weights": str(supernet_dir), "bn_recalibration_batches": 2,
                 "batch_size": 8, "val_images": 10, "dataset": {**SN_DATA, "val_size": None}}
    evaluator["dataset"].pop("val_size")
    run = make_study(tmp_path / "own-terms", evaluator=evaluator)
    study = open_study(run)[0]
    trial = study.trials[1]
    result = export_trial(study, trial, tmp_path / "out", run_dir=run, onnx=False, pt2=False,
                          from_supernet=True)
    settings = {k: v for k, v in evaluator.items() if k != "name"}
    score = get_evaluator("supernet", settings).evaluate(
        overlock.OverLoCKConfig.from_dict(trial.user_attrs["config"]), seed=int(trial.user_attrs.get("seed", 0)))
    record = result.meta["weights"]["supernet"]
    assert record["validated_on"]["images"] == 10
    assert (record["inherited_accuracy"], record["inherited_val_loss"]) == (score["score"], score["val_loss"][0])


def test_a_study_stored_before_the_validation_default_is_measured_on_every_image(
        supernet_dir, tmp_path, monkeypatch):
    """The `supernet` evaluator validates a subset by default now (`val_images`); a study stored
    without the key validated the whole split, so its export still does."""
    import nas.evaluators.supernet as sn_evaluator

    monkeypatch.setattr(sn_evaluator, "_default_val_images", lambda dataset: 10)
    evaluator = {"name": "supernet", "weights": str(supernet_dir), "bn_recalibration_batches": 2,
                 "batch_size": 8, "dataset": dict(SN_DATA)}
    run = make_study(tmp_path / "before", evaluator=evaluator)
    study = open_study(run)[0]
    result = export_trial(study, study.trials[1], tmp_path / "out", run_dir=run, onnx=False, pt2=False,
                          from_supernet=True)
    assert result.meta["weights"]["supernet"]["validated_on"]["images"] == SN_DATA["val_size"]


def test_fine_tuning_settings_reach_the_training(run_dir, supernet_dir, tmp_path):
    """`--train-settings` (e.g. a smaller learning rate for fine-tuning inherited weights) goes
    over the study's train settings and is recorded with the weights; bad use is one line."""
    def export(*args):
        return CliRunner().invoke(main, ["export", str(run_dir), "--trial", "0", "--no-onnx", "--no-pt2",
                                         *map(str, args)])

    out = tmp_path / "tuned"
    result = export("--from-supernet", supernet_dir, "--train", "--epochs", "1", "--dataset",
                    "{kind: procedural, train_size: 16, val_size: 16}",
                    "--train-settings", "{lr: 5.0e-4, warmup_epochs: 0, batch_size: 8}", "-o", out)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["weights"]["settings"]
    assert (settings["lr"], settings["warmup_epochs"], settings["batch_size"]) == (5.0e-4, 0, 8)
    _one_error(export("--train-settings", "{lr: 1.0e-4}"), 2, "--train-settings", "add --train")
    _one_error(export("--train", "--train-settings", "[1, 2]"), 2, "must be a YAML mapping")
    _one_error(export("--train", "--train-settings", "{lr: -1}", "-o", tmp_path / "bad"), 1, "lr")
