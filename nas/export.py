"""Write a searched architecture as a ready-to-use model directory (`export_trial`).

The directory format is `overlock.hub`'s: config.json (config, hash, provenance, metrics, file
sha256s, checks; `written_by: "overlock-nas export"`), train and deploy weights as safetensors,
the programs of `nas.programs` (`model.pt2`, `model.onnx`) and the model card of
`nas.model_card` (README.md). Weights are the trial's trained weights when its evaluator saved
them, else freshly initialised with a stated seed, or trained anew by the study's `train`
evaluator (`train=TrainSpec(...)`), or inherited from a trained supernet
(`from_supernet=...`: the trial's sub-network, batch-norm statistics re-estimated on the
supernet's data set, validated there; with `train` as well, training starts from those weights).
Every program is checked against the eager model at export time and the results recorded in
config.json.

The directory is built beside the target and renamed into place at the end, so a failed export
leaves nothing half-written. An existing target is replaced only with `overwrite=True` and only
when export wrote it (its config.json says so) and it holds no file export did not write; a
directory holding a study (study.log, driver.lock, weights/, ...) is never replaced.

Which trial to export is `nas.selection`'s job (`--trial`, `--best`, `--top`, `--knee`, `--under`);
its names are re-exported here.

    >>> from nas.export import open_study, select_trial, export_trial
    >>> study, _ = open_study("runs/demo")
    >>> trial, why = select_trial(study, knee=True, under={"flops": 2e9})
    >>> result = export_trial(study, trial, "exports/demo-knee", run_dir="runs/demo")
    >>> import overlock, pathlib; model = overlock.create_model(pathlib.Path(result.out_dir)).eval()
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

import overlock
from overlock import ConfigError, OverLoCKConfig
from overlock import hub
from nas import storage
from nas.model_card import model_card
from nas.programs import TOLERANCE, check, check_inputs, max_diff, write_onnx, write_pt2
from nas.selection import ExportError, parse_budgets, select_trial, top_trials
from nas.storage import feasibility, metric_value, study_objectives
from nas.storage import jsonable as _jsonable
from nas.storage import one_line as _one_line

__all__ = ["ExportError", "TrainSpec", "ExportResult", "SupernetStart", "open_study", "parse_budgets",
           "parse_dataset", "select_trial", "top_trials", "export_trial", "train_model",
           "supernet_start", "model_card", "check_out_dir", "files_not_written_by_export",
           "WRITTEN_BY", "TOLERANCE"]

WRITTEN_BY = "overlock-nas export"   # config.json marker: a directory export may replace


def open_study(run_dir: str | os.PathLike | None = None, *, storage: str | None = None,
               study_name: str | None = None):
    """(study, storage label) from `RUN_DIR/study.log`, a journal file or an RDB URL
    (`nas.storage.open_study`); ExportError (one line) when it cannot be read."""
    from nas import storage as stored

    try:
        return stored.open_study(run_dir, storage, study_name)
    except stored.StorageError as e:
        raise ExportError(str(e)) from None


# ----------------------------------------------------------------------------- training
@dataclass
class TrainSpec:
    """An optional training schedule run at export time (from scratch, seeded).

    Args:
        epochs: epochs of the full schedule.
        dataset: a `dataset:` settings dict of `nas.data` (None: the study's, else procedural).
        device: where to train.
        settings: further `train` evaluator settings (lr, batch_size, ...); the study's own train
            settings are the base.
    """

    epochs: int = 10
    dataset: Mapping[str, Any] | None = None
    device: str = "cpu"
    settings: Mapping[str, Any] = field(default_factory=dict)


def parse_dataset(text: str | None) -> dict | None:
    """`--dataset`: `procedural`, `imagefolder:PATH`, `cifar:PATH`, a directory (CIFAR batches
    are recognised, anything else is an image folder) or a YAML mapping
    (`{kind: procedural, train_size: 2048}`)."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{"):
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ExportError(f"--dataset {text!r}: not a YAML mapping ({_one_line(e)})") from None
        if not isinstance(value, dict):
            raise ExportError(f"--dataset {text!r}: not a mapping")
        return value
    if text == "procedural":
        return {"kind": "procedural"}
    for kind in ("imagefolder", "cifar"):
        if text.startswith(kind + ":"):
            return {"kind": kind, "path": text[len(kind) + 1:]}
    if os.path.isdir(text):
        is_cifar = any(os.path.isfile(os.path.join(text, f)) for f in ("data_batch_1", "train"))
        return {"kind": "cifar" if is_cifar else "imagefolder", "path": text}
    raise ExportError(f"--dataset {text!r}: expected procedural, imagefolder:PATH, cifar:PATH, a "
                      "directory or a YAML mapping")


def _train_with_evaluator(study, config: OverLoCKConfig, spec: TrainSpec, seed: int, workdir: str,
                          log: Callable[[str], None], start=None):
    """Train `config` with the study's `train` evaluator; (model, info). From scratch, or with
    `start` = (model, weights record, SupernetStart) from those inherited weights (fine-tuning;
    the data set defaults to the supernet's when the study's evaluator is not `train`)."""
    from nas.evaluators import TrialError, get_evaluator

    stored = study.user_attrs.get("evaluator")
    base = {}
    if isinstance(stored, Mapping) and stored.get("name", "train") == "train":
        base = {k: v for k, v in stored.items() if k != "name"}
    settings = {**base, **dict(spec.settings), "epochs": int(spec.epochs), "rungs": None,
                "save_weights": True}
    if spec.dataset is not None:
        settings["dataset"] = dict(spec.dataset)
    elif start is not None and "dataset" not in base:
        settings["dataset"] = start[2].card["dataset_settings"]
    try:
        evaluator = get_evaluator("train", settings)
    except ValueError as e:
        raise ExportError(f"--train: {e}") from None
    init_state = None
    if start is not None:
        _check_classes(start[2], evaluator.settings["dataset"], config.resolution, "the --train data set")
        init_state = start[0].state_dict()
    log(f"training {config.config_hash()} for {spec.epochs} epochs on "
        f"{evaluator.settings['dataset'].get('kind')} ({spec.device}) "
        f"{'from the inherited weights' if start is not None else 'from scratch'} ...")
    try:
        result = evaluator.evaluate(config, budget_epochs=None, device=spec.device, seed=seed,
                                    workdir=workdir, resume_from=None, weights_name="export-train",
                                    init_state=init_state)
    except TrialError as e:
        raise ExportError(f"--train failed: {e.reason}") from None
    model = _model_from_weights(config, Path(result["weights"]), "the --train run")
    info = {"source": "train", "seed": seed, "evaluator": "train",
            "settings": _jsonable(evaluator.settings), "score": result["score"],
            "history": result["history"], "train_loss": result.get("train_loss"),
            "epochs": result["epochs"], "wall_s": result.get("wall_s")}
    if start is not None:
        info.update(start="supernet", supernet=start[1]["supernet"])
    return model, info


def train_model(model: torch.nn.Module, dataset: Mapping[str, Any] | None = None, *, epochs: int = 1,
                steps: int | None = None, lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                device: str = "cpu") -> dict:
    """A plain fine-tuning loop (AdamW, cross-entropy, aux loss when the model returns one).

    Trains `model` in place on `nas.data`'s data set (`dataset` settings; None = procedural) at
    the model's resolution. `steps` stops early after that many optimiser steps.

    Returns:
        {"loss": [per-step training loss], "accuracy": validation top-1 after training}.
    """
    import torch.nn.functional as F

    from nas.data import load_dataset

    config = model.config
    data = load_dataset(dataset or {"kind": "procedural"}, config.resolution)
    if data.num_classes != config.num_classes:
        raise ExportError(f"the model has {config.num_classes} classes, the data set "
                          f"{data.num_classes}; load it with num_classes={data.num_classes}")
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    for epoch in range(epochs):
        for x, y in data.train.batches(batch_size, shuffle=True, seed=seed + epoch, device=device,
                                       drop_last=True):
            out = model(x)
            if isinstance(out, dict):
                loss = F.cross_entropy(out["main"], y) + 0.4 * F.cross_entropy(out["aux"], y)
            else:
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if steps is not None and len(losses) >= steps:
                break
        if steps is not None and len(losses) >= steps:
            break
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in data.val.batches(256, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return {"loss": losses, "accuracy": correct / max(len(data.val), 1)}


# ------------------------------------------------------------------ inherited weights (supernet)
@dataclass
class SupernetStart:
    """Where `--from-supernet` takes a trial's weights from (`supernet_start` builds it).

    Args:
        folder: the folder `overlock-nas supernet train --out` wrote (absolute).
        card: its card.json.
        scoring: the `supernet` evaluator's settings the sub-network is re-estimated and validated
            with (bn_recalibration_batches, batch_size, eval_batch_size): the study's when its
            evaluator is this supernet, else the evaluator's defaults.
    """

    folder: str
    card: dict
    scoring: dict
    _net: Any = field(default=None, repr=False)

    def supernet(self):
        """The supernet, loaded once (several trials of `--top K` share it)."""
        from overlock.supernet import Supernet
        from nas.supernet.train import WEIGHTS_FILE

        if self._net is None:
            try:
                self._net = Supernet.load(os.path.join(self.folder, WEIGHTS_FILE)).eval()
            except (ConfigError, OSError, ValueError, RuntimeError) as e:
                raise ExportError(f"--from-supernet {self.folder}: cannot load {WEIGHTS_FILE} "
                                  f"({_one_line(e)})") from None
        return self._net


def supernet_start(study, from_supernet) -> SupernetStart:
    """`--from-supernet [DIR]`: DIR (a folder, or its supernet.safetensors), or with `True` / ""
    the study's own supernet (`evaluator: {name: supernet, weights}` or
    `proxy_gate: {proxy: supernet, weights}`). ExportError (one line): no supernet named, two
    different ones, no supernet.safetensors / card.json, an unreadable card, no finished epoch."""
    from nas.evaluators import get_evaluator

    given = from_supernet not in (True, "")
    folder = _supernet_folder(os.fspath(from_supernet) if given else _study_supernet(study))
    card = _supernet_card(folder)
    stored = study.user_attrs.get("evaluator")
    same = (isinstance(stored, Mapping) and stored.get("name") == "supernet"
            and os.path.abspath(str(stored.get("weights"))) == folder)
    # the study's own scoring settings when it scored with this supernet (its data set, validation
    # subset and resolution too), so the inherited-weight accuracy is measured as the score was
    keys = ("bn_recalibration_batches", "batch_size", "eval_batch_size", "dataset", "val_images", "resolution")
    scoring = {}
    if same:   # a study stored before val_images existed (or with it None) validated every image
        scoring = {k: stored[k] for k in keys if stored.get(k) is not None}
        scoring["val_images"] = stored.get("val_images")
    try:
        ev = get_evaluator("supernet", {"weights": folder, **scoring})
    except ValueError as e:
        raise ExportError(f"--from-supernet {folder}: {e}") from None
    return SupernetStart(folder=folder, card=card, scoring={k: ev.settings[k] for k in keys})


def _study_supernet(study) -> str:
    """The supernet folder the study itself used (its evaluator or its proxy gate)."""
    named = {}
    stored = study.user_attrs.get("evaluator")
    if isinstance(stored, Mapping) and stored.get("name") == "supernet" and stored.get("weights"):
        named["evaluator"] = str(stored["weights"])
    gate = _study_file_gate(study)
    if gate:
        named["proxy_gate"] = gate
    if not named:
        raise ExportError("--from-supernet: the study used no supernet (neither evaluator: {name: "
                          "supernet, weights: DIR} nor proxy_gate: {proxy: supernet, weights: DIR}); "
                          "name one: --from-supernet DIR")
    if len({os.path.abspath(os.path.expanduser(v)) for v in named.values()}) > 1:
        raise ExportError(f"--from-supernet: the study names two supernets (evaluator: "
                          f"{named['evaluator']}, proxy_gate: {named['proxy_gate']}); name one: "
                          "--from-supernet DIR")
    return next(iter(named.values()))


def _study_file_gate(study) -> str | None:
    """`proxy_gate.weights` of the stored study file when the gate is a supernet (relative paths
    are read from the current directory, as the search read them)."""
    import yaml

    text = study.user_attrs.get("study_file")
    try:
        doc = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return None
    gate = doc.get("proxy_gate") if isinstance(doc, dict) else None
    if isinstance(gate, dict) and gate.get("proxy") == "supernet" and gate.get("weights"):
        return str(gate["weights"])
    return None


def _supernet_folder(text: str) -> str:
    from nas.supernet.train import CARD_JSON, WEIGHTS_FILE

    path = os.path.expanduser(text)
    folder = os.path.dirname(path) if path.endswith(".safetensors") else path
    missing = [f for f in (WEIGHTS_FILE, CARD_JSON) if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ExportError(f"--from-supernet {text}: no {' and no '.join(missing)} there (not a folder "
                          "`overlock-nas supernet train SPACE --out DIR` wrote)")
    return os.path.abspath(folder)


def _supernet_card(folder: str) -> dict:
    from nas.supernet.train import CARD_JSON

    try:
        card = json.loads(Path(folder, CARD_JSON).read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"--from-supernet {folder}: cannot read {CARD_JSON} ({_one_line(e)})") from None
    missing = [k for k in ("dataset_settings", "dataset", "resolution", "num_classes", "epochs_done")
               if not isinstance(card, dict) or k not in card]
    if missing:
        raise ExportError(f"--from-supernet {folder}: {CARD_JSON} lacks {missing[0]!r}")
    if not card["epochs_done"]:
        raise ExportError(f"--from-supernet {folder}: the supernet has no finished epoch yet")
    return card


def _check_classes(start: SupernetStart, settings: Mapping | None, resolution, what: str,
                   recorded: int | None = None) -> None:
    """ExportError (one line) when the data set `settings` (or its `recorded` class count) has
    other classes / input channels than the supernet was trained with."""
    from nas.data import DataError, load_dataset

    card = start.card
    if recorded is not None:
        shape = (int(recorded), card.get("in_chans", 3))
    elif settings is None or _jsonable(settings) == _jsonable(card["dataset_settings"]):
        return
    else:
        try:
            data = load_dataset(dict(settings), tuple(resolution))
        except DataError as e:
            raise ExportError(f"{what}: cannot read it to check its classes ({_one_line(e)})") from None
        shape = (data.num_classes, data.in_chans)
    if shape != (card["num_classes"], card.get("in_chans", shape[1])):
        raise ExportError(f"--from-supernet {start.folder}: the supernet was trained on "
                          f"{card['num_classes']} classes ({card.get('in_chans', 3)} channels), {what} "
                          f"has {shape[0]} ({shape[1]}); use a supernet trained on that data set")


def _inherit_weights(study, trial, config: OverLoCKConfig, start: SupernetStart, seed: int,
                     log: Callable[[str], None]):
    """(model, weights record): the trial's sub-network of the supernet, its batch-norm statistics
    re-estimated on the card's data set (the `supernet` evaluator's re-estimation:
    `nas.supernet.score`), and its inherited-weight validation accuracy / loss measured there."""
    from nas.data import DataError, load_dataset
    from nas.supernet.score import rescore
    from nas.supernet.train import WEIGHTS_FILE

    card, scoring = start.card, start.scoring
    stored = study.user_attrs.get("evaluator")
    recorded = (trial.user_attrs.get("dataset") or {}).get("classes")
    _check_classes(start, stored.get("dataset") if isinstance(stored, Mapping) else None,
                   card["resolution"], "the study's data set", recorded)
    net = start.supernet()
    try:
        sub = net.fit(config)
    except ConfigError as e:
        raise ExportError(f"trial {trial.number}'s config is not in the supernet {start.folder}: {e}") from None
    try:
        data = load_dataset(scoring["dataset"], tuple(scoring["resolution"]))
    except DataError as e:
        raise ExportError(f"--from-supernet {start.folder}: the scoring data set: {_one_line(e)}") from None
    # the trial's own evaluation seed draws the same re-estimation sample the search's score used,
    # so the inherited-weight accuracy written here is the one the study recorded
    seed = int(trial.user_attrs.get("seed", seed))
    t0 = time.perf_counter()
    model = net.extract(sub)
    n = scoring["bn_recalibration_batches"]
    accuracy, val_loss = rescore(model, data, bn_batches=n, batch_size=scoring["batch_size"],
                                 eval_batch_size=scoring["eval_batch_size"], seed=seed)
    data.val.close()
    log(f"weights: inherited from the supernet {start.folder}; inherited-weight accuracy "
        f"{accuracy:.4f}, val loss {val_loss:.4f} (BN re-estimated on {n} batches)")
    record = {
        "folder": start.folder, "file": hub.file_record(os.path.join(start.folder, WEIGHTS_FILE)),
        "space": (card.get("space") or {}).get("file"), "dataset": card["dataset"],
        "epochs": card["epochs_done"], "seed": card.get("seed"), "rule": card.get("rule"),
        "bn_recalibration": {"batches": n, "batch_size": scoring["batch_size"], "seed": seed,
                             "images": min(n * scoring["batch_size"], len(data.train)),
                             "from": "the scoring data set's training split, unaugmented"},
        "inherited_accuracy": accuracy, "inherited_val_loss": val_loss,
        "validated_on": {"images": len(data.val), "resolution": list(scoring["resolution"]),
                         "wall_s": round(time.perf_counter() - t0, 2)},
        "note": "inherited-weight accuracy: the sub-network with the supernet's weights and "
                "re-estimated batch-norm statistics, not trained stand-alone",
    }
    if trial.user_attrs.get("weights"):
        log(f"(the trial's own trained weights {trial.user_attrs['weights']} are not used)")
    return model, {"source": "supernet", "supernet": record}


# ------------------------------------------------------------------------------- weights
def _model_from_weights(config: OverLoCKConfig, path: Path, what: str) -> overlock.OverLoCK:
    """A train-structure model holding the weights of `path` (safetensors only).

    The train evaluator adapts `num_classes` / `in_chans` to its data set and tags the file with
    the config it trained; that config is used when it differs from `config` only there.
    """
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ExportError(f"{what}: weights file {path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tags = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"{what}: {path} is not a readable safetensors file ({_one_line(e)})") from None
    if "config" in tags:
        try:
            trained = OverLoCKConfig.from_json(tags["config"])
        except (ConfigError, ValueError) as e:
            raise ExportError(f"{what}: {path} carries an invalid config ({e})") from None
        differs = {k for k, v in trained.to_dict().items() if config.to_dict()[k] != v}
        if differs - {"num_classes", "in_chans"}:
            raise ExportError(f"{what}: {path} holds weights of another architecture "
                              f"(differs in {', '.join(sorted(differs))})")
        config = trained
    model = overlock.OverLoCK(config)
    try:
        hub.load_state(model, tensors, path)
    except ConfigError as e:
        raise ExportError(f"{what}: {e}") from None
    return model


# ----------------------------------------------------------------------------- measuring
def _measure(model: overlock.OverLoCK, deploy_model: overlock.OverLoCK) -> dict:
    """Params (counted on the modules) and multiply-adds (fvcore) of the exported model."""
    from overlock.flops import count_macs

    config = model.config
    params_deploy = sum(p.numel() for n, p in deploy_model.named_parameters() if not n.startswith("aux_head."))
    params_train = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, config.resolution, batch=1, in_chans=config.in_chans)
    out = {"params": params_deploy, "params_train": params_train,
           "flops": macs.total, "flops_paper": macs.paper,
           "input": [1, config.in_chans, *config.resolution],
           "how": "params: deploy structure without aux head, counted; flops: fvcore on the train "
                  "structure in eval mode (aggregation op counted; flops_paper leaves the large-kernel "
                  "depthwise convs and the aggregation op uncounted)"}
    try:
        from space import complexity

        cost = complexity(config)
        out["analytic"] = {"params": cost.params_inference, "flops": cost.flops,
                           "flops_paper": cost.flops_paper, "memory_mb": round(cost.memory_mb, 3)}
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What `export_trial` wrote."""

    out_dir: Path
    trial: int
    meta: dict
    checks: list[dict]

    @property
    def ok(self) -> bool:
        """Every written artefact matched eager (an exporter that could not write is not a mismatch)."""
        return not self.mismatched

    @property
    def mismatched(self) -> list[dict]:
        return [c for c in self.checks if "error" not in c and not c["passed"]]

    @property
    def not_written(self) -> list[dict]:
        return [c for c in self.checks if "error" in c]


def default_out_dir(run_dir: str | os.PathLike | None, trial, config_hash: str) -> Path:
    base = Path(run_dir) / "exports" if run_dir is not None else Path("exports")
    return base / f"trial-{trial.number}-{config_hash[:8]}"


def export_trial(study, trial, out_dir: str | os.PathLike | None = None, *,
                 run_dir: str | os.PathLike | None = None, selection: str = "",
                 storage_label: str | None = None, train: TrainSpec | None = None, onnx: bool = True,
                 pt2: bool = True, latency: bool = False, seed: int = 0, overwrite: bool = False,
                 from_supernet: SupernetStart | str | os.PathLike | bool | None = None,
                 log: Callable[[str], None] = lambda _: None) -> ExportResult:
    """Write the model directory of `trial` (see the module docstring).

    Args:
        study, trial: the study and one of its COMPLETE trials (`select_trial`).
        out_dir: the directory to create (default `RUN_DIR/exports/trial-N-<hash8>`).
        run_dir: the run directory the trial's `weights` path is relative to.
        selection: why the trial was chosen (recorded).
        storage_label: where the study is stored (recorded; `open_study` gives it).
        train: train the architecture anew at export time instead of using the trial's weights.
        onnx: also write and check `model.onnx`.
        pt2: also write and check `model.pt2`.
        latency: also measure the deploy model's latency here (`nas.measure`; CPU, batch 1, fp32).
        seed: seed of freshly initialised weights and of `train`. The batch-norm re-estimation
            sample of `from_supernet` is drawn with the trial's own evaluation seed (its `seed`
            attribute; `seed` for a trial without one), so the inherited-weight accuracy
            reproduces the score the study recorded.
        overwrite: replace an existing `out_dir` that export wrote and that holds only files
            export writes (`check_out_dir`); the files replaced are logged.
        from_supernet: inherit the weights from a trained supernet (`supernet_start`: a folder,
            or True for the study's own); with `train`, training starts from them.
        log: progress lines.

    Raises:
        ExportError: one line (bad trial record, missing weights, existing directory, a config
            the supernet does not hold, ...).
    """
    attrs = trial.user_attrs
    if "config" not in attrs:
        raise ExportError(f"trial {trial.number} has no 'config' user attr (not written by overlock-nas search)")
    try:
        config = OverLoCKConfig.from_dict(attrs["config"])
    except ConfigError as e:
        raise ExportError(f"trial {trial.number}: stored config is invalid: {e}") from None
    if attrs.get("config_hash") not in (None, config.config_hash()):
        raise ExportError(f"trial {trial.number}: config_hash {attrs['config_hash']!r} does not match "
                          f"its config ({config.config_hash()!r})")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, trial, config.config_hash())
    check_out_dir(out, overwrite)
    if from_supernet is not None and from_supernet is not False and not isinstance(from_supernet, SupernetStart):
        from_supernet = supernet_start(study, from_supernet)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise ExportError(f"--out {out}: cannot write there ({_one_line(e)})") from None
    try:
        result = _export_into(tmp, study, trial, config, run_dir=run_dir, selection=selection,
                              storage_label=storage_label, train=train, onnx=onnx, pt2=pt2,
                              latency=latency, seed=seed, start=from_supernet or None, log=log)
        _publish_permissions(tmp)
        if out.exists():
            if any(out.iterdir()):
                log(f"replacing the earlier export {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
            backup = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(backup)
            tmp.rename(out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result.out_dir = out
    return result


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse (ExportError) an `out` that exists unless it is empty, or `overwrite` is given and
    export wrote it (its config.json carries `written_by`, or - before that marker - export's
    `source` and `checks`) and it holds nothing export did not write (those are named: replacing
    would delete them). A directory holding a study, or one found below it, is never replaced."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory; choose another --out")
    study = storage.holds_study(out)
    if study is not None:
        raise ExportError(f"--out {out} holds a study ({study}); export never writes into or "
                          "replaces a run directory: choose another --out")
    if not any(out.iterdir()):
        return
    if not _written_by_export(out):
        raise ExportError(f"--out {out} exists and was not written by overlock-nas export (no export "
                          "config.json): choose another --out; --overwrite replaces only an earlier export")
    if not overwrite:
        raise ExportError(f"{out} already exists (an earlier export); choose another --out or pass --overwrite")
    foreign = files_not_written_by_export(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
        raise ExportError(f"--out {out} is an earlier export, but holds files export did not write "
                          f"({shown}); --overwrite would delete them: move them out or choose another --out")


def files_not_written_by_export(out: Path) -> list[str]:
    """Entries of the export directory `out` that export did not write (sorted names): anything
    but config.json, the card, the weights, the programs (model.onnx and its external data) and
    the files config.json records."""
    try:
        recorded = set(json.loads((Path(out) / hub.CONFIG_FILE).read_text()).get("files") or {})
    except (OSError, ValueError, AttributeError):
        recorded = set()
    ours = recorded | {hub.CONFIG_FILE, hub.CARD_FILE, hub.WEIGHTS_FILE, hub.DEPLOY_WEIGHTS_FILE,
                       hub.PROGRAM_FILE}
    return sorted(p.name for p in Path(out).iterdir()
                  if not (p.is_file() and (p.name in ours or p.name.startswith(hub.ONNX_FILE))))


def _written_by_export(path: Path) -> bool:
    try:
        meta = json.loads((path / hub.CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    return meta.get("written_by") == WRITTEN_BY or (isinstance(meta.get("source"), dict)
                                                    and isinstance(meta.get("checks"), list))


def _weights(study, trial, config: OverLoCKConfig, *, run_dir, train, seed, start, workdir: Path, log):
    """(train-structure model, weights record): trained at export time (`train`, from scratch or
    from the supernet's weights), inherited from a supernet (`start`), the trial's own trained
    weights, or freshly initialised with `seed`."""
    attrs = trial.user_attrs
    inherited = None
    if start is not None:
        model, weights = _inherit_weights(study, trial, config, start, seed, log)
        if train is None:
            return model, weights
        inherited = (model, weights, start)
    if train is not None:
        model, weights = _train_with_evaluator(study, config, train, seed, str(workdir), log, inherited)
        shutil.rmtree(workdir, ignore_errors=True)
    elif attrs.get("weights"):
        rel = Path(attrs["weights"])
        if rel.is_absolute():
            path = rel
        elif run_dir is None:
            raise ExportError(f"trial {trial.number}'s weights are at RUN_DIR/{rel}; pass RUN_DIR")
        else:
            path = Path(run_dir) / rel
        model = _model_from_weights(config, path, f"trial {trial.number}")
        weights = {"source": "trial", "file": str(rel), "evaluator": attrs.get("evaluator"),
                   "epochs": attrs.get("epochs"), "fidelity": attrs.get("fidelity")}
        log(f"weights: trial {trial.number}'s trained weights ({rel})")
    else:
        torch.manual_seed(seed)
        model = overlock.OverLoCK(config)
        weights = {"source": "init", "seed": seed,
                   "note": "freshly initialised (the trial's evaluator saved no weights): train "
                           "or fine-tune before use"}
        log(f"weights: freshly initialised, seed {seed} (the trial has no trained weights)")
    return model, weights


def _export_into(tmp: Path, study, trial, config: OverLoCKConfig, *, run_dir, selection,
                 storage_label, train, onnx, pt2, latency, seed, start, log) -> ExportResult:
    t0 = time.perf_counter()

    # 1. weights (train structure)
    model, weights = _weights(study, trial, config, run_dir=run_dir, train=train, seed=seed,
                              start=start, workdir=tmp / ".train", log=log)
    searched = config.to_dict()
    config = model.config   # the evaluator may have adapted num_classes / in_chans to its data
    adapted = {k: [searched[k], v] for k, v in config.to_dict().items() if searched[k] != v}
    if adapted:
        weights["config_adapted"] = adapted
    model.eval()

    # 2. eager references, then the train and deploy weights
    inputs = check_inputs(config)
    with torch.no_grad():
        references = [model(x) for x in inputs]
    meta = hub.save_model_dir(model, tmp, _metadata(study, trial, config, selection, storage_label,
                                                    weights))

    # 3. checks: reload and deploy from the files just written, then the programs of that deploy model
    checks = []
    reloaded = hub.load_model_dir(tmp).eval()
    deploy_model = hub.load_model_dir(tmp, deploy=True).eval()
    with torch.no_grad():
        checks.append(check("reload via overlock.create_model(dir) vs eager",
                             max_diff([reloaded(x) for x in inputs], references), tolerance=0.0))
        checks.append(check("deploy model (model_reparam.safetensors) vs eager",
                             max_diff([deploy_model(x) for x in inputs], references)))
    if pt2:
        log("exporting model.pt2 (torch.export) ...")
        checks.append(write_pt2(deploy_model, inputs, references, tmp))
    if onnx:
        log("exporting model.onnx ...")
        checks.append(write_onnx(deploy_model, inputs, references, tmp))
    for name in (hub.PROGRAM_FILE, hub.ONNX_FILE):
        if (tmp / name).is_file():
            meta["files"][name] = hub.file_record(tmp / name)

    # 4. measurements and the card
    log("measuring params and GMACs (fvcore) ...")
    meta["measured"] = _measure(model, deploy_model)
    if latency:
        from nas.measure import measure_latency

        log("measuring latency (CPU, batch 1, fp32) ...")
        meta["latency_export"] = measure_latency(deploy_model, device="cpu", batch=1, dtype="fp32",
                                                 threads=torch.get_num_threads())
    meta["checks"] = checks
    meta["export_s"] = round(time.perf_counter() - t0, 2)
    hub.write_config(tmp, meta)
    (tmp / hub.CARD_FILE).write_text(model_card(meta))
    return ExportResult(out_dir=tmp, trial=trial.number, meta=meta, checks=checks)


def _publish_permissions(path: Path) -> None:
    """mkdtemp makes a private (0700) directory; give the result the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for f in path.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def _metadata(study, trial, config: OverLoCKConfig, selection: str, storage_label: str | None,
              weights: dict) -> dict:
    from importlib import metadata as md

    attrs = trial.user_attrs
    objectives = study_objectives(study)
    feasible, why = feasibility(trial, storage.study_budgets(study), objectives)
    metrics = {n: metric_value(trial, n, objectives) for n in (*[o.name for o in objectives], *storage.METRICS)}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    latency = {k: attrs[k] for k in ("latency_ms", "latency_p90_ms", "latency_spread_ms", "latency_device",
                                     "latency_batch", "latency_dtype", "latency_channels_last",
                                     "latency_stages_ms") if k in attrs}
    study_evaluator = study.user_attrs.get("evaluator")
    versions = {"torch": torch.__version__}
    for package in ("overlock-nas", "optuna", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return {
        "written_by": WRITTEN_BY,
        "source": {
            "study": study.study_name,
            "storage": storage_label,
            "trial": trial.number,
            "state": trial.state.name,
            "selection": selection,
            "feasible": feasible,
            "infeasible_because": why or None,
            "objectives": [{"name": n, "direction": d} for n, d in objectives],
            "values": dict(zip([n for n, _ in objectives], trial.values or [])),
            "constraints": storage.named_constraints(trial, storage.study_budgets(study)),
            "budgets": study.user_attrs.get("constraints") or {},
            "resolution": attrs.get("resolution", list(config.resolution)),
        },
        "metrics": metrics,
        "latency": latency,
        "evaluator": {
            "name": attrs.get("evaluator"),
            "score": attrs.get("score"),
            "fidelity": attrs.get("fidelity"),
            "epochs": attrs.get("epochs"),
            "history": attrs.get("history"),
            "dataset": _jsonable(attrs.get("dataset")) if attrs.get("dataset") is not None else None,
            "settings": _jsonable(study_evaluator) if study_evaluator is not None else None,
        },
        "weights": _jsonable(weights),
        "input": {"layout": "NCHW float32", "shape": ["batch", config.in_chans, *config.resolution],
                  "normalisation": "as in training; nas.data serves (pixel/255 - 0.5) / 0.25"},
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }

