"""Do a supernet's inherited weights start a training better than a fresh initialisation? (issue 19)

`overlock-nas export --from-supernet --train` fine-tunes a trial's sub-network from the weights it
inherits; this measures what that buys, on the same architectures the fidelity bench uses
(bench_proxy_fidelity.sample_architectures: the same space, count and sample seed):

  - inherited + E epochs: the sub-network extracted from the supernet, batch-norm statistics
    re-estimated as the `supernet` evaluator does (4 x 32 training images), then trained E epochs
    by the train evaluator (`init_state`: the export's path), seed s;
  - scratch E epochs: the same training from the seeded fresh initialisation;
  - the stand-alone 4-epoch finals of a bench_proxy_fidelity work folder (`--finals`), for scale.

Everything else (optimiser, schedule over E epochs, augmentation, data) is the train evaluator's
with `--train-settings`. Per architecture and seed both trainings run back to back (same load).
Results go to WORK/finetune.jsonl (a rerun skips what is there); the summary prints the mean
final accuracy of each, the paired difference with a 90 % bootstrap interval over architectures,
and how the fine-tuned accuracy ranks the architectures against the 4-epoch finals.

    nice -n 19 python benchmarks/bench_supernet_finetune.py --space benchmarks/spaces/fidelity.yaml \\
        --dataset digits --dataset-options '{train_size: 320}' --n 20 --resolution 32 \\
        --train-settings '{batch_size: 32, lr: 2.0e-3, warmup_epochs: 0.5}' \\
        --supernet WORK/supernet-sandwich-e4 --finals WORK --epochs 1 --seeds 0 1 --work WORK
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import space as space_pkg  # noqa: E402
from bench_proxy_fidelity import Results, resolve_dataset, sample_architectures  # noqa: E402


def inherited_state(supernet, config, data, seed: int) -> dict:
    """The sub-network's state_dict with its BN statistics re-estimated (the evaluator's default)."""
    from nas.evaluators import fit_to_data
    from nas.supernet.score import rescore

    model = supernet.extract(supernet.fit(fit_to_data(config, data)))
    rescore(model, data, bn_batches=4, batch_size=32, eval_batch_size=256, seed=seed)
    return model.state_dict()


def run(configs, args, dataset: dict, results: Results, work: Path) -> None:
    from nas.data import load_dataset
    from nas.evaluators import get_evaluator
    from overlock.supernet import Supernet
    from nas.supernet.train import WEIGHTS_FILE

    supernet = Supernet.load(Path(args.supernet) / WEIGHTS_FILE).eval()
    data = load_dataset(dataset, (args.resolution, args.resolution))
    for epochs in args.epochs:
        trainer = get_evaluator("train", dict(args.train_settings, dataset=dataset, epochs=epochs,
                                              save_weights=False, resolution=args.resolution))
        for i, config in enumerate(configs):
            chash = config.config_hash()
            for seed in args.seeds:
                for start in ("inherited", "scratch"):
                    job = f"{start}/{epochs}/{seed}"
                    if results.get(chash, job):
                        continue
                    init = inherited_state(supernet, config, data, seed) if start == "inherited" else None
                    c0, t0 = time.process_time(), time.perf_counter()
                    r = trainer.evaluate(config, budget_epochs=None, seed=seed, workdir=str(work), init_state=init)
                    row = {"hash": chash, "job": job, "history": r["history"], "val_loss": r["val_loss"],
                           "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2),
                           "load": round(os.getloadavg()[0], 2)}
                    results.put(row)
                    print(f"[{i + 1}/{len(configs)}] {chash[:10]} {job:16s} acc {r['history'][-1]:.4f} "
                          f"({row['wall_s']:.1f} s)", flush=True)


def bootstrap(diff: np.ndarray, count: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(count)]
    return tuple(float(v) for v in np.percentile(means, [5, 95]))


def summary(configs, args, results: Results, finals_rows: Results | None) -> list[str]:
    from scipy.stats import kendalltau, spearmanr

    hashes = [c.config_hash() for c in configs]
    lines = ["| start | epochs | mean final accuracy | inherited - scratch (90 % bootstrap) | inherited ahead |"
             " rho / tau vs the 4-epoch finals |", "|---|---:|---:|---:|---:|---:|"]
    four = None
    if finals_rows is not None:
        seeds4 = [s for s in range(16) if all(finals_rows.get(h, f"train/{s}") for h in hashes)]
        if seeds4:
            four = np.mean([[finals_rows.get(h, f"train/{s}")["history"][-1] for h in hashes] for s in seeds4], axis=0)
            lines.insert(0, f"4-epoch stand-alone finals from scratch (mean of seeds {seeds4}): mean "
                            f"{four.mean():.4f}, range {four.min():.3f}-{four.max():.3f}\n")
    for epochs in args.epochs:
        acc = {}
        for start in ("inherited", "scratch"):
            got = [[(results.get(h, f"{start}/{epochs}/{s}") or {}).get("history", [np.nan])[-1]
                    for s in args.seeds] for h in hashes]
            acc[start] = np.array(got, float).mean(axis=1)   # per architecture, mean over seeds
        if np.isnan(acc["inherited"]).any() or np.isnan(acc["scratch"]).any():
            lines.append(f"| (E={epochs}: not every training done) | | | | | |")
            continue
        diff = acc["inherited"] - acc["scratch"]
        lo, hi = bootstrap(diff)
        for start in ("inherited", "scratch"):
            rank = "-" if four is None else (f"{spearmanr(acc[start], four).statistic:.2f} / "
                                             f"{kendalltau(acc[start], four).statistic:.2f}")
            extra = (f"{diff.mean():+.4f} ({lo:+.4f}..{hi:+.4f})", f"{int((diff > 0).sum())} of {len(diff)}") \
                if start == "inherited" else ("", "")
            lines.append(f"| {start} | {epochs} | {acc[start].mean():.4f} | {extra[0]} | {extra[1]} | {rank} |")
    walls = [r["wall_s"] for h in hashes for r in [results.get(h, f"scratch/{e}/{s}") for e in args.epochs
                                                    for s in args.seeds] if r]
    if walls:
        lines.append(f"\nA scratch training took {np.median(walls):.1f} s median (wall; the seeds and epochs above).")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="benchmarks/spaces/fidelity.yaml")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--dataset-options", type=yaml.safe_load, default={})
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--train-settings", type=yaml.safe_load, default={})
    ap.add_argument("--supernet", required=True, help="a folder `overlock-nas supernet train` wrote")
    ap.add_argument("--finals", default=None, help="a bench_proxy_fidelity --work folder: its 4-epoch finals")
    ap.add_argument("--epochs", type=int, nargs="+", default=[1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None, help="write the summary here (markdown)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="supernet-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = resolve_dataset(args.dataset, work)
    dataset.update(args.dataset_options)
    configs = sample_architectures(space_pkg.load_space(args.space), args.n, args.sample_seed)
    results = Results(work / "finetune.jsonl")
    load, t0 = os.getloadavg(), time.perf_counter()
    run(configs, args, dataset, results, work)
    finals = Results(Path(args.finals) / "results.jsonl") if args.finals else None
    lines = summary(configs, args, Results(work / "finetune.jsonl"), finals)
    lines.append(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {time.perf_counter() - t0:.0f} s; "
                 f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
