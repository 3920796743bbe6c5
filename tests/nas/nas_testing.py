"""Helpers for the engine tests: a tiny space and study files using the scripted test evaluator."""

import os
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# 4 region counts x 3 last-stage widths = 12 architectures; widths[3] = 128 costs ~2.4 MMACs,
# the others <= 1.9 MMACs at 32x32.
TINY_SPACE = {
    "base": {"base_depths": [1, 1, 1], "overview_depth": 1, "focus_depths": [1, 1],
             "widths": [16, 32, 64, 64], "focus_heads": [1, 1], "head_width": 64,
             "resolution": [32, 32], "num_classes": 4, "reparam_kernels": [5, 5, 5, 5],
             "dynamic_kernels": [5, 5], "small_kernel": 3},
    "dimensions": {"region_count": {"choices": [1, 2, 3, 4]},
                   "widths[3]": {"choices": [32, 64, 128]}},
}


def study_dict(tmp_path: Path, **overrides) -> dict:
    """A study using `fake_evaluators:Scripted` that logs every evaluation to tmp_path/evals.jsonl."""
    evaluator = {"name": "fake_evaluators:Scripted", "log": str(tmp_path / "evals.jsonl"),
                 "sleep_s": 0.05}
    if "evaluator" in overrides and overrides["evaluator"] is None:
        evaluator = overrides.pop("evaluator")
    else:
        evaluator.update(overrides.pop("evaluator", {}))
    data = {"name": "tiny", "space": TINY_SPACE, "objectives": ["accuracy", "flops"],
            "evaluator": evaluator, "sampler": {"name": "random"}, "seed": 0, "trials": 6,
            "trials_count": "sampled",     # tests count trials as stored; test_trial_budget: trained
            "fvcore_check_every": 0, "output_dir": str(tmp_path / "run")}
    data.update(overrides)
    return data


def write_study(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_dict(tmp_path, **overrides), sort_keys=False))
    return path


def subprocess_env() -> dict:
    """Environment for a driver subprocess: the repo and the test evaluator importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (read from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":     # zombies are already dead
                pids.append(int(entry))
    return pids
