"""Full check of the analytic cost model against fvcore and sum(p.numel()).

    python benchmarks/verify_cost_model.py [--samples 200]

For each shipped space: N random configs (narrowed channels so tracing stays affordable; depth
splits, kernels, region counts and heads as sampled), each at 224x224, 160x256 and 64x64, train and
deploy builds alternating. Prints mismatches (there should be none) and the totals.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "space"))

import overlock  # noqa: E402
import space  # noqa: E402
from overlock.flops import count_macs  # noqa: E402
from test_cost import _shrink  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    for path in ("studies/spaces/xt_t.yaml", "studies/spaces/wide.yaml"):
        s = space.load_space(os.path.join(ROOT, path))
        rng = random.Random(3)
        checked = bad = 0
        t = time.time()
        for i in range(args.samples):
            cfg = _shrink(s.sample(rng), rng)
            deploy = bool(i % 2)
            model = overlock.create_model(cfg, deploy=deploy)
            n = sum(p.numel() for p in model.parameters())
            for res in ((224, 224), (160, 256), (64, 64)):
                m = count_macs(model, res)
                c = space.complexity(cfg, res, deploy=deploy)
                checked += 1
                if (c.flops, c.flops_paper, c.params) != (m.total, m.paper, n):
                    bad += 1
                    print("MISMATCH", cfg.summary(), res, deploy, (c.flops, m.total), (c.params, n))
        print(f"{path}: {args.samples} configs x 3 resolutions = {checked} checks, "
              f"{bad} mismatches ({time.time() - t:.0f} s)")
