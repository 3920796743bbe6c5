"""benchmarks/gpu_check.py without a GPU: its dry run (what the CPU can run of each part, in its own
process), conditions that can fail, its time budget, and its one-line refusal when the CUDA device
asked for is not there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    return load_benchmark("gpu_check")


def _dry_run(tmp_path, *extra, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path),
                           "--budget-s", "1200", *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_dry_run_runs_what_the_cpu_can_and_says_what_it_does_not(tmp_path):
    proc = _dry_run(tmp_path)
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    gpu_check = load_script()
    plan = gpu_check.dry_plan()
    assert report["dry_run"] and report["plan"] == "dry-run"
    assert report["not_reached"] == gpu_check.NOT_REACHED_ON_CPU and report["skipped"] == []
    assert report["environment"]["device"].startswith("cpu:")
    for part in report["parts"].values():          # every part: a condition and a measured value
        assert part["condition"] and part["measured"] and part["status"] in ("ok", "FAILED"), part
    # the deterministic parts must pass; latency and bandwidth depend on the load of the machine
    statuses = {k: p["status"] for k, p in report["parts"].items()}
    for title in ("(a) logits against the CPU", "(c) AMP training step", "(c) train evaluator, AMP + channels_last"):
        assert statuses[title] == "ok", report["parts"][title]
    assert proc.returncode == (0 if set(statuses.values()) == {"ok"} else 1), proc.stdout + proc.stderr
    assert report["not_run"] == [] and report["verdict"] == ("passed" if proc.returncode == 0 else "failed")

    variants = {r["variant"] for r in report["logits"]["rows"]}
    assert variants == {v[0] for v in plan.logit_variants}         # fp16 and bf16 CPU kernels reached
    assert all(r["rel_diff"] <= r["tolerance"] for r in report["logits"]["rows"])

    cells = {(r["batch"], r["dtype"], r["channels_last"]) for r in report["latency"]["rows"]}
    assert cells == {(b, d, c) for b in plan.batches for d, c in plan.layouts}
    for row in report["latency"]["rows"]:
        assert len(row["measurements_ms"]) == plan.rounds
        assert row["ok"] == (row["spread_pct"] <= 100 * plan.round_spread)

    steps = report["train_step"]
    assert [(r["amp"], r["channels_last"]) for r in steps["rows"]] == plan.train_variants
    assert all(r["skipped_timed"] == 0 and r["finite"] for r in steps["rows"])
    ordinary, overflow = steps["grad_scaler_check"]["steps"]
    assert ordinary["taken"] and ordinary["parameters_moved"]
    assert not overflow["taken"] and not overflow["parameters_moved"]
    assert overflow["scale_after"] == overflow["scale_before"] / 2

    assert [r["amp"] for r in report["evaluator"]["rows"]] == list(plan.evaluator_amps)
    op = report["aggregation_op"]
    assert op["peak_gbps"] is None and op["judged_against"].startswith("device copy")
    assert any("row-loop" in r["shape"] for r in op["rows"])

    md = (tmp_path / "gpu-check.md").read_text()
    assert md.startswith("# GPU check (DRY RUN") and "## Not reached by this run" in md
    assert "same code paths" not in md


@pytest.mark.slow
def test_a_part_whose_process_dies_fails_alone(tmp_path):
    """One part's process aborts (as a CUDA fault can kill it): that part is reported FAILED with
    how it died; the parts after it still run. Before: one process ran every part."""
    proc = _dry_run(tmp_path, "--parts", "logits,train_step",
                    env={"GPU_CHECK_INJECT_FAULT": "logits"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    logits, step = report["parts"]["(a) logits against the CPU"], report["parts"]["(c) AMP training step"]
    assert logits["status"] == "FAILED" and "killed by SIGABRT" in logits["note"]
    assert step["status"] == "ok" and "train_step" in report


def test_a_check_that_ran_nothing_is_incomplete_not_passed(tmp_path, capsys):
    """A part not run is not a pass. Before: --budget-s 1 skipped every part, printed "all checks
    passed" and exited 0."""
    gpu_check = load_script()
    assert gpu_check.main(["--dry-run", "--budget-s", "1", "--out", str(tmp_path)]) == gpu_check.INCOMPLETE_EXIT
    assert gpu_check.INCOMPLETE_EXIT not in (gpu_check.PASS_EXIT, gpu_check.FAIL_EXIT, gpu_check.NO_CUDA_EXIT)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "all checks passed" not in line and "INCOMPLETE" in line
    titles = [title for title, _ in gpu_check.PARTS.values()]
    assert all(title in line for title in titles), line          # the summary names every part not run
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["verdict"] == "incomplete"
    assert {p["status"] for p in report["parts"].values()} == {"not run"}
    assert report["not_run"] == [f"{t}: not run (time budget)" for t in titles]
    md = (tmp_path / "gpu-check.md").read_text()
    assert "**Verdict: incomplete**" in md and "## Not run" in md


def test_an_item_not_run_inside_a_part_makes_the_check_incomplete():
    gpu_check = load_script()
    report = {"parts": {"(a) logits against the CPU": {"status": "ok"}}, "wall_s": 3.0,
              "skipped": ["logits train fp16: skipped, estimated 5 s but 0 s of the 1 s budget left",
                          gpu_check.BF16_DROPPED]}
    report["not_run"] = gpu_check.not_run(report)
    assert report["not_run"] == report["skipped"][:1]          # no bf16 on this GPU is no gap
    report["verdict"] = "incomplete"
    assert "1 item(s) inside parts not run" in gpu_check.summary_line(report)


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        load_script().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "exit status" in text and "incomplete" in text and "3" in text


def test_cpu_device_means_dry_run():
    args = load_script().parse_args(["--device", "cpu"])
    assert args.dry_run and args.device == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("device", [[], ["--device", "cuda:7"]])
def test_no_cuda_device_is_one_line_and_exit_2(tmp_path, device):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *device], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("gpu_check: no CUDA device") and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "gpu-check.json").exists()


def test_a_gpu_index_this_machine_lacks_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """`--device cuda:7` on a one-GPU machine. Before: torch.cuda.set_device raised (a traceback)."""
    gpu_check = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu_check.main(["--device", "cuda:7", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gpu_check: --device cuda:7: this machine has 1 CUDA device(s) (cuda:0)"
    assert not (tmp_path / "gpu-check.json").exists()


def test_tf32_uses_the_fp32_precision_api_and_restores_it():
    gpu_check = load_script()
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    for allowed, value in ((True, "tf32"), (False, "ieee")):
        with gpu_check.tf32(allowed):
            assert (matmul.fp32_precision, conv.fp32_precision) == (value, value)
        assert (matmul.fp32_precision, conv.fp32_precision) == before
    assert "allow_tf32" not in SCRIPT.read_text()           # the deprecated flags


def test_nvidia_smi_is_asked_once_and_the_parts_reuse_its_answer(tmp_path, monkeypatch):
    """Before: every latency measurement's device string started nvidia-smi."""
    gpu_check = load_script()
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho called >> {log}\necho '555.42, NVIDIA H200'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert gpu_check.nvidia_smi_facts() == {"driver": "555.42", "nvidia_smi_gpus": ["NVIDIA H200"]}
    import nas.latency.device

    monkeypatch.setattr(nas.latency.device, "_cuda_driver", nas.latency.device._cuda_driver)   # restored after
    gpu_check.use_driver_version("555.42")
    assert [nas.latency.device._cuda_driver() for _ in range(3)] == ["555.42"] * 3
    assert log.read_text().count("called") == 1


def test_every_condition_can_fail(monkeypatch):
    """The verdicts come from the measured values: an over-tolerance logit, rounds that disagree,
    a skipped timed step, a slow op each fail their part (before: latency and the op reported
    ok = bool(rows))."""
    gpu_check = load_script()
    row = gpu_check._latency_row("tiny", gpu_check.TINY, 1, "fp32", False,
                                 [{"latency_ms": v, "latency_resolution": [32, 32], "latency_p90_ms": v,
                                   "latency_spread_ms": 0.0, "latency_device": "cpu"} for v in (1.0, 1.3)],
                                 spread_limit=0.10)
    assert row["spread_pct"] == pytest.approx(26.09, abs=0.01) and not row["ok"]
    ref = torch.tensor([[1.0, -2.0]], dtype=torch.float64)

    class Shifted(torch.nn.Module):
        def forward(self, x):
            return x + 0.01

    bad = gpu_check._logit_row(Shifted(), ref.float(), ref, torch.device("cpu"), "m", "fp32", "fp32",
                               False, False)
    assert bad["rel_diff"] == pytest.approx(0.005, rel=1e-3) and not bad["ok"]
    plan = gpu_check.dry_plan()
    monkeypatch.setattr(gpu_check, "_op_row", lambda *a: {"shape": "s", "dtype": "fp32", "forward_gbps": 1e-9,
                                                          "backward_gbps": 1.0})
    monkeypatch.setattr(gpu_check, "_copy_bandwidth", lambda *a: 10.0)
    monkeypatch.setattr(gpu_check, "op_shapes", lambda *a: [])
    op = gpu_check.op_bandwidth(plan, torch.device("cpu"), gpu_check.Budget(100))
    assert not op["ok"] and "lowest forward" in op["measured"]


def test_gpu_plans_cover_what_the_check_promises():
    gpu_check = load_script()
    full, quick = gpu_check.full_plan(), gpu_check.quick_plan()
    for plan in (full, quick):
        assert list(plan.models) == ["XT", "T", "S", "B"] and plan.batches == (1, 64)
        assert {d for d, _ in plan.layouts} == {"fp32", "fp16", "bf16"}
        assert plan.logit_config == gpu_check.overlock.PRESETS["overlock_xt"]
        assert {v[1] for v in plan.logit_variants} == {"fp32", "fp16", "bf16"}
        assert any(v[3] for v in plan.logit_variants)                       # TF32 on, judged
        assert plan.train_config == gpu_check.overlock.PRESETS["overlock_t"]
        assert plan.train_batch == 64 and plan.train_config.resolution == (224, 224) and plan.op_batch == 64
        assert {a for a, _ in plan.train_variants} >= {"bf16", "fp16"} and plan.rounds >= 2
        assert set(plan.evaluator_amps) == {"bf16", "fp16"}
        assert plan.round_spread == gpu_check.ROUND_SPREAD and plan.op_min_fraction == gpu_check.OP_MIN_FRACTION
    assert set(full.layouts) == {(d, c) for d in ("fp32", "fp16", "bf16") for c in (False, True)}
    assert gpu_check.BUDGET_S <= 450


def test_no_doc_claims_the_dry_run_covers_the_same_code_paths():
    for path in (SCRIPT, REPO / "docs" / "how-to" / "gpu.md", REPO / "DEVELOPERS.md"):
        text = " ".join(path.read_text().split())
        assert "same code paths" not in text, path
        assert "2-3 min" not in text or "guess" in text, path
