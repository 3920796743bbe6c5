"""Regenerate a pinned run directory: a tiny study run by the real engine, checked in under
tests/data/runs/ and read back by tests/test_pinned_runs.py (as Optuna pins old storage formats).

The engine, the `train` evaluator and the latency measurement are the real ones, run through the
real CLI (`overlock-nas search`) on a tiny space at 32x32 with the built-in procedural data, so the
journal holds what a user's run directory holds: trials COMPLETE, PRUNED over a budget (never
trained), PRUNED by successive halving, reused by config hash, with latency records, constraints
and trained weights. Takes 1-4 minutes on 2 (shared) cores. Which trials successive halving stops
depends on the order trials finish in, so two runs of one engine can differ: the facts of each
pinned run are written out in tests/test_pinned_runs.py (FACTS), read off the search's summary.

    python3 tests/data/make_journal.py                    # the engine of this checkout
    # the engine of a commit (what the pinned runs were made with: 8705fc4, 3ad15d3):
    git archive COMMIT | tar -x -C /tmp/eng && \
        PYTHONPATH=/tmp/eng python3 tests/data/make_journal.py --engine /tmp/eng --commit COMMIT

The output directory is tests/data/runs/tiny-<version>+<commit>/ (the engine's package version
and the git commit it came from). Never edit a pinned directory: add a new one when the engine
writes something new, and keep the old ones so old run directories keep reading.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# 3 x 2 x 2 = 12 architectures of ~30k params (weights ~130 kB each), 0.3-0.6 MMACs at 32x32
SPACE = {
    "base": {"base_depths": [1, 1, 1], "overview_depth": 1, "focus_depths": [1, 1],
             "widths": [8, 16, 16, 16], "focus_heads": [1, 1], "head_width": 16,
             "reparam_kernels": [5, 5, 5, 5], "dynamic_kernels": [5, 5], "small_kernel": 3,
             "mlp_ratios": [2, 2, 2, 2], "focus_mlp_ratios": [2, 2]},
    "fixed": {"resolution": 32, "num_classes": 10},
    "dimensions": {"region_count": {"choices": [2, 3, 4]},
                   "base_depths[2]": {"choices": [1, 2]},
                   "widths[3]": {"choices": [16, 32]}},
}
STUDY = {
    "name": "tiny",
    "space": SPACE,
    "objectives": ["accuracy", "flops", "latency_ms"],
    "constraints": {"params": 51500},        # 4 of the 12 are over (widths[3] = 32, deeper)
    "evaluator": {"name": "train", "dataset": {"kind": "procedural", "train_size": 80, "val_size": 40},
                  "epochs": 2, "rungs": [1, 2], "batch_size": 16, "warmup_epochs": 0.5,
                  "bn_recalibration_batches": 2},
    "latency": {"warmup": 2, "repeats": 5, "profile_stages": True},
    "sampler": {"name": "nsga2", "population_size": 4},
    "seed": 0,
    "successive_halving": {"eta": 2, "min_trials": 2},
    "trials": 5,                             # trained architectures (engines before trials_count: sampled)
    "parallel": 2,
    "resources": {"cpus": 1},
    "fvcore_check_every": 5,
}


def _commit(source: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(engine: Path) -> str:
    text = (engine / "pyproject.toml").read_text()
    return next(line.split("=")[1].strip().strip('"') for line in text.splitlines()
                if line.startswith("version"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=Path, default=REPO,
                        help="source tree whose engine runs (default: this checkout)")
    parser.add_argument("--commit", default=None, help="commit label (default: git HEAD of this checkout)")
    parser.add_argument("--out", type=Path, default=None, help="run directory to write")
    args = parser.parse_args()
    engine = args.engine.resolve()
    label = f"tiny-{_version(engine)}+{args.commit or _commit(REPO)}"
    out = args.out or HERE / "runs" / label
    if out.exists():
        sys.exit(f"{out} exists: pinned run directories are never rewritten")
    with tempfile.TemporaryDirectory(prefix="pin-") as tmp:
        run_dir = Path(tmp) / "run"
        study = Path(tmp) / "tiny.yaml"
        study.write_text(yaml.safe_dump(STUDY, sort_keys=False))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(engine), os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1", OVERLOCK_NAS_CACHE=str(Path(tmp) / "cache"))   # measured afresh
        subprocess.run([sys.executable, "-c", "from nas.cli import main; main()", "search", str(study),
                        "--run-dir", str(run_dir)], cwd=engine, env=env, check=True)
        # what users keep: the journal, the study file copy and the weights (no lock, no caches)
        out.mkdir(parents=True)
        for name in ("study.log", "study.yaml"):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, out / name)
        if (run_dir / "weights").is_dir():
            shutil.copytree(run_dir / "weights", out / "weights",
                            ignore=shutil.ignore_patterns("*.state.pt"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
