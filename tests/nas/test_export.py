"""`overlock-nas export` on a synthetic study written through Optuna's API per docs/reference/storage.md."""

import json
import math
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from safetensors import safe_open
from safetensors.torch import load_file

import overlock
from nas.cli import main
from nas.export import ExportError, TrainSpec, export_trial, open_study, select_trial, train_model
from overlock import OverLoCKConfig, hub

TINY = dict(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1), widths=(16, 32, 64, 64),
            focus_heads=(1, 1), head_width=32, reparam_kernels=(5, 5, 7, 7), dynamic_kernels=(5, 3),
            small_kernel=3, region_count=2, resolution=(32, 32), num_classes=10)
DATA = {"kind": "procedural", "train_size": 32, "val_size": 32}
EVALUATOR = {"name": "train", "epochs": 1, "batch_size": 16, "dataset": DATA}
FLOPS_BUDGET = 4e6
TRAINED_ON = "procedural, 10 classes, 32 train / 32 val images at 32x32"

# trial number -> (state, config change, accuracy, latency_ms, fidelity, trained weights?)
# flops (analytic): A < B < C; C breaks the study's flops budget.
A = {}
B = {"widths": (16, 32, 64, 128)}
C = {"widths": (32, 64, 128, 128)}
TRIALS = [
    ("COMPLETE", A, 0.60, 2.0, 1.0, True),     # 0: feasible, small, trained weights
    ("COMPLETE", B, 0.80, 4.0, 1.0, False),    # 1: feasible, zero-cost-like (no weights)
    ("COMPLETE", C, 0.95, 3.0, 1.0, False),    # 2: best accuracy but breaks the flops budget
    ("PRUNED", C, None, None, 1.0, False),     # 3: infeasible before training
    ("PRUNED", B, None, 1.0, 1 / 3, False),    # 4: stopped by successive halving
    ("FAIL", A, None, None, None, False),      # 5: raised
    ("COMPLETE", B, 0.90, 7.0, 1.0, False),    # 6: feasible, slow
]


def _tiny(change) -> OverLoCKConfig:
    return OverLoCKConfig(**{**TINY, **change})


def write_study(run_dir: Path, trials=TRIALS, budgets=None) -> None:
    """A study as `overlock-nas search` stores it (docs/reference/storage.md), with real trained weights."""
    from nas.evaluators import get_evaluator
    from space import complexity

    budgets = {"flops": FLOPS_BUDGET} if budgets is None else budgets
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.log")))
    study = optuna.create_study(study_name="synthetic", storage=storage,
                                directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "flops"])
    for key, value in {"overlock_nas_version": "0.1.0", "constraints": budgets,
                       "objectives": [{"name": "accuracy", "direction": "maximize"},
                                      {"name": "flops", "direction": "minimize"}],
                       "evaluator": EVALUATOR, "seed": 0, "device": "cpu"}.items():
        study.set_user_attr(key, value)
    evaluator = get_evaluator("train", {k: v for k, v in EVALUATOR.items() if k != "name"})
    for state, change, accuracy, latency, fidelity, trained in trials:
        trial = study.ask()
        config = _tiny(change)
        metrics = complexity(config).as_metrics()
        attrs = {"config": config.to_dict(), "config_hash": config.config_hash(),
                 "summary": config.summary(), **metrics, "resolution": list(config.resolution)}
        if latency is not None:
            attrs.update(latency_ms=latency, latency_p90_ms=latency * 1.1, latency_device="test-cpu",
                         latency_batch=1, latency_dtype="fp32", latency_channels_last=False)
            metrics["latency_ms"] = latency
        if state == "COMPLETE" or fidelity is not None and fidelity < 1:
            attrs.update(evaluator="train", score=accuracy, fidelity=fidelity, epochs=1, history=[accuracy])
        if state == "PRUNED" and fidelity == 1.0:
            attrs.update(infeasible=True, reason="flops over budget")
        if state == "FAIL":
            attrs.update(reason="NaN loss at epoch 1", error="TrialError: loss became nan")
        if trained:
            name = f"{trial.number}-{config.config_hash()}"
            evaluator.evaluate(config, budget_epochs=None, device="cpu", seed=0,
                               workdir=str(run_dir / "weights"), weights_name=name)
            attrs["weights"] = f"weights/{name}.safetensors"
            attrs["dataset"] = {"kind": "procedural", "description": TRAINED_ON}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if state != "FAIL":
            values = [metrics[n] - b for n, b in budgets.items()]
            for (n, _), v in zip(budgets.items(), values):
                trial.set_constraint(n, v)
            study._storage.set_trial_system_attr(trial._trial_id, "constraints", tuple(values))
        if state == "COMPLETE":
            study.tell(trial, [accuracy, metrics["flops"]])
        else:
            study.tell(trial, state=getattr(TrialState, state))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run")
    write_study(path)
    return path


@pytest.fixture(scope="module")
def study(run_dir):
    return open_study(run_dir)[0]


def _check_input(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(123))


def _trial_model(run_dir: Path, study, number: int) -> overlock.OverLoCK:
    """The trial's trained model, built independently of the export code."""
    rel = study.trials[number].user_attrs["weights"]
    with safe_open(str(run_dir / rel), framework="pt") as f:
        config = OverLoCKConfig.from_json(f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = overlock.OverLoCK(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


# --------------------------------------------------------------------------------- selection
@pytest.mark.parametrize("kwargs, expected", [
    ({}, 6),                                              # best feasible accuracy (2 breaks flops)
    ({"under": {"latency_ms": 5}}, 1),
    ({"under": {"latency_ms": 5, "flops": "_A_B_"}}, 0),   # between A's and B's flops
    ({"objective": "flops"}, 0),
    ({"objective": "latency_ms"}, 0),
    ({"trial": 2}, 2),                                    # asked for: allowed, marked infeasible
])
def test_selection(study, kwargs, expected):
    if kwargs.get("under", {}).get("flops") == "_A_B_":
        a, b = (study.trials[i].user_attrs["flops"] for i in (0, 1))
        kwargs = {"under": {"latency_ms": 5, "flops": (a + b) / 2}}
    trial, why = select_trial(study, **kwargs)
    assert trial.number == expected, why
    if "trial" in kwargs:
        assert "infeasible" in why


def test_best_skips_infeasible_pruned_and_partial(study):
    trial, why = select_trial(study)
    assert trial.number == 6 and "among 3 feasible COMPLETE trials" in why


@pytest.mark.parametrize("kwargs, words", [
    ({"trial": 3}, ("trial 3 is PRUNED", "flops over budget", "COMPLETE")),
    ({"trial": 5}, ("trial 5 is FAIL", "NaN loss")),
    ({"trial": 99}, ("trial 99 does not exist", "0..6")),
    ({"under": {"flops": 1.0}}, ("no feasible trial under flops<=1", "smallest flops", "trial 0")),
    ({"objective": "nope"}, ("--objective nope", "accuracy, flops")),
])
def test_selection_refusals_are_one_line(study, kwargs, words):
    with pytest.raises(ExportError) as info:
        select_trial(study, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_no_feasible_trial_says_why(tmp_path):
    write_study(tmp_path, trials=[("COMPLETE", C, 0.9, 1.0, 1.0, False)])
    with pytest.raises(ExportError, match=r"no feasible COMPLETE trial .*\(1 breaks flops\)"):
        select_trial(open_study(tmp_path)[0])


# ------------------------------------------------------------------------------- the export
@pytest.fixture(scope="module")
def exported(run_dir, study):
    """`overlock-nas export RUN_DIR --best --under ...` picks trial 0 (trained weights)."""
    a, b = (study.trials[i].user_attrs["flops"] for i in (0, 1))
    out = run_dir / "exports" / "best"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--best", "--under",
                                       f"flops={(a + b) / 2:.0f},latency_ms=5", "--out", str(out)])
    return out, result


def test_cli_best_under_picks_the_right_trial(exported):
    out, result = exported
    assert result.exit_code == 0, result.output
    assert "selected trial 0" in result.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["trial"] == 0 and meta["source"]["study"] == "synthetic"
    assert meta["source"]["feasible"] is True
    assert meta["weights"]["source"] == "trial"
    assert meta["evaluator"]["name"] == "train" and meta["evaluator"]["fidelity"] == 1.0
    assert meta["latency"]["latency_device"] == "test-cpu"
    assert {"model.safetensors", "model_reparam.safetensors", "model.pt2", "model.onnx"} <= set(meta["files"])


def test_export_records_passing_checks(exported):
    meta = json.loads((exported[0] / "config.json").read_text())
    names = [c["check"] for c in meta["checks"]]
    assert len(names) == 4 and any("model.pt2" in n for n in names) and any("model.onnx" in n for n in names)
    for check in meta["checks"]:
        assert check["passed"] and check["max_abs_diff"] <= 1e-4, check


def test_reload_gives_identical_logits_to_the_trials_weights(exported, run_dir, study):
    reference = _trial_model(run_dir, study, 0)
    loaded = overlock.create_model(exported[0]).eval()
    x = _check_input(3)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))


def test_deploy_model_and_programs_match_eager(exported, run_dir, study):
    out = exported[0]
    reference = _trial_model(run_dir, study, 0)
    x = _check_input(3)  # a batch size the export-time checks did not use (dynamic batch)
    with torch.no_grad():
        eager = reference(x)
        deployed = overlock.create_model(out, deploy=True).eval()
        assert deployed.deployed
        assert (deployed(x) - eager).abs().max() <= 1e-4
        program = hub.load_program(out)
        assert any("na2d_av" in str(n.target) for n in program.graph.nodes)
        assert (program.module()(x) - eager).abs().max() <= 1e-4


def test_onnx_program_matches_eager(exported, run_dir, study):
    import onnx

    path = exported[0] / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}   # the custom op is decomposed
    x = _check_input(3)
    try:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {"images": x.numpy()})[0]
    except ImportError:
        from onnx.reference import ReferenceEvaluator
        out = ReferenceEvaluator(model).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        eager = _trial_model(run_dir, study, 0)(x)
    assert (torch.from_numpy(out) - eager).abs().max() <= 1e-4


def test_model_card(exported):
    out = exported[0]
    card = (out / "README.md").read_text()
    meta = json.loads((out / "config.json").read_text())
    config = OverLoCKConfig.from_dict(meta["config"])
    for text in ("GMACs (fvcore; the paper's FLOPs), input 1x3x32x32, batch 1", "Region count R = 2",
                 "| Focus-Net | 3 | 1 | 64 | dynamic 5 + small 3", "test-cpu", "evaluator `train`",
                 "overlock.create_model(", f"{meta['measured']['params'] / 1e3:.3f} k",
                 f"{meta['measured']['flops'] / 1e9:.4g}"):
        assert text in card, text
    assert meta["measured"]["flops"] == meta["metrics"]["flops"]       # fvcore == the search's count
    assert meta["measured"]["params"] == meta["metrics"]["params"]
    assert config.config_hash() == meta["config_hash"]


def test_exported_model_fine_tunes(exported):
    """A short run from the exported directory, on a new 5-class label set of the built-in data:
    the loss over the same 32 training images falls from the first epoch to the last. (With the
    recipe's label smoothing, augmentation and cosine decay it falls to 0.83 of the first epoch's
    here; the plain loop train_model ran before the recipe reached below 0.7.)"""
    model = overlock.create_model(exported[0], num_classes=5)
    data = {"kind": "procedural", "num_classes": 5, "train_size": 32, "val_size": 16}
    losses = train_model(model, data, epochs=8, lr=2e-3, batch_size=16, seed=0)["loss"]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses


def test_fine_tuning_weighs_the_aux_head_by_the_settings(exported):
    """train_model trains with the recipe: the aux head's weight is the settings' (a study's
    `train` evaluator settings), the recipe's 0.4 when they leave it out."""
    from nas.training import Recipe

    data = {"kind": "procedural", "num_classes": 5, "train_size": 32, "val_size": 16}
    first = {}
    for aux_weight in (None, 0.4, 0.0):
        torch.manual_seed(0)
        model = overlock.create_model(exported[0], num_classes=5)
        settings = {"name": "train", "epochs": 3} if aux_weight is None else {"aux_weight": aux_weight}
        first[aux_weight] = train_model(model, data, steps=1, batch_size=16, settings=settings)["loss"][0]
    assert Recipe.from_settings({}).aux_weight == 0.4 and first[None] == first[0.4]
    assert first[0.0] < first[0.4]


def test_fine_tuning_after_an_inference_mode_forward(exported):
    """Latency is measured under torch.inference_mode; training in the same process still works."""
    model = overlock.create_model(exported[0])
    with torch.inference_mode():
        model.eval()(_check_input(1))
    losses = train_model(model, DATA, steps=1, batch_size=16)["loss"]
    assert len(losses) == 1 and math.isfinite(losses[0])


def test_existing_directory_is_kept(exported, run_dir):
    out, _ = exported
    before = (out / "config.json").read_text()
    # another trial's export there is refused (the same trial with the same content is kept: test_export_atomic)
    result = CliRunner().invoke(main, ["export", str(run_dir), "--trial", "1", "--out", str(out)])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--overwrite" in result.output
    assert (out / "config.json").read_text() == before


@pytest.mark.parametrize("args, code, words", [
    (["--trial", "3"], 1, ("Error: trial 3 is PRUNED",)),
    (["--best", "--under", "accuracy=0.5"], 1, ("Error: --under accuracy: accuracy is maximised",)),
    (["--best", "--under", "foo=1"], 1, ("Error: --under foo: unknown metric",)),
    (["--best", "--trial", "1"], 2, ("exactly one of --trial N, --best, --top K or --knee",)),
    (["--knee", "--top", "2"], 2, ("exactly one of", "--top K, --knee")),
    (["--trial", "1", "--under", "flops=1"], 2, ("use them with --best",)),
    (["--knee", "--objective", "flops"], 2, ("--knee weighs every objective",)),
])
def test_cli_refusals(run_dir, args, code, words):
    """Errors exit 1, usage mistakes 2 (click's convention, as every command); one line each."""
    result = CliRunner().invoke(main, ["export", str(run_dir), *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_cli_without_a_run_dir(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--best"])
    assert result.exit_code == 1 and "no study.log" in result.output


def test_untrained_trial_is_initialised_with_its_seed(run_dir, study, tmp_path):
    trial = study.trials[1]
    first = export_trial(study, trial, tmp_path / "a", run_dir=run_dir, onnx=False, pt2=False, seed=3)
    export_trial(study, trial, tmp_path / "b", run_dir=run_dir, onnx=False, pt2=False, seed=3)
    assert first.meta["weights"] == {"source": "init", "seed": 3, "note": first.meta["weights"]["note"]}
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "Freshly initialised (seed 3), not trained" in (tmp_path / "a" / "README.md").read_text()
    assert not (tmp_path / "a" / "model.pt2").exists() and first.ok


def test_train_schedule_trains_with_the_study_evaluator(run_dir, study, tmp_path):
    trial = study.trials[1]
    result = export_trial(study, trial, tmp_path / "t", run_dir=run_dir, onnx=False, pt2=False,
                          train=TrainSpec(epochs=1, dataset={**DATA, "train_size": 48}))
    weights = result.meta["weights"]
    assert weights["source"] == "train" and weights["epochs"] == 1
    assert weights["settings"]["dataset"]["train_size"] == 48 and 0 <= weights["score"] <= 1
    init = overlock.OverLoCK(_tiny(B))
    loaded = overlock.create_model(tmp_path / "t")
    assert not torch.equal(loaded.head[0].weight, init.head[0].weight)
    assert result.ok


# ------------------------------------------------------------- nothing stored is ever replaced
def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["run_dir", "parent_of_run_dir", "weights_dir"])
def test_export_never_replaces_a_directory_holding_a_study(run_dir, target):
    """Before: `export RUN_DIR --trial 0 --out RUN_DIR --overwrite` deleted the run directory
    (study.log, weights). Now any --out holding a study (or a study below it) is refused."""
    out = {"run_dir": run_dir, "parent_of_run_dir": run_dir.parent,
           "weights_dir": run_dir / "weights"}[target]
    before = _tree(run_dir)
    result = CliRunner().invoke(main, ["export", str(run_dir), "--trial", "0", "--out", str(out),
                                       "--overwrite", "--no-onnx"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "choose another --out" in result.output
    assert _tree(run_dir) == before


def test_overwrite_replaces_only_what_export_wrote(run_dir, tmp_path):
    """A directory export did not write is refused even with --overwrite (before: deleted);
    an earlier export is replaced."""
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    args = ["export", str(run_dir), "--trial", "1", "--no-onnx", "--overwrite"]
    result = CliRunner().invoke(main, [*args, "--out", str(mine)])
    assert result.exit_code == 1 and "not written by overlock-nas export" in result.output, result.output
    assert (mine / "thesis.tex").read_text() == "years of work"
    first = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "m")])
    assert first.exit_code == 0, first.output
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["written_by"] == "overlock-nas export"
    # the earlier export holds model.pt2; replacing it needs no second torch.export
    again = CliRunner().invoke(main, [*args, "--seed", "4", "--no-pt2", "-o", str(tmp_path / "m")])
    assert again.exit_code == 0, again.output


def test_overwrite_refuses_files_a_user_added_to_an_earlier_export(run_dir, tmp_path):
    """Before: `--overwrite` replaced the whole directory, deleting notes the user kept in it.
    Now it names them and refuses; without them it replaces and lists what it replaced."""
    args = ["export", str(run_dir), "--trial", "1", "--no-onnx", "--no-pt2", "-o", str(tmp_path / "m")]
    assert CliRunner().invoke(main, args).exit_code == 0
    (tmp_path / "m" / "notes.txt").write_text("my benchmark results")
    (tmp_path / "m" / "plots").mkdir()
    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "holds files export did not write (notes.txt, plots)" in error[0], result.output
    assert (tmp_path / "m" / "notes.txt").read_text() == "my benchmark results"
    (tmp_path / "m" / "notes.txt").unlink()
    (tmp_path / "m" / "plots").rmdir()
    again = CliRunner().invoke(main, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert "replacing the earlier export" in again.output and "model.safetensors" in again.output


@pytest.mark.parametrize("flags, missing, hint", [
    ([], "model.pt2", "--no-pt2"),
    (["--no-pt2"], "model.onnx", "--no-onnx"),
    (["--no-pt2", "--no-onnx"], None, None),
])
def test_a_program_that_could_not_be_written_fails_the_export(run_dir, tmp_path, monkeypatch, flags,
                                                             missing, hint):
    """Before: exit 0 with a warning when model.pt2 / model.onnx could not be written. A program
    the user asked for is now a failure (one line, naming the flag that skips it), and nothing is
    published (issue 27: before, the directory was written without it)."""
    from nas.export import pipeline
    from nas.export.programs import check

    monkeypatch.setattr(pipeline, "write_pt2", lambda *a: check(
        "torch.export program (model.pt2) vs eager", error="Unsupported: data-dependent branch"))
    monkeypatch.setattr(pipeline, "write_onnx", lambda *a: check(
        "ONNX program (model.onnx) vs eager", error="No module named 'onnxscript'"))
    out = tmp_path / "e"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--trial", "1", "-o", str(out), *flags])
    if missing is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and f"{missing} could not be written" in error[0] and hint in error[0], result.output
    assert not out.exists()


def test_unwritable_out_is_one_line(run_dir, tmp_path):
    """Before: a traceback (NotADirectoryError from mkdir)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["export", str(run_dir), "--trial", "1", "--no-onnx",
                                       "-o", str(blocker / "model")])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Error: --out" in result.output and "cannot write there" in result.output


def test_train_on_an_unknown_device_is_one_line(run_dir, tmp_path):
    result = CliRunner().invoke(main, ["export", str(run_dir), "--trial", "1", "--train",
                                       "--device", "foo", "-o", str(tmp_path / "t")])
    assert result.exit_code == 2, result.output
    assert "Invalid value for --device: 'foo' is not a device" in result.output
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_journal_is_one_line(run_dir, tmp_path, damage):
    """Before: a truncated journal was read silently (its last record dropped), a corrupt one
    raised JSONDecodeError from Optuna."""
    copy = tmp_path / "run"
    copy.mkdir()
    data = (run_dir / "study.log").read_bytes()
    if damage == "truncated":
        data = data[:-40]
    else:
        lines = data.split(b"\n")
        lines[3] = b'{"op_code": 5, "worker_id": oops'
        data = b"\n".join(lines)
    (copy / "study.log").write_bytes(data)
    result = CliRunner().invoke(main, ["export", str(copy), "--best"])
    assert result.exit_code == 1, result.output
    assert f"is {damage}" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- knee and top K
def test_knee_of_the_front(tmp_path):
    """Three front points A < B < C in flops (no budget); accuracy 0.5, 0.85, 0.9. Normalised
    (both minimised, extremes A and C at (1, 0) and (0, 1)), B lies farthest below the line
    through the extremes: it is the knee. Checked against the distance computed by hand."""
    from nas import storage

    write_study(tmp_path, budgets={}, trials=[("COMPLETE", A, 0.5, 1.0, 1.0, False),
                                              ("COMPLETE", B, 0.85, 1.0, 1.0, False),
                                              ("COMPLETE", C, 0.9, 1.0, 1.0, False)])
    study = open_study(tmp_path)[0]
    assert [t.number for t in storage.pareto_front(study)] == [0, 1, 2]
    trial, why = select_trial(study, knee=True)
    acc = [-0.5, -0.85, -0.9]
    flops = [study.trials[n].user_attrs["flops"] for n in range(3)]
    z = [((a - min(acc)) / (max(acc) - min(acc)), (f - min(flops)) / (max(flops) - min(flops)))
         for a, f in zip(acc, flops)]
    distances = [(1 - (x + y)) / math.sqrt(2) for x, y in z]
    assert trial.number == distances.index(max(distances)) == 1, (z, why)
    assert "knee of the feasible Pareto front (3 trials" in why and "Das 1999" in why
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--knee", "--no-onnx", "--no-pt2", "-o",
                                       str(tmp_path / "knee")])
    assert result.exit_code == 0 and "selected trial 1: knee" in result.output, result.output


def test_top_k_in_order(study):
    from nas.selection import top_trials

    ranked = top_trials(study, 3)
    assert [t.number for t, _ in ranked] == [6, 1, 0]
    assert ranked[0][1].startswith("best accuracy") and ranked[1][1].startswith("#2 by accuracy")
    # 1 and 6 share B's flops: the tie goes to the other objective (6 is more accurate)
    assert [t.number for t, _ in top_trials(study, 2, objective="flops")] == [0, 6]


def test_cli_top_writes_one_directory_each(run_dir, tmp_path):
    result = CliRunner().invoke(main, ["export", str(run_dir), "--top", "2", "--no-onnx", "--no-pt2",
                                       "-o", str(tmp_path / "top"), "--json"])
    assert result.exit_code == 0, result.output
    docs = json.loads(result.output[result.output.index("["):])
    assert [d["trial"] for d in docs] == [6, 1]
    for doc in docs:
        meta = json.loads((Path(doc["out_dir"]) / "config.json").read_text())
        assert meta["source"]["trial"] == doc["trial"] and Path(doc["out_dir"]).parent == tmp_path / "top"


# ------------------------------------------------------------ one contract: report == export
def test_a_trial_missing_a_budgeted_metric_is_treated_alike(tmp_path):
    """Trial 1 is the most accurate but records no latency_ms, a study budget, and carries no
    constraint for it. Before: the report put it on the feasible front while `export --best`
    skipped it. Now both call it infeasible."""
    from reports.data import load_study_data

    trials = [("COMPLETE", A, 0.6, 2.0, 1.0, False), ("COMPLETE", B, 0.9, None, 1.0, False)]
    write_study(tmp_path, trials=trials, budgets={"flops": FLOPS_BUDGET})
    study = open_study(tmp_path)[0]
    study.set_user_attr("constraints", {"flops": FLOPS_BUDGET, "latency_ms": 5.0})
    best, _ = select_trial(study)
    df = load_study_data(tmp_path).trials.set_index("number")
    assert best.number == 0
    assert not df.loc[1, "feasible"] and not df.loc[1, "pareto"]
    assert df.loc[0, "pareto"]
    assert list(df.index[df["pareto"]]) == [best.number]


def test_model_card_names_the_data_set(exported, run_dir, study, tmp_path):
    """The accuracy row says which data set it comes from: the trial's own record (written by the
    train evaluator), else the study's evaluator setting. Before: no data set for a trial record."""
    card = (exported[0] / "README.md").read_text()
    assert f"data set: {TRAINED_ON};" in card
    meta = json.loads((exported[0] / "config.json").read_text())
    assert meta["evaluator"]["dataset"]["description"] == TRAINED_ON
    other = export_trial(study, study.trials[1], tmp_path / "b", run_dir=run_dir, onnx=False, pt2=False)
    card = (other.out_dir / "README.md").read_text()
    assert "data set: procedural (train_size 32, val_size 32) (the study's evaluator setting)" in card
