"""How long does scoring N architectures with a trained supernet take? (issue 19)

Samples N distinct architectures of a space (seeded) and scores each with the `supernet`
evaluator (inherited weights, batch norm re-estimated, validation accuracy and loss), in
`--workers` processes of `--threads` torch threads each: what a study with
`evaluator: {name: supernet, weights: DIR}` spends in its evaluator, without the driver.

    nice -n 19 python benchmarks/bench_supernet_scoring.py --space benchmarks/spaces/supernet-wide.yaml \\
        --supernet runs/supernet-wide --n 1000 --workers 2 --threads 1 --out scores.jsonl

Prints the wall time, architectures per minute, the median seconds (wall and CPU) per architecture
and the load average at the start and the end; `--out` gets one JSON line per architecture. The
evaluator's settings are its defaults unless `--bn-batches`, `--bn-batch`, `--val-images` or
`--keep-data-mb` say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def distinct_configs(space_path: str, n: int, seed: int) -> list:
    """`n` distinct configs of the space file, drawn as bench_proxy_fidelity draws them."""
    from space import load_space

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_proxy_fidelity import sample_architectures

    return sample_architectures(load_space(space_path), n, seed)


def score_chunk(args) -> list[dict]:
    """Score a list of config dicts in this process (one evaluator, one supernet load)."""
    import torch

    from nas.evaluators import get_evaluator
    from overlock import OverLoCKConfig

    chunk, settings, threads = args
    torch.set_num_threads(threads)
    ev = get_evaluator("supernet", settings)
    rows = []
    for data in chunk:
        config = OverLoCKConfig.from_dict(data)
        c0 = time.process_time()
        r = ev.evaluate(config, seed=0)
        rows.append({"hash": config.config_hash(), "summary": config.summary(), "accuracy": r["score"],
                     "val_loss": r["val_loss"][-1], "wall_s": round(r["wall_s"], 4),
                     "cpu_s": round(time.process_time() - c0, 4)})
    return rows


def main(argv=None) -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", required=True)
    ap.add_argument("--supernet", required=True, help="folder written by `overlock-nas supernet train`")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bn-batches", type=int, default=None, help="evaluator bn_recalibration_batches")
    ap.add_argument("--bn-batch", type=int, default=None, help="evaluator batch_size (images a BN batch)")
    ap.add_argument("--val-images", type=int, default=None, help="evaluator val_images (default: all)")
    ap.add_argument("--keep-data-mb", type=int, default=None, help="evaluator keep_data_mb (0: stream)")
    ap.add_argument("--out", default=None, help="JSON lines, one per architecture")
    args = ap.parse_args(argv)
    configs = [c.to_dict() for c in distinct_configs(args.space, args.n, args.seed)]
    settings = {"weights": args.supernet}
    for key, value in (("bn_recalibration_batches", args.bn_batches), ("batch_size", args.bn_batch),
                       ("val_images", args.val_images), ("keep_data_mb", args.keep_data_mb)):
        if value is not None:
            settings[key] = value
    chunks = [(configs[i::args.workers], settings, args.threads) for i in range(args.workers)]
    load_start, t0 = os.getloadavg(), time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = [row for part in pool.map(score_chunk, chunks) for row in part]
    wall = time.perf_counter() - t0
    load_end = os.getloadavg()
    per, cpu = np.array([r["wall_s"] for r in rows]), np.array([r["cpu_s"] for r in rows])
    print(f"{len(rows)} distinct architectures of {args.space} scored in {wall / 60:.1f} min "
          f"({len(rows) / wall * 60:.0f} a minute) with {args.workers} workers x {args.threads} thread(s); "
          f"per architecture median {np.median(per):.2f} s (p90 {np.quantile(per, 0.9):.2f} s, the first "
          f"of each worker includes loading), median {np.median(cpu):.2f} CPU-s; settings {settings}; load average {' '.join(f'{v:.2f}' for v in load_start)} -> "
          f"{' '.join(f'{v:.2f}' for v in load_end)}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.out:
        with open(args.out, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
