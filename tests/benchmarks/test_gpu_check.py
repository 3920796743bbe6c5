"""benchmarks/gpu_check.py without a GPU: its dry run (every code path, tiny, on CPU), its time
budget, and its clear refusal when asked for CUDA on a machine without it."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module      # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_every_part_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path),
                           "--budget-s", "1200"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["dry_run"] and report["plan"] == "dry-run"
    assert [p["status"] for p in report["parts"].values()] == ["ok"] * 5, report["parts"]
    assert report["skipped"] == []
    env = report["environment"]
    assert env["device"].startswith("cpu:") and env["torch"] == torch.__version__

    logits = report["logits"]
    assert [r["model"] for r in logits["rows"]] == ["train structure, eval", "deploy (re-parameterised)"]
    assert all(r["ok"] and r["max_abs_logit_cpu"] > 0 for r in logits["rows"])

    plan = load_script().dry_plan()
    cells = {(r["batch"], r["dtype"], r["channels_last"]) for r in report["latency"]["rows"]}
    assert cells == {(b, d, c) for b in plan.batches for d, c in plan.layouts}
    for row in report["latency"]["rows"]:
        assert len(row["round_medians_ms"]) == plan.rounds and row["latency_ms"] > 0
        assert row["latency_device"].endswith("na2d_av pure PyTorch")

    steps = report["train_step"]["rows"]
    assert [(r["amp"], r["channels_last"]) for r in steps] == plan.train_variants
    assert all(r["finite"] and r["step_ms"] > 0 for r in steps)
    assert [r["amp_dtype"] for r in steps] == ["bfloat16", "fp32"]

    runs = report["evaluator"]["rows"]
    assert [r["amp"] for r in runs] == list(plan.evaluator_amps)
    assert all(r["ok"] and len(r["history"]) == 2 and r["resumed_from_rung"] == 1 for r in runs)

    op = report["aggregation_op"]
    assert op["copy_gbps"] > 0 and op["peak_gbps"] is None          # no nominal peak for a CPU
    shapes = {r["shape"] for r in op["rows"]}
    assert any("row-loop" in s for s in shapes) and len(shapes) >= 2
    assert all(r["forward_gbps"] > 0 and r["backward_gbps"] > 0 for r in op["rows"])

    md = (tmp_path / "gpu-check.md").read_text()
    assert md.startswith("# GPU check (DRY RUN") and "## (d) Aggregation op" in md


def test_budget_skips_parts_with_a_note(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--dry-run", "--budget-s", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert {p["status"] for p in report["parts"].values()} == {"skipped"}
    assert len(report["skipped"]) == 5 and all("budget" in s for s in report["skipped"])
    assert "## Skipped (time budget)" in (tmp_path / "gpu-check.md").read_text()


def test_cpu_device_means_dry_run():
    args = load_script().parse_args(["--device", "cpu"])
    assert args.dry_run and args.device == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_no_cuda_device_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("gpu_check: no CUDA device")
    assert not (tmp_path / "gpu-check.json").exists()


def test_gpu_plans_cover_what_the_check_promises():
    gpu_check = load_script()
    full, quick = gpu_check.full_plan(), gpu_check.quick_plan()
    for plan in (full, quick):
        assert list(plan.models) == ["XT", "T", "S", "B"] and plan.batches == (1, 64)
        assert {d for d, _ in plan.layouts} == {"fp32", "fp16", "bf16"}
        assert plan.logit_config == gpu_check.overlock.PRESETS["overlock_xt"]
        assert plan.train_config == gpu_check.overlock.PRESETS["overlock_t"]
        assert plan.train_batch == 64 and plan.train_config.resolution == (224, 224) and plan.op_batch == 64
        assert {a for a, _ in plan.train_variants} >= {"bf16", "fp16"} and plan.rounds >= 2
        assert set(plan.evaluator_amps) == {"bf16", "fp16"}
    assert set(full.layouts) == {(d, c) for d in ("fp32", "fp16", "bf16") for c in (False, True)}
    assert gpu_check.BUDGET_S <= 450
