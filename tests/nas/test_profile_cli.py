"""`overlock-nas profile`: labelled numbers, JSON output, analytic == fvcore, one-line errors."""

import json
import re

import pytest
import yaml
from click.testing import CliRunner

from nas.cli import main

FAST = ["--repeats", "3", "--warmup", "1", "--threads", "1"]


@pytest.fixture
def config_file(tmp_path, tiny_config):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config.replace(resolution=(32, 32)).to_yaml())
    return str(path)


def _run(*args):
    return CliRunner().invoke(main, ["profile", *args], catch_exceptions=False)


def test_profile_prints_labelled_figures(config_file):
    result = _run("--config", config_file, "--batch", "2", *FAST)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "GMACs (fvcore; the paper's FLOPs), input 2x3x32x32 (batch 2)" in out
    assert "compute, analytic" in out and "compute, fvcore trace" in out
    assert "paper convention" in out and re.search(r"analytic == fvcore +yes", out)
    assert "params" in out and "MiB peak" in out
    assert re.search(r"latency +[\d.]+ ms \+-[\d.]+ % \(95 %, from its rounds\)", out), out
    assert re.search(r"latency as timed +[\d.]+ ms \(the machine ran at [\d.]+x", out), out
    assert "latency device" in out and "cpu: " in out and "v2: median of round minima" in out


def test_profile_json_parses_and_counts_agree(config_file, tiny_config):
    import space

    result = _run("--config", config_file, "--resolution", "32x64", "--json", "--stages", *FAST)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)       # progress goes to stderr
    cost = space.complexity(tiny_config, resolution=(32, 64))
    assert doc["input"] == {"batch": 1, "channels": 3, "resolution": [32, 64]}
    assert doc["flops"] == {"analytic": cost.flops, "fvcore": cost.flops}
    assert doc["flops_paper"]["analytic"] == doc["flops_paper"]["fvcore"] == cost.flops_paper
    assert doc["params"] == cost.params_inference and doc["analytic_matches_fvcore"] is True
    assert doc["compute_label"].startswith("GMACs (fvcore; the paper's FLOPs)")
    assert doc["latency"]["latency_resolution"] == [32, 64] and doc["latency"]["latency_ms"] > 0
    assert "focus3" in doc["latency"]["latency_stages_ms"]


def test_profile_says_how_long_measuring_takes_on_stderr(config_file):
    """`profile` says what the measurement involves and, after every round, about how long is
    left - on stderr: --json stays clean."""
    result = CliRunner().invoke(main, ["profile", "--config", config_file, "--json", "--no-fvcore", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["latency"]["latency_ms"] > 0
    lines = result.stderr.splitlines()
    assert lines[0] == "latency: measuring 1 config: 1 warm-up and 3 timed forwards each, in 3 rounds"
    rounds = [line for line in lines if line.startswith("latency: round ")]
    assert [line.split(";")[0] for line in rounds[:3]] == [f"latency: round {r}/3" for r in (1, 2, 3)]
    assert "latency: warm-up done;" in lines[1] and lines[1].endswith(" left")
    assert rounds[2].endswith("about 0 s left")


def test_profile_accepts_a_trial_record_and_skips_work_on_request(tmp_path, tiny_config):
    path = tmp_path / "trial.json"
    path.write_text(json.dumps({"config": tiny_config.to_dict(), "number": 3}))
    result = _run("--config", str(path), "--no-latency", "--no-fvcore", "--json")
    doc = json.loads(result.output)
    assert doc["latency"] is None and doc["flops"]["fvcore"] is None and doc["flops"]["analytic"] > 0


def test_profile_preset_analytic_only():
    result = _run("--preset", "overlock_xt", "--no-latency", "--no-fvcore", "--json")
    doc = json.loads(result.output)
    assert doc["config"]["widths"] == [56, 112, 256, 336]
    assert 2.5e9 < doc["flops_paper"]["analytic"] < 2.7e9   # the paper's 2.6 GFLOPs


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --preset NAME or --config FILE"),
    (["--preset", "overlock_t", "--config", "x.yaml"], "exactly one of"),
    (["--preset", "overlock_t", "--resolution", "16"], "each >= 32"),
    (["--preset", "overlock_t", "--resolution", "big"], "HEIGHTxWIDTH"),
])
def test_usage_errors(args, message, tmp_path):
    if "x.yaml" in args:
        (tmp_path / "x.yaml").write_text("{}")
        args = [str(tmp_path / "x.yaml") if a == "x.yaml" else a for a in args]
    result = CliRunner().invoke(main, ["profile", *args])
    assert result.exit_code == 2 and message in result.output


def test_bad_config_is_one_line_naming_the_field(tmp_path, tiny_config):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**tiny_config.to_dict(), "focus_heads": [3, 1]}))
    result = CliRunner().invoke(main, ["profile", "--config", str(path), "--no-latency"])
    assert result.exit_code == 1   # an error in a file: 1; usage mistakes: 2 (click's convention)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: focus_heads[0]=3") and "Traceback" not in result.output
    path.write_text("widths: [16, 32")
    result = CliRunner().invoke(main, ["profile", "--config", str(path)])
    assert result.exit_code == 1 and "not valid YAML" in result.output


@pytest.mark.parametrize("device, message", [
    ("foo", "'foo' is not a device: use cpu, cuda, cuda:N or auto"),
    ("cuda:99", "'cuda:99': this machine has"),
])
def test_unknown_device_is_one_line(device, message):
    """Before: a RuntimeError traceback from torch.device."""
    result = CliRunner().invoke(main, ["profile", "--preset", "overlock_xt", "--no-fvcore",
                                       "--device", device])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith("Error: Invalid value for --device: ")
    assert message in errors[0] and "Traceback" not in result.output


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, tmp_path):
    """One switch for tracebacks: `overlock-nas --debug` or OVERLOCK_NAS_DEBUG=1."""
    import nas.commands.profile as profile

    def boom(*args, **kwargs):
        raise RuntimeError("something deep\nfailed")

    monkeypatch.setattr(profile, "profile_config", boom)
    monkeypatch.delenv("OVERLOCK_NAS_DEBUG", raising=False)
    args = ["profile", "--preset", "overlock_xt", "--no-latency"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: RuntimeError: something deep failed (run with --debug or OVERLOCK_NAS_DEBUG=1 for the traceback)"]
    result = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    monkeypatch.setenv("OVERLOCK_NAS_DEBUG", "1")
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, RuntimeError)
