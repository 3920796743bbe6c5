"""Validation accuracy epoch by epoch on real images, under setting variants (issue 12).

Trains one architecture of a space (sampled with a seed) on scikit-learn's digits written as an
ImageFolder, once per variant, and prints the validation accuracy after every epoch and the
training loss. A sound score rises and stays; a broken one is low and swings.

    nice python benchmarks/bench_val_stability.py --epochs 8 --resolution 64 \\
        --variant defaults '{}' --variant no-bn-reestimate '{bn_recalibration_batches: 0}' \\
        --variant flip '{augment: {hflip: true}}' --variant no-augment '{augment: false}'
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> None:
    import torch
    import yaml

    import space
    from nas.evaluators import get_evaluator
    from nas.sample_sets import write_digits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="studies/spaces/quickstart.yaml")
    ap.add_argument("--config-seed", type=int, default=0, help="which architecture (space.sample seed)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=None, help="none = the config's")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "SETTINGS"),
                    help="a name and train-evaluator settings (YAML mapping); repeatable")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = write_digits(os.path.join(tempfile.gettempdir(), "overlock-nas-digits"))
    config = space.load_space(args.space).sample(seed=args.config_seed)
    print(f"config {config.summary()}; digits ImageFolder {root}; load {os.getloadavg()}")
    for name, text in args.variant or [("defaults", "{}")]:
        settings = {"dataset": {"kind": "imagefolder", "path": str(root)}, "epochs": args.epochs,
                    "save_weights": False, **(yaml.safe_load(text) or {})}
        if args.resolution:
            settings["resolution"] = args.resolution
        t0 = time.perf_counter()
        r = get_evaluator("train", settings).evaluate(config, budget_epochs=None, seed=args.seed,
                                                      workdir=tempfile.gettempdir())
        acc = " ".join(f"{a:.3f}" for a in r["history"])
        loss = " ".join(f"{a:.3f}" for a in r["train_loss"])
        print(f"{name:24s} val acc {acc} | train loss {loss} | {time.perf_counter() - t0:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
