"""Export a searched architecture as a ready-to-use model directory.

Two steps, usable on their own:

- **Selection** (`select_trial`): a given trial (it must exist and be COMPLETE), or the best one:
  among COMPLETE, full-fidelity, feasible trials (every constraint <= 0), optionally only those
  under extra budgets (`--under flops=2e9,latency_ms=5`), the best by one objective (default the
  study's first maximised objective). Ties go to the other objectives in order, then the lower
  trial number. Every refusal is one line saying why (`ExportError`).
- **Writing** (`export_trial`): the directory format of `overlock.hub` (config.json, train and
  deploy weights as safetensors, a `torch.export` program, an ONNX program, a model card). Weights
  are the trial's trained weights when its evaluator saved them, else freshly initialised with a
  stated seed, or trained anew by the study's `train` evaluator (`train=TrainSpec(...)`). Every
  program is checked against the eager model at export time and the results recorded in
  config.json. The directory is built beside the target and renamed into place at the end, so a
  failed export leaves nothing half-written and never touches an existing directory.

    >>> from nas.export import open_study, select_trial, export_trial
    >>> study, _ = open_study("runs/demo")
    >>> trial, why = select_trial(study, under={"flops": 2e9})
    >>> result = export_trial(study, trial, "exports/demo-best", run_dir="runs/demo")
    >>> import overlock; model = overlock.create_model(result.out_dir).eval()
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import shutil
import tempfile
import time
import unittest.mock
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

import overlock
from overlock import ConfigError, OverLoCKConfig
from overlock import hub

__all__ = ["ExportError", "TrainSpec", "ExportResult", "open_study", "parse_budgets",
           "parse_dataset", "study_objectives", "metric_value", "feasibility", "select_trial",
           "export_trial", "train_model", "TOLERANCE"]

TOLERANCE = 1e-4      # max abs difference a deploy model / program may have from eager logits
CHECK_SEED = 0        # seed of the random check inputs
CHECK_BATCHES = (2, 1)  # programs are exported with a dynamic batch; both sizes are checked


class ExportError(ValueError):
    """A selection or export that cannot be done; the message is one line."""


# ------------------------------------------------------------------------------ the study
def open_study(run_dir: str | os.PathLike | None = None, *, storage: str | None = None,
               study_name: str | None = None):
    """(study, storage label) from `RUN_DIR/study.log`, a journal file or an RDB URL.

    Nothing is written to the study. The label is the journal path, or the URL without password.

    Raises:
        ExportError: no storage, a missing file, no study, or several studies and no name.
    """
    from nas import storage as stored

    try:
        return stored.open_study(run_dir, storage, study_name)
    except stored.StorageError as e:
        raise ExportError(str(e)) from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


# ----------------------------------------------------------------------------- metrics
def _directions() -> dict[str, str]:
    from nas.study import DIRECTIONS

    return DIRECTIONS


def study_objectives(study) -> list[tuple[str, str]]:
    """[(name, "maximize" | "minimize")] in the study's order."""
    stored = study.user_attrs.get("objectives")
    if isinstance(stored, list) and stored and all(isinstance(o, dict) for o in stored):
        return [(str(o["name"]), str(o["direction"]).lower()) for o in stored]
    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
    return [(n, d.name.lower()) for n, d in zip(names, study.directions)]


def metric_value(trial, name: str, objectives: list[tuple[str, str]]) -> float | None:
    """A trial's value of `name`: its objective value, else the user attr of that name."""
    names = [n for n, _ in objectives]
    if name in names and trial.values is not None:
        value = trial.values[names.index(name)]
    else:
        value = trial.user_attrs.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def feasibility(study, trial) -> tuple[bool, str]:
    """(feasible, why not): every stored constraint <= 0, and every study budget known to hold."""
    broken = [k for k, v in trial.constraints.items() if v > 0]
    if broken:
        named = [k for k in broken if not k.isdigit()] or broken
        return False, f"breaks {', '.join(named)}"
    if trial.user_attrs.get("infeasible"):
        return False, "marked infeasible"
    budgets = study.user_attrs.get("constraints") or {}
    objectives = study_objectives(study)
    for name, budget in budgets.items():
        if name in trial.constraints:
            continue
        value = metric_value(trial, name, objectives)
        if value is None:
            return False, f"has no {name} to check against its budget"
        if value > float(budget):
            return False, f"breaks {name}"
    return True, ""


def _full_fidelity(trial) -> bool:
    fidelity = trial.user_attrs.get("fidelity", 1.0)
    return not isinstance(fidelity, (int, float)) or fidelity >= 1.0 - 1e-9


def parse_budgets(text: str | Mapping[str, Any] | None) -> dict[str, float]:
    """`"flops=2e9,latency_ms=5"` (or a mapping) -> {"flops": 2e9, "latency_ms": 5.0}.

    Amounts take k/M/G/T suffixes (`500M`). Only minimised metrics can have an upper budget.
    """
    from nas.study import parse_amount

    if not text:
        return {}
    items = text.items() if isinstance(text, Mapping) else []
    if not isinstance(text, Mapping):
        pairs = [p.strip() for p in str(text).split(",") if p.strip()]
        items = []
        for pair in pairs:
            if "=" not in pair:
                raise ExportError(f"--under {pair!r}: expected NAME=NUMBER, e.g. flops=2e9")
            name, _, amount = pair.partition("=")
            items.append((name.strip(), amount.strip()))
    directions = _directions()
    out = {}
    for name, amount in items:
        if name not in directions:
            raise ExportError(f"--under {name}: unknown metric (known: {', '.join(directions)})")
        if directions[name] != "minimize":
            raise ExportError(f"--under {name}: {name} is maximised; budgets are upper bounds on "
                              "minimised metrics (flops, flops_paper, params, latency_ms, memory_mb)")
        try:
            out[name] = parse_amount(amount)
        except ValueError as e:
            raise ExportError(f"--under {name}={amount}: {e}") from None
    return out


def _format_amount(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


# ----------------------------------------------------------------------------- selection
def select_trial(study, *, trial: int | None = None, objective: str | None = None,
                 under: Mapping[str, float] | None = None):
    """The trial to export and one line saying why it was chosen.

    Args:
        study: an Optuna study written by `overlock-nas search` (docs/storage.md).
        trial: a trial number; it must exist and be COMPLETE. None: choose the best.
        objective: the metric to rank by (default: the first maximised objective, else the first).
        under: extra upper budgets {metric: amount} a candidate must meet.

    Raises:
        ExportError: one line: no such trial, not COMPLETE, or no candidate and why.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    name = study.study_name
    if trial is not None:
        found = [t for t in trials if t.number == trial]
        if not found:
            span = f"trials 0..{max(t.number for t in trials)}" if trials else "no trials"
            raise ExportError(f"trial {trial} does not exist in study {name!r} ({span})")
        t = found[0]
        if t.state != TrialState.COMPLETE:
            reason = t.user_attrs.get("reason")
            raise ExportError(f"trial {trial} is {t.state.name}" + (f" ({reason})" if reason else "")
                              + "; only COMPLETE trials can be exported")
        ok, why = feasibility(study, t)
        return t, f"trial {trial} as asked" + ("" if ok else f" (infeasible: {why})")
    objectives = study_objectives(study)
    rank_by, direction = _rank_metric(study, objectives, objective)

    # an official preset evaluated beside the search is a reference, never "the best" (as in reports)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("preset")]
    if not complete:
        counts = _state_counts(trials)
        raise ExportError(f"no COMPLETE trial in study {name!r}" + (f" ({counts})" if counts else " (no trials)"))
    full = [t for t in complete if _full_fidelity(t)]
    if not full:
        raise ExportError(f"no full-fidelity COMPLETE trial in study {name!r} "
                          f"({len(complete)} COMPLETE, all below fidelity 1)")
    feasible, reasons = [], {}
    for t in full:
        ok, why = feasibility(study, t)
        if ok:
            feasible.append(t)
        else:
            reasons[why] = reasons.get(why, 0) + 1
    if not feasible:
        detail = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        raise ExportError(f"no feasible COMPLETE trial in study {name!r}: none of the {len(full)} "
                          f"full-fidelity COMPLETE trials meets the budgets ({detail})")
    candidates = feasible
    under = dict(under or {})
    unrecorded = []
    for metric, budget in under.items():
        known = [(metric_value(t, metric, objectives), t) for t in candidates]
        recorded = [(v, t) for v, t in known if v is not None]
        if not recorded:
            raise ExportError(f"--under {metric}: no feasible trial records {metric}")
        if len(recorded) < len(known):
            unrecorded.append(f"{len(known) - len(recorded)} without {metric} left out")
        kept = [t for v, t in recorded if v <= budget]
        if not kept:
            v, t = min(recorded, key=lambda vt: vt[0])
            raise ExportError(f"no feasible trial under {metric}<={_format_amount(budget)}: the "
                              f"smallest {metric} is {_format_amount(v)} (trial {t.number}) of "
                              f"{len(candidates)} candidates")
        candidates = kept
    scored = [(metric_value(t, rank_by, objectives), t) for t in candidates]
    scored = [(v, t) for v, t in scored if v is not None]
    if not scored:
        raise ExportError(f"--objective {rank_by}: none of the {len(candidates)} candidates records it")
    sign = -1.0 if direction == "maximize" else 1.0

    def key(item):
        value, t = item
        rest = []
        for other, other_dir in objectives:
            if other == rank_by:
                continue
            v = metric_value(t, other, objectives)
            rest.append(math.inf if v is None else (-v if other_dir == "maximize" else v))
        return (sign * value, *rest, t.number)

    value, best = min(scored, key=key)
    budgets = ", ".join(f"{m}<={_format_amount(b)}" for m, b in under.items())
    return best, (f"best {rank_by} ({direction[:3]}) = {value:.6g} among {len(scored)} feasible "
                  f"COMPLETE trials" + (f" under {budgets}" if budgets else "")
                  + (f" ({'; '.join(unrecorded)})" if unrecorded else ""))


def _rank_metric(study, objectives, objective):
    if objective is None:
        maximised = [n for n, d in objectives if d == "maximize"]
        name = maximised[0] if maximised else objectives[0][0]
        return name, dict(objectives)[name]
    if objective in dict(objectives):
        return objective, dict(objectives)[objective]
    directions = _directions()
    if objective in directions:
        return objective, directions[objective]
    raise ExportError(f"--objective {objective}: not an objective of study {study.study_name!r} "
                      f"({', '.join(n for n, _ in objectives)}) nor a known metric "
                      f"({', '.join(directions)})")


def _state_counts(trials) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


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
                          log: Callable[[str], None]):
    """Train `config` from scratch with the study's `train` evaluator; (model, info)."""
    from nas.evaluators import TrialError, get_evaluator

    stored = study.user_attrs.get("evaluator")
    base = {}
    if isinstance(stored, Mapping) and stored.get("name", "train") == "train":
        base = {k: v for k, v in stored.items() if k != "name"}
    settings = {**base, **dict(spec.settings), "epochs": int(spec.epochs), "rungs": None,
                "save_weights": True}
    if spec.dataset is not None:
        settings["dataset"] = dict(spec.dataset)
    try:
        evaluator = get_evaluator("train", settings)
    except ValueError as e:
        raise ExportError(f"--train: {e}") from None
    log(f"training {config.config_hash()} for {spec.epochs} epochs on "
        f"{evaluator.settings['dataset'].get('kind')} ({spec.device}) ...")
    try:
        result = evaluator.evaluate(config, budget_epochs=None, device=spec.device, seed=seed,
                                    workdir=workdir, resume_from=None, weights_name="export-train")
    except TrialError as e:
        raise ExportError(f"--train failed: {e.reason}") from None
    model = _model_from_weights(config, Path(result["weights"]), "the --train run")
    info = {"source": "train", "seed": seed, "evaluator": "train",
            "settings": _jsonable(evaluator.settings), "score": result["score"],
            "history": result["history"], "train_loss": result.get("train_loss"),
            "epochs": result["epochs"], "wall_s": result.get("wall_s")}
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


# ------------------------------------------------------------------------------- checks
def _check_inputs(config: OverLoCKConfig) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(CHECK_SEED)
    return [torch.randn(b, config.in_chans, *config.resolution, generator=g) for b in CHECK_BATCHES]


def _max_diff(outputs, references) -> float:
    return max(float((torch.as_tensor(o) - r).abs().max()) for o, r in zip(outputs, references))


def _check(name: str, diff: float | None = None, tolerance: float = TOLERANCE, error: str | None = None,
           **extra) -> dict:
    record = {"check": name, "tolerance": tolerance, "batches": list(CHECK_BATCHES)}
    if error is not None:
        record.update(passed=False, error=error)
    else:
        record.update(max_abs_diff=diff, passed=bool(diff <= tolerance))
    record.update(extra)
    return record


@contextlib.contextmanager
def _quiet():
    """Silence exporter progress, FutureWarnings and 'torchvision is not installed' notes."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
                try:
                    yield
                finally:
                    sink.close()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_program(deploy_model, example: torch.Tensor, decompose: bool):
    """`torch.export` of the deploy model with a dynamic batch.

    `decompose`: trace with the aggregation op swapped for its plain-aten form (for ONNX); the
    custom op's decomposition cannot go through `run_decompositions`, whose graph must be
    functional (`na2d_av_decomposed` accumulates in place).
    """
    import overlock.model as model_module
    from overlock.ops import na2d_av_decomposed

    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    swap = (unittest.mock.patch.object(model_module, "na2d_av", na2d_av_decomposed) if decompose
            else contextlib.nullcontext())
    with swap:
        program = torch.export.export(deploy_model, (example,), dynamic_shapes=dynamic)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    has_custom = any("overlock" in op for op in ops)
    if decompose and has_custom:
        raise RuntimeError("the overlock::na2d_av op is still in the traced graph")
    if not decompose and not has_custom:
        raise RuntimeError("the overlock::na2d_av op did not stay a single node")
    return program


def _write_pt2(deploy_model, inputs, references, tmp: Path) -> dict:
    try:
        with _quiet():
            program = _export_program(deploy_model, inputs[0], decompose=False)
            torch.export.save(program, str(tmp / hub.PROGRAM_FILE))
            loaded = torch.export.load(str(tmp / hub.PROGRAM_FILE)).module()
            with torch.no_grad():
                outputs = [loaded(x) for x in inputs]
    except Exception as e:  # noqa: BLE001 - recorded, the export goes on
        (tmp / hub.PROGRAM_FILE).unlink(missing_ok=True)
        return _check("torch.export program (model.pt2) vs eager", error=_one_line(e))
    return _check("torch.export program (model.pt2) vs eager", _max_diff(outputs, references),
                  runtime=f"torch {torch.__version__}", op="overlock::na2d_av kept as one node")


def _onnx_runtime(path: Path):
    """(run(x) -> numpy, runtime label): onnxruntime when installed, else onnx's reference evaluator."""
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x.numpy()})[0]), f"onnxruntime {ort.__version__}"
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(str(path))
        name = evaluator.input_names[0]
        return (lambda x: evaluator.run(None, {name: x.numpy()})[0]), \
            f"onnx.reference.ReferenceEvaluator (onnx {onnx.__version__})"


def _write_onnx(deploy_model, inputs, references, tmp: Path) -> dict:
    name = "ONNX program (model.onnx) vs eager"
    try:
        import onnx

        with _quiet():
            program = _export_program(deploy_model, inputs[0], decompose=True)
            onnx_program = torch.onnx.export(program, (inputs[0],), dynamo=True, verbose=False,
                                             input_names=["images"], output_names=["logits"])
            onnx_program.save(str(tmp / hub.ONNX_FILE))
        onnx.checker.check_model(str(tmp / hub.ONNX_FILE))
        run, runtime = _onnx_runtime(tmp / hub.ONNX_FILE)
        outputs = [run(x) for x in inputs]
        opset = next((o.version for o in onnx.load(str(tmp / hub.ONNX_FILE), load_external_data=False)
                      .opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception as e:  # noqa: BLE001 - recorded, the export goes on
        for f in tmp.glob("model.onnx*"):
            f.unlink()
        return _check(name, error=_one_line(e))
    return _check(name, _max_diff(outputs, references), runtime=runtime, opset=opset,
                  op="overlock::na2d_av decomposed into plain ONNX ops")


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
        seed: seed of freshly initialised weights (and of `train`).
        overwrite: replace an existing `out_dir`.
        log: progress lines.

    Raises:
        ExportError: one line (bad trial record, missing weights, existing directory, ...).
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
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result = _export_into(tmp, study, trial, config, run_dir=run_dir, selection=selection,
                              storage_label=storage_label, train=train, onnx=onnx, pt2=pt2,
                              latency=latency, seed=seed, log=log)
        _publish_permissions(tmp)
        if out.exists():
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


def _export_into(tmp: Path, study, trial, config: OverLoCKConfig, *, run_dir, selection,
                 storage_label, train, onnx, pt2, latency, seed, log) -> ExportResult:
    attrs = trial.user_attrs
    t0 = time.perf_counter()

    # 1. weights (train structure)
    if train is not None:
        workdir = tmp / ".train"
        model, weights = _train_with_evaluator(study, config, train, seed, str(workdir), log)
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
    searched = config.to_dict()
    config = model.config   # the evaluator may have adapted num_classes / in_chans to its data
    adapted = {k: [searched[k], v] for k, v in config.to_dict().items() if searched[k] != v}
    if adapted:
        weights["config_adapted"] = adapted
    model.eval()

    # 2. eager references, then the train and deploy weights
    inputs = _check_inputs(config)
    with torch.no_grad():
        references = [model(x) for x in inputs]
    meta = hub.save_model_dir(model, tmp, _metadata(study, trial, config, selection, storage_label,
                                                    weights))

    # 3. checks: reload and deploy from the files just written, then the programs of that deploy model
    checks = []
    reloaded = hub.load_model_dir(tmp).eval()
    deploy_model = hub.load_model_dir(tmp, deploy=True).eval()
    with torch.no_grad():
        checks.append(_check("reload via overlock.create_model(dir) vs eager",
                             _max_diff([reloaded(x) for x in inputs], references), tolerance=0.0))
        checks.append(_check("deploy model (model_reparam.safetensors) vs eager",
                             _max_diff([deploy_model(x) for x in inputs], references)))
    if pt2:
        log("exporting model.pt2 (torch.export) ...")
        checks.append(_write_pt2(deploy_model, inputs, references, tmp))
    if onnx:
        log("exporting model.onnx ...")
        checks.append(_write_onnx(deploy_model, inputs, references, tmp))
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
    feasible, why = feasibility(study, trial)
    metric_names = ("accuracy", "synflow", "naswot", "zico", "flops", "flops_paper", "params",
                    "memory_mb", "latency_ms")
    metrics = {n: metric_value(trial, n, objectives) for n in (*[o for o, _ in objectives], *metric_names)}
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
            "constraints": {k: v for k, v in trial.constraints.items() if not k.isdigit()},
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
            "settings": _jsonable(study_evaluator) if study_evaluator is not None else None,
        },
        "weights": _jsonable(weights),
        "input": {"layout": "NCHW float32", "shape": ["batch", config.in_chans, *config.resolution],
                  "normalisation": "as in training; nas.data serves (pixel/255 - 0.5) / 0.25"},
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


# ----------------------------------------------------------------------------- the card
def _fmt_count(n: float | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def model_card(meta: dict) -> str:
    """The README.md of a model directory, from its config.json data."""
    cfg = OverLoCKConfig.from_dict(meta["config"])
    sections = (_card_header(meta), _card_architecture(cfg), _card_measured(meta, cfg),
                _card_weights(meta["weights"]), _card_files(meta, cfg), _card_usage(cfg))
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _card_header(meta: dict) -> list[str]:
    src = meta["source"]
    feasible = (f"feasible under the study's budgets {_budgets(src['budgets'])}" if src["feasible"]
                else f"**infeasible** ({src['infeasible_because']})")
    return [f"# OverLoCK, trial {src['trial']} of study `{src['study']}`", "",
            f"`{meta['summary']}`", "",
            f"- config hash `{meta['config_hash']}` (architecture hash `{meta['architecture_hash']}`)",
            f"- selected: {src['selection'] or 'n/a'}",
            f"- state {src['state']}, {feasible}",
            f"- storage: `{src['storage']}`"]


def _card_architecture(cfg: OverLoCKConfig) -> list[str]:
    lines = ["## Architecture", "", "| net | stage | blocks | width | kernels | other |",
             "|---|---|---|---|---|---|"]
    depths = (*cfg.base_depths, cfg.overview_depth)
    for i, net in enumerate(("Base-Net",) * 3 + ("Overview-Net",)):
        lines.append(f"| {net} | {i + 1} | {depths[i]} | {cfg.widths[i]} | re-param {cfg.reparam_kernels[i]} "
                     f"| MLP x{cfg.mlp_ratios[i]:g} |")
    for i in range(2):
        lines.append(f"| Focus-Net | {i + 3} | {cfg.focus_depths[i]} | {cfg.widths[i + 2]} | dynamic "
                     f"{cfg.dynamic_kernels[i]} + small {cfg.small_kernel}, lepe {cfg.reparam_kernels[i + 2]} "
                     f"| {cfg.focus_heads[i]} head(s), MLP x{cfg.focus_mlp_ratios[i]:g} |")
    H, W = cfg.resolution
    lines += ["", f"Region count R = {cfg.region_count}; stem width {cfg.stem_width}; context dim "
              f"{cfg.context_dim}; head width {cfg.head_width}; {cfg.num_classes} classes; aux head "
              f"{'yes' if cfg.aux_head else 'no'}; input {cfg.in_chans}x{H}x{W}."]
    return lines


def _card_measured(meta: dict, cfg: OverLoCKConfig) -> list[str]:
    measured, weights = meta.get("measured", {}), meta["weights"]
    analytic = measured.get("analytic", {})
    shape = f"input 1x{cfg.in_chans}x{cfg.resolution[0]}x{cfg.resolution[1]}, batch 1"
    rows = [("params", _fmt_count(measured.get("params")),
             f"deploy structure without aux head, counted (train structure with aux head: "
             f"{_fmt_count(measured.get('params_train'))})")]
    if "flops" in measured:
        agree = ""
        if analytic:
            agree = ("; the search's analytic count agrees" if analytic.get("flops") == measured["flops"]
                     else f"; the search's analytic count: {analytic.get('flops') / 1e9:.4g}")
        rows.append(("compute", f"{measured['flops'] / 1e9:.4g}",
                     f"GMACs (fvcore; the paper's FLOPs), {shape}{agree}"))
        rows.append(("compute (paper)", f"{measured['flops_paper'] / 1e9:.4g}",
                     f"GMACs (paper convention: large-kernel depthwise convs and aggregation "
                     f"uncounted), {shape}"))
    if analytic.get("memory_mb") is not None:
        rows.append(("activation memory", f"{analytic['memory_mb']:.3g} MiB",
                     "analytic peak, fp32 inference, batch 1"))
    lat = meta.get("latency") or {}
    if "latency_ms" in lat:
        extra = "".join(f", {k[len('latency_'):]} {lat[k]}" for k in ("latency_p90_ms", "latency_spread_ms")
                        if k in lat)
        rows.append(("latency", f"{lat['latency_ms']:.3f} ms (median{extra})",
                     f"measured during the search on {lat.get('latency_device', 'an unrecorded device')}, "
                     f"batch {lat.get('latency_batch', '?')}, {lat.get('latency_dtype', '?')}, "
                     f"channels_last {lat.get('latency_channels_last', '?')}, deploy model"))
    elif "latency_export" not in meta:
        rows.append(("latency", "not measured",
                     "the study measured no latency for this trial (export with --latency to measure it)"))
    if "latency_export" in meta:
        le = meta["latency_export"]
        rows.append(("latency (export)", f"{le['latency_ms']:.3f} ms (median, p90 {le['latency_p90_ms']}, "
                     f"IQR {le['latency_spread_ms']})", f"measured at export on {le['latency_device']}, "
                     f"batch {le['latency_batch']}, {le['latency_dtype']}, {le['latency_repeats']} repeats, "
                     "deploy model"))
    if weights["source"] == "train":
        rows.append(("accuracy", f"{weights.get('score', float('nan')):.4f}",
                     f"top-1 on the validation split after the export-time training "
                     f"({_epochs(weights.get('epochs'))}, data {(weights.get('settings') or {}).get('dataset')})"))
    ev, metrics = meta.get("evaluator") or {}, meta.get("metrics", {})
    score = metrics.get("accuracy", ev.get("score"))
    if score is not None:
        settings = ev.get("settings") if isinstance(ev.get("settings"), dict) else {}
        data = f", data {settings['dataset']}" if settings.get("dataset") else ""
        whose = {"trial": "these weights", "train": "the search's weights, not these",
                 "init": "the search's proxy training; these weights are untrained"}[weights["source"]]
        rows.append(("accuracy" if weights["source"] == "trial" else "search accuracy", f"{score:.4f}",
                     f"top-1 validation, evaluator `{ev.get('name')}`, fidelity {ev.get('fidelity')} "
                     f"({_epochs(ev.get('epochs'))}){data}; {whose}"))
    for proxy in ("synflow", "naswot", "zico"):
        if proxy in metrics:
            rows.append((proxy, f"{metrics[proxy]:.6g}", "zero-cost proxy at initialisation"))
    return ["## Measured", "", "| what | value | how |", "|---|---|---|",
            *(f"| {what} | {value} | {how} |" for what, value, how in rows)]


def _card_weights(weights: dict) -> list[str]:
    if weights["source"] == "trial":
        text = (f"Trained by the search's `{weights.get('evaluator')}` evaluator "
                f"({_epochs(weights.get('epochs'))}, fidelity {weights.get('fidelity')}); from "
                f"`{weights['file']}`.")
    elif weights["source"] == "train":
        text = f"Trained from scratch at export time: {_epochs(weights.get('epochs'))}, seed {weights['seed']}."
    else:
        text = (f"**Freshly initialised (seed {weights['seed']}), not trained**: the trial's evaluator "
                "saved no weights. Fine-tune before use, or export with `--train`.")
    lines = ["## Weights", "", text]
    if weights.get("config_adapted"):
        changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in weights["config_adapted"].items())
        lines.append(f"The evaluator adapted {changes} to its data set; config.json holds the adapted config.")
    return lines


def _card_files(meta: dict, cfg: OverLoCKConfig) -> list[str]:
    files = meta.get("files", {})
    lines = ["## Files and export checks", "", "| file | what |", "|---|---|",
             "| `config.json` | config, hash, provenance, metrics, file sha256s, checks |",
             "| `model.safetensors` | train-structure weights (fine-tunable, aux head included) |",
             "| `model_reparam.safetensors` | re-parameterised deploy weights |"]
    if hub.PROGRAM_FILE in files:
        lines.append("| `model.pt2` | `torch.export` program of the deploy model, dynamic batch; "
                     "`overlock::na2d_av` is one node (needs `import overlock`) |")
    if hub.ONNX_FILE in files:
        lines.append("| `model.onnx` | ONNX program of the deploy model, dynamic batch, aggregation op "
                     "decomposed into plain ONNX ops; input `images`, output `logits` |")
    lines += ["", "| check | max abs diff | tolerance | result |", "|---|---|---|---|"]
    for c in meta.get("checks", []):
        if "error" in c:
            lines.append(f"| {c['check']} | - | {c['tolerance']:g} | not written: {c['error']} |")
        else:
            runtime = f" ({c['runtime']})" if c.get("runtime") else ""
            lines.append(f"| {c['check']}{runtime} | {c['max_abs_diff']:.3g} | {c['tolerance']:g} | "
                         f"{'pass' if c['passed'] else '**FAIL**'} |")
    H, W = cfg.resolution
    lines += ["", f"Inputs: random normal (seed {CHECK_SEED}), batches {list(CHECK_BATCHES)}, "
              f"{cfg.in_chans}x{H}x{W}, eval mode; eager = the train-structure model."]
    return lines


def _card_usage(cfg: OverLoCKConfig) -> list[str]:
    H, W = cfg.resolution
    return ["## Load it", "", "```python", "import overlock, torch",
            'model = overlock.create_model("path/to/this/dir").eval()   # deploy=True: re-parameterised',
            f"logits = model(torch.randn(1, {cfg.in_chans}, {H}, {W}))", "```", "",
            "Fine-tune on a new label set: `overlock.create_model(dir, num_classes=N)` (new classifier). "
            "The program: `overlock.hub.load_program(dir).module()(images)`; ONNX: "
            '`onnxruntime.InferenceSession("model.onnx")`. Inputs are normalised as in training '
            "(`nas.data`: `(pixel / 255 - 0.5) / 0.25`)."]


def _epochs(n) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _budgets(budgets: Mapping[str, Any]) -> str:
    if not budgets:
        return "(none)"
    return "(" + ", ".join(f"{k} <= {_format_amount(float(v))}" for k, v in budgets.items()) + ")"
