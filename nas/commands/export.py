"""`overlock-nas export RUN_DIR (--trial N | --best | --top K | --knee) [-o DIR]
[--from-supernet [DIR]] [--train]`: searched architectures as model directories. Selection is `nas.selection`'s, writing `nas.export`'s; this
module only turns options into calls and results into lines."""

from __future__ import annotations

import json

import click

from ._options import yaml_mapping


@click.command("export")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--trial", "trial", type=int, default=None, help="Export this trial (must be COMPLETE).")
@click.option("--best", is_flag=True,
              help="Export the best feasible COMPLETE full-fidelity trial by --objective.")
@click.option("--top", "top", type=click.IntRange(min=1), default=None, metavar="K",
              help="Export the K best such trials by --objective (one directory each, under --out).")
@click.option("--knee", is_flag=True,
              help="Export the knee of the feasible Pareto front: the front point farthest from the "
                   "line (hyperplane) through the front's extremes, objectives normalised to [0, 1] "
                   "(Das 1999; Zhang et al. 2015).")
@click.option("--objective", default=None, metavar="NAME",
              help="With --best/--top: rank by this metric (default: the first maximised objective).")
@click.option("--under", default=None, metavar="NAME=VALUE,...",
              help="With --best/--top/--knee: only trials under these budgets, e.g. flops=2e9,latency_ms=5.")
@click.option("-o", "--out", "out", default=None, type=click.Path(file_okay=False),
              help="Directory to write (default RUN_DIR/exports/trial-N-<hash>); with --top, the "
                   "folder that receives one trial-N-<hash> directory per trial.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --out directory that an earlier export wrote (never anything else).")
@click.option("--train", "train", is_flag=True,
              help="Train the architecture from scratch with the study's train evaluator first.")
@click.option("--from-supernet", "from_supernet", is_flag=False, flag_value="", default=None,
              metavar="[DIR]",
              help="Weights inherited from a trained supernet (the folder `overlock-nas supernet train` "
                   "wrote; without DIR the study's own: its supernet evaluator or proxy gate): the "
                   "trial's sub-network, batch-norm statistics re-estimated as the study's supernet "
                   "scoring did (else on the supernet's own data set), its inherited-weight accuracy "
                   "recorded. With --train, training starts from them.")
@click.option("--dataset", default=None, metavar="SPEC",
              help="With --train: procedural, imagefolder:PATH, cifar:PATH, a directory or a YAML "
                   "mapping (default: the study's data set).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="With --train: epochs (default: the study evaluator's, else 10).")
@click.option("--train-settings", callback=yaml_mapping, default=None, metavar="YAML",
              help="With --train: train-evaluator settings over the study's, e.g. '{lr: 5.0e-4, "
                   "warmup_epochs: 0}' (fine-tuning from --from-supernet weights: docs/explanation/supernet.md).")
@click.option("--device", default="cpu", show_default=True, help="With --train: cpu, cuda or cuda:N.")
@click.option("--seed", default=0, show_default=True,
              help="Seed of freshly initialised weights and of --train.")
@click.option("--onnx/--no-onnx", "onnx", default=None,
              help="Write model.onnx (it needs onnx and onnxscript: --onnx fails in one line without "
                   "them) or not. Default: write it when they import, else say in one line that it "
                   "is skipped.")
@click.option("--no-pt2", "no_pt2", is_flag=True,
              help="Do not write model.pt2 (without it, a model.pt2 that cannot be written fails the export "
                   "and nothing is written).")
@click.option("--latency", "latency", is_flag=True,
              help="Also measure the deploy model's latency on this machine (CPU, batch 1, fp32).")
@click.option("--storage", default=None, metavar="URL",
              help="An Optuna RDB URL or journal file instead of RUN_DIR/study.log.")
@click.option("--study", "study_name", default=None, metavar="NAME",
              help="Study name (needed when the storage holds several).")
@click.option("--json", "as_json", is_flag=True, help="Print config.json's summary as JSON.")
def command(run_dir, trial, best, top, knee, objective, under, out, overwrite, train, from_supernet,
            dataset, epochs, train_settings, device, seed, onnx, no_pt2, latency, storage,
            study_name, as_json):
    """Write a model directory for one trial (or --top K): config.json, weights (safetensors,
    train and re-parameterised), model.pt2 (torch.export), model.onnx (when onnx is installed)
    and a model card (README.md); every program checked against the eager model. Nothing is
    published unless every file was written and checked (--top K: all K or none); exporting a
    trial again with the same content keeps the earlier export.
    `overlock.create_model(pathlib.Path(DIR))` loads it."""
    from pathlib import Path

    from overlock import ConfigError
    from nas.commands._options import check_device
    from nas.export import (ExportError, TrainSpec, default_out_dir, open_study, parse_dataset,
                            stage_trial, supernet_start, weights_tag)
    from nas.selection import parse_budgets, select_trial, top_trials

    if from_supernet is not None and dataset and not train:
        raise click.UsageError("--dataset with --from-supernet is the --train data set; batch norm is "
                               "re-estimated on the data set the supernet scores with (the study's "
                               "supernet evaluator's, else its card's): add --train or drop --dataset")
    _check_usage(trial, best, top, knee, objective, under, train, dataset, epochs, train_settings,
                 run_dir, storage)
    if train:
        check_device(device, allow_auto=False)

    def log(line: str) -> None:
        click.echo(line, err=True)

    results = []
    try:
        study, label = open_study(run_dir, storage=storage, study_name=study_name)
        budgets = parse_budgets(under)
        if top is not None:
            chosen = top_trials(study, top, objective=objective, under=budgets)
            if len(chosen) < top:
                log(f"--top {top}: only {len(chosen)} candidate(s) record {objective or 'the objective'}")
        else:
            chosen = [select_trial(study, trial=trial, objective=objective, under=budgets, knee=knee)]
        start = None if from_supernet is None else supernet_start(study, from_supernet or True)
        spec = None
        if train:
            stored = study.user_attrs.get("evaluator") or {}
            default_epochs = stored.get("epochs", 10) if stored.get("name", "train") == "train" else 10
            spec = TrainSpec(epochs=epochs or int(default_epochs), dataset=parse_dataset(dataset),
                             device=device, settings=train_settings)
        staged = []
        try:   # every trial staged and verified before any is published: all or none
            for picked, why in chosen:
                log(f"selected trial {picked.number}: {why}")
                target = out
                if top is not None and out is not None:  # one trial-N-<hash8> directory each, under --out
                    target = Path(out) / default_out_dir(None, picked, str(picked.user_attrs.get("config_hash", "")),
                                                         weights_tag(spec, start)).name
                staged.append(stage_trial(study, picked, target, run_dir=run_dir, selection=why,
                                          storage_label=label, train=spec, onnx=onnx, pt2=not no_pt2,
                                          latency=latency, seed=seed, overwrite=overwrite,
                                          from_supernet=start, log=log))
            results = [s.publish() for s in staged]
        finally:
            for s in staged:
                s.discard()
    except (ExportError, ConfigError, ValueError) as e:  # ValueError: data-set / settings errors
        raise click.ClickException(" ".join(str(e).split())) from None
    _print(results, as_json)


def _check_usage(trial, best, top, knee, objective, under, train, dataset, epochs, train_settings,
                 run_dir, storage):
    chosen = [name for name, on in (("--trial N", trial is not None), ("--best", best),
                                    ("--top K", top is not None), ("--knee", knee)) if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --trial N, --best, --top K or --knee"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    if trial is not None and (objective or under):
        raise click.UsageError("--objective and --under choose among trials; use them with --best, "
                               "--top or --knee, not --trial")
    if knee and objective:
        raise click.UsageError("--knee weighs every objective; --objective ranks for --best/--top")
    if not train and (dataset or epochs or train_settings):
        raise click.UsageError("--dataset, --epochs and --train-settings set the --train schedule; "
                               "add --train")
    if run_dir is None and storage is None:
        raise click.UsageError("give RUN_DIR or --storage URL")


def _load_hint(path) -> str:
    text = str(path)
    return f"overlock.create_model(pathlib.Path({text!r}))"


def _print(results, as_json: bool) -> None:
    if as_json:
        docs = [{"out_dir": str(r.out_dir), "trial": r.trial, "config_hash": r.meta["config_hash"],
                 "selection": r.meta["source"]["selection"], "weights": r.meta["weights"]["source"],
                 "checks": r.meta["checks"], "files": sorted(r.meta["files"]),
                 "ok": r.ok and not r.not_written, "kept": r.kept,
                 **({"supernet": r.meta["weights"]["supernet"]} if r.meta["weights"].get("supernet") else {})}
                for r in results]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        for result in results:
            meta = result.meta
            verb = "kept (identical)" if result.kept else "wrote"
            click.echo(f"{verb} {result.out_dir} (trial {result.trial}, {meta['config_hash']}, weights: "
                       f"{meta['weights']['source']})")
            inherited = meta["weights"].get("supernet")
            if inherited:
                click.echo(f"  inherited from {inherited['folder']}: inherited-weight accuracy "
                           f"{inherited['inherited_accuracy']:.4f}, val loss {inherited['inherited_val_loss']:.4f}")
            for check in meta["checks"]:
                if "error" in check:
                    click.echo(f"  {check['check']}: not written ({check['error']})")
                else:
                    verdict = "pass" if check["passed"] else "FAIL"
                    click.echo(f"  {check['check']}: max abs diff {check['max_abs_diff']:.3g} "
                               f"(tolerance {check['tolerance']:g}) {verdict}")
            click.echo(f"load: {_load_hint(result.out_dir)}")
