"""`overlock-nas export RUN_DIR (--trial N | --best ...)`: a searched architecture as a model directory."""

from __future__ import annotations

import json
import sys

import click


@click.command("export")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--trial", "trial", type=int, default=None, help="Export this trial (must be COMPLETE).")
@click.option("--best", is_flag=True,
              help="Export the best feasible COMPLETE full-fidelity trial.")
@click.option("--objective", default=None, metavar="NAME",
              help="With --best: rank by this metric (default: the first maximised objective).")
@click.option("--under", default=None, metavar="NAME=VALUE,...",
              help="With --best: only trials under these budgets, e.g. flops=2e9,latency_ms=5.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Directory to write (default RUN_DIR/exports/trial-N-<hash>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
@click.option("--train", "train", is_flag=True,
              help="Train the architecture from scratch with the study's train evaluator first.")
@click.option("--dataset", default=None, metavar="SPEC",
              help="With --train: procedural, imagefolder:PATH, cifar:PATH, a directory or a YAML "
                   "mapping (default: the study's data set).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="With --train: epochs (default: the study evaluator's, else 10).")
@click.option("--device", default="cpu", show_default=True, help="With --train: training device.")
@click.option("--seed", default=0, show_default=True,
              help="Seed of freshly initialised weights and of --train.")
@click.option("--no-onnx", "no_onnx", is_flag=True, help="Do not write model.onnx.")
@click.option("--latency", "latency", is_flag=True,
              help="Also measure the deploy model's latency on this machine (CPU, batch 1, fp32).")
@click.option("--storage", default=None, metavar="URL",
              help="An Optuna RDB URL or journal file instead of RUN_DIR/study.log.")
@click.option("--study", "study_name", default=None, metavar="NAME",
              help="Study name (needed when the storage holds several).")
@click.option("--json", "as_json", is_flag=True, help="Print config.json's summary as JSON.")
def command(run_dir, trial, best, objective, under, out, overwrite, train, dataset, epochs, device,
            seed, no_onnx, latency, storage, study_name, as_json):
    """Write a model directory for one trial: config.json, weights (safetensors, train and
    re-parameterised), model.pt2 (torch.export), model.onnx and a model card (README.md); every
    program checked against the eager model. `overlock.create_model(DIR)` loads it."""
    from overlock import ConfigError
    from nas.export import (ExportError, TrainSpec, export_trial, open_study, parse_budgets,
                            parse_dataset, select_trial)

    def fail(message: str) -> None:
        click.echo(f"error: {message}", err=True)
        sys.exit(2)

    if (trial is None) == (not best):
        fail("give exactly one of --trial N or --best")
    if trial is not None and (objective or under):
        fail("--objective and --under choose among trials; use them with --best, not --trial")
    if not train and (dataset or epochs):
        fail("--dataset and --epochs set the --train schedule; add --train")
    if run_dir is None and storage is None:
        fail("give RUN_DIR or --storage URL")

    def log(line: str) -> None:
        click.echo(line, err=True)

    try:
        study, label = open_study(run_dir, storage=storage, study_name=study_name)
        chosen, why = select_trial(study, trial=trial, objective=objective, under=parse_budgets(under))
        log(f"selected trial {chosen.number}: {why}")
        spec = None
        if train:
            stored = study.user_attrs.get("evaluator") or {}
            default_epochs = stored.get("epochs", 10) if stored.get("name", "train") == "train" else 10
            spec = TrainSpec(epochs=epochs or int(default_epochs), dataset=parse_dataset(dataset),
                             device=device)
        result = export_trial(study, chosen, out, run_dir=run_dir, selection=why, storage_label=label,
                              train=spec, onnx=not no_onnx, latency=latency, seed=seed,
                              overwrite=overwrite, log=log)
    except (ExportError, ConfigError) as e:
        fail(str(e))
    except ValueError as e:  # a data-set or settings error from the evaluator / data modules
        fail(str(e))

    meta = result.meta
    if as_json:
        click.echo(json.dumps({"out_dir": str(result.out_dir), "trial": result.trial,
                               "config_hash": meta["config_hash"], "weights": meta["weights"]["source"],
                               "checks": meta["checks"], "files": sorted(meta["files"]),
                               "ok": result.ok}, indent=2))
    else:
        click.echo(f"wrote {result.out_dir} (trial {result.trial}, {meta['config_hash']}, weights: "
                   f"{meta['weights']['source']})")
        for check in meta["checks"]:
            if "error" in check:
                click.echo(f"  {check['check']}: not written ({check['error']})")
            else:
                verdict = "pass" if check["passed"] else "FAIL"
                click.echo(f"  {check['check']}: max abs diff {check['max_abs_diff']:.3g} "
                           f"(tolerance {check['tolerance']:g}) {verdict}")
        click.echo(f"load: overlock.create_model({str(result.out_dir)!r})")
    for check in result.not_written:
        click.echo(f"warning: {check['check'].split(' vs ')[0]} not written: {check['error']}", err=True)
    if not result.ok:
        bad = result.mismatched[0]
        click.echo(f"error: {bad['check']}: max abs diff {bad['max_abs_diff']:.3g} exceeds "
                   f"{bad['tolerance']:g} (the directory is written; see its config.json checks)", err=True)
        sys.exit(1)
