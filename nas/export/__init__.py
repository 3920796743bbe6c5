"""Write a searched architecture as a ready-to-use model directory (`export_trial`).

The directory format is `overlock.hub`'s: config.json (config, hash, provenance, metrics, file
sha256s, checks; `written_by: "overlock-nas export"`), train and deploy weights as safetensors,
the programs `model.pt2` and `model.onnx` (`model.onnx` when onnx and onnxscript import, unless
asked for or refused) and the model card (README.md). Weights are the trial's trained weights
when its evaluator saved them, else freshly initialised with a stated seed, or trained anew by the
study's `train` evaluator (`train=TrainSpec(...)`), or inherited from a trained supernet
(`from_supernet=...`); with `train` as well, training starts from those weights. Every program is
checked against the eager model at export time and the results recorded in config.json.

The package, one job a module:

- `pipeline`: `export_trial` / `stage_trial`, the steps in order; `open_study`.
- `weights`: the trial's own weights or fresh ones; `inherit`: weights from a supernet
  (its folder checks are `nas.supernet.folder`'s, shared with the `supernet` evaluator);
  `train`: training at export time (`TrainSpec`, `train_model`).
- `programs`: `model.pt2` / `model.onnx` and their checks; `card`: the model card;
  `record`: what config.json records beside the hub's entries.
- `out_dir`: where an export lands and that it lands whole - written beside the target, verified,
  then put in place, so a failed export publishes nothing and `--overwrite` keeps the earlier
  export until the new one is complete; an identical re-export is kept, not refused.

Which trial to export is `nas.selection`'s job (`--trial`, `--best`, `--top`, `--knee`, `--under`);
its names are re-exported here.

    >>> from nas.export import open_study, select_trial, export_trial
    >>> study, _ = open_study("runs/demo")
    >>> trial, why = select_trial(study, knee=True, under={"flops": 2e9})
    >>> result = export_trial(study, trial, "exports/demo-knee", run_dir="runs/demo")
    >>> import overlock, pathlib; model = overlock.create_model(pathlib.Path(result.out_dir)).eval()
"""

from nas.export.card import model_card
from nas.export.inherit import SupernetStart, supernet_start
from nas.export.out_dir import WRITTEN_BY, check_out_dir, files_not_written_by_export
from nas.export.pipeline import (ExportResult, StagedExport, default_out_dir, export_trial, open_study,
                                 stage_trial, weights_tag)
from nas.export.programs import TOLERANCE
from nas.export.train import TrainSpec, parse_dataset, train_model
from nas.selection import ExportError, parse_budgets, select_trial, top_trials

__all__ = ["ExportError", "TrainSpec", "ExportResult", "StagedExport", "SupernetStart", "open_study",
           "parse_budgets", "parse_dataset", "select_trial", "top_trials", "export_trial",
           "stage_trial", "default_out_dir", "weights_tag", "train_model", "supernet_start", "model_card",
           "check_out_dir", "files_not_written_by_export", "WRITTEN_BY", "TOLERANCE"]
