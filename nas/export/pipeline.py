"""The export pipeline: one trial in, one verified model directory out (`export_trial`).

Steps: the trial's weights (`nas.export.weights`, `.train`, `.inherit`), eager references, the
train and deploy weights (`overlock.hub`), the checks and programs (`nas.export.programs`), the
measurements and config.json record (`nas.export.record`), the model card (`nas.export.card`);
all written into a directory beside the target, verified, then published (`nas.export.out_dir`).
`stage_trial` stops before publishing, so that `--top K` publishes all K or none.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from overlock import ConfigError, OverLoCKConfig, hub
from nas.export import out_dir as out_dirs
from nas.export.card import model_card
from nas.export.inherit import SupernetStart, inherit_weights, supernet_start
from nas.export.programs import check, check_inputs, max_diff, onnx_missing, write_onnx, write_pt2
from nas.export.record import measure, metadata
from nas.export.train import TrainSpec, train_with_evaluator
from nas.export.weights import initial_weights, trial_weights
from nas.selection import ExportError

__all__ = ["ExportResult", "StagedExport", "open_study", "default_out_dir", "stage_trial",
           "export_trial"]


def open_study(run_dir: str | os.PathLike | None = None, *, storage: str | None = None,
               study_name: str | None = None):
    """(study, storage label) from `RUN_DIR/study.log`, a journal file or an RDB URL
    (`nas.storage.open_study`); ExportError (one line) when it cannot be read."""
    from nas import storage as stored

    try:
        return stored.open_study(run_dir, storage, study_name)
    except stored.StorageError as e:
        raise ExportError(str(e)) from None


@dataclass
class ExportResult:
    """What `export_trial` wrote (`kept`: an identical earlier export was left in place)."""

    out_dir: Path
    trial: int
    meta: dict
    checks: list[dict]
    kept: bool = False

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


@dataclass
class StagedExport:
    """An export written and verified beside its target, not yet published (`stage_trial`)."""

    result: ExportResult
    staged: Path | None          # None: an identical earlier export is kept
    log: Callable[[str], None] = field(default=lambda _: None, repr=False)

    def publish(self) -> ExportResult:
        """Put the export in place (see `nas.export.out_dir.publish`); the result."""
        if self.staged is not None:
            out_dirs.publish(self.staged, self.result.out_dir, self.log)
            self.staged = None
        return self.result

    def discard(self) -> None:
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None


def default_out_dir(run_dir: str | os.PathLike | None, trial, config_hash: str, weights: str = "") -> Path:
    """RUN_DIR/exports/trial-N-<hash8>[-WEIGHTS]: `weights` names weights made at export time
    (`weights_tag`), so that they never meet the trial's own export in one directory."""
    base = Path(run_dir) / "exports" if run_dir is not None else Path("exports")
    return base / f"trial-{trial.number}-{config_hash[:8]}{'-' + weights if weights else ''}"


def weights_tag(train, from_supernet) -> str:
    """'' (the trial's own weights), 'supernet', 'trained' or 'supernet-trained'."""
    parts = [tag for tag, on in (("supernet", from_supernet not in (None, False)),
                                 ("trained", train is not None)) if on]
    return "-".join(parts)


def export_trial(study, trial, out_dir: str | os.PathLike | None = None, **options) -> ExportResult:
    """Write the model directory of `trial`: `stage_trial(...)`, then publish it. Arguments and
    errors: `stage_trial`.

        >>> from nas.export import open_study, select_trial, export_trial
        >>> study, _ = open_study("runs/demo")
        >>> trial, why = select_trial(study, knee=True, under={"flops": 2e9})
        >>> result = export_trial(study, trial, "exports/demo-knee", run_dir="runs/demo")
    """
    return stage_trial(study, trial, out_dir, **options).publish()


def stage_trial(study, trial, out_dir: str | os.PathLike | None = None, *,
                run_dir: str | os.PathLike | None = None, selection: str = "",
                storage_label: str | None = None, train: TrainSpec | None = None,
                onnx: bool | None = None, pt2: bool = True, latency: bool = False, seed: int = 0,
                overwrite: bool = False,
                from_supernet: SupernetStart | str | os.PathLike | bool | None = None,
                log: Callable[[str], None] = lambda _: None) -> StagedExport:
    """Write and verify the model directory of `trial` beside its target; nothing is published.

    Args:
        study, trial: the study and one of its COMPLETE trials (`select_trial`).
        out_dir: the directory to create (default `RUN_DIR/exports/trial-N-<hash8>`, with
            `-supernet` / `-trained` when the weights are made at export time).
        run_dir: the run directory the trial's `weights` path is relative to.
        selection: why the trial was chosen (recorded).
        storage_label: where the study is stored (recorded; `open_study` gives it).
        train: train the architecture anew at export time instead of using the trial's weights.
        onnx: write and check `model.onnx`: None = when onnx and onnxscript import (else one
            logged line says it is skipped, and config.json's `skipped` why), True = required
            (ExportError before any work when they do not import), False = no.
        pt2: also write and check `model.pt2`.
        latency: also measure the deploy model's latency here (`nas.latency.measure`; CPU, batch 1, fp32).
        seed: seed of freshly initialised weights and of `train`. The batch-norm re-estimation
            sample of `from_supernet` is drawn with the trial's own evaluation seed (its `seed`
            attribute; `seed` for a trial without one), so the inherited-weight accuracy
            reproduces the score the study recorded.
        overwrite: replace an existing `out_dir` that export wrote and that holds only files
            export writes (`check_out_dir`); the files replaced are logged. Without it, an
            earlier export of this trial with the same content is kept (not an error).
        from_supernet: inherit the weights from a trained supernet (`supernet_start`: a folder,
            or True for the study's own); with `train`, training starts from them.
        log: progress lines.

    Raises:
        ExportError: one line (bad trial record, missing weights, existing directory, a config
            the supernet does not hold, a requested program not written or not matching eager,
            a file not as config.json records it, ...); nothing is left behind.
    """
    config = _trial_config(trial)
    out = (Path(out_dir) if out_dir is not None
           else default_out_dir(run_dir, trial, config.config_hash(), weights_tag(train, from_supernet)))
    earlier = out_dirs.check_out_dir(out, overwrite, same=(study.study_name, trial.number, config.config_hash()))
    skipped = _onnx_plan(onnx, log)
    if from_supernet is not None and from_supernet is not False and not isinstance(from_supernet, SupernetStart):
        from_supernet = supernet_start(study, from_supernet)
    tmp = out_dirs.stage_dir(out)
    try:
        result = _export_into(tmp, study, trial, config, run_dir=run_dir, selection=selection,
                              storage_label=storage_label, train=train, onnx=not skipped and onnx is not False,
                              pt2=pt2, latency=latency, seed=seed, start=from_supernet or None,
                              skipped=skipped, log=log)
        required = [hub.CONFIG_FILE, hub.CARD_FILE, hub.DEPLOY_WEIGHTS_FILE]
        required += [name for name, on in ((hub.PROGRAM_FILE, pt2), (hub.ONNX_FILE, onnx is not False
                                                                     and not skipped)) if on]
        out_dirs.verify(tmp, out, required)
        result.out_dir = out
        if earlier is not None:
            differ = out_dirs.differences(tmp, out)
            if differ:
                raise ExportError(f"{out} already exists (an earlier export of trial {trial.number} that "
                                  f"differs in {', '.join(differ)}); choose another --out or pass --overwrite")
            log(f"{out}: identical to the earlier export of trial {trial.number}; kept as it is")
            shutil.rmtree(tmp, ignore_errors=True)
            result.meta, result.kept = earlier, True
            result.checks = earlier.get("checks", [])
            return StagedExport(result, None, log)
        return StagedExport(result, tmp, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _trial_config(trial) -> OverLoCKConfig:
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
    return config


def _onnx_plan(onnx: bool | None, log) -> dict:
    """{} when model.onnx is written or not asked for; {"model.onnx": why} when it is skipped."""
    if onnx is False:
        return {}
    missing = onnx_missing()
    if missing is None:
        return {}
    if onnx:
        raise ExportError(f"--onnx: model.onnx needs the onnx and onnxscript packages ({missing}); "
                          "pip install onnx onnxscript, or drop --onnx")
    log(f"skipping model.onnx: {missing} (pip install onnx onnxscript to write it; --onnx requires it)")
    return {hub.ONNX_FILE: f"{missing}; pip install onnx onnxscript to write it"}


def _weights(study, trial, config: OverLoCKConfig, *, run_dir, train, seed, start, workdir: Path, log):
    """(train-structure model, weights record): trained at export time (`train`, from scratch or
    from the supernet's weights), inherited from a supernet (`start`), the trial's own trained
    weights, or freshly initialised with `seed`."""
    inherited = None
    if start is not None:
        model, weights = inherit_weights(study, trial, config, start, seed, log)
        if train is None:
            return model, weights
        inherited = (model, weights, start)
    if train is not None:
        model, weights = train_with_evaluator(study, config, train, seed, str(workdir), log, inherited)
        shutil.rmtree(workdir, ignore_errors=True)
        return model, weights
    if trial.user_attrs.get("weights"):
        return trial_weights(trial, config, run_dir, log)
    return initial_weights(config, seed, log)


def _export_into(tmp: Path, study, trial, config: OverLoCKConfig, *, run_dir, selection,
                 storage_label, train, onnx, pt2, latency, seed, start, skipped, log) -> ExportResult:
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
    meta = hub.save_model_dir(model, tmp, metadata(study, trial, config, selection, storage_label,
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
    meta["measured"] = measure(model, deploy_model)
    if latency:
        from nas.latency.measure import measure_latency

        log("measuring latency (CPU, batch 1, fp32) ...")
        meta["latency_export"] = measure_latency(deploy_model, device="cpu", batch=1, dtype="fp32",
                                                 threads=torch.get_num_threads())
    meta["checks"] = checks
    if skipped:
        meta["skipped"] = dict(skipped)
    meta["export_s"] = round(time.perf_counter() - t0, 2)
    hub.write_config(tmp, meta)
    (tmp / hub.CARD_FILE).write_text(model_card(meta))
    return ExportResult(out_dir=tmp, trial=trial.number, meta=meta, checks=checks)
