"""`overlock-nas export` publishes whole exports only (issue 27): nothing appears unless every
requested file was written and checked, `--overwrite` keeps the earlier export until the new one
is complete, an identical re-export is not an error, and model.onnx is optional unless asked for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nas.cli import main
from test_export import write_study


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run")
    write_study(path)
    return path


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error")]


def _export(run_dir, *args):
    return CliRunner().invoke(main, ["export", str(run_dir), *map(str, args)])


def _pt2_fails(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: data-dependent branch")

    monkeypatch.setattr(torch.export, "export", refuse)


def _no_onnx(monkeypatch):
    """onnx (and what imports it) unimportable, as on the README's install."""
    for name in [n for n in sys.modules if n == "onnx" or n.startswith(("onnx.", "onnxscript"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)


# ------------------------------------------------------------------------------ atomic
def test_a_program_that_cannot_be_written_publishes_nothing(run_dir, tmp_path, monkeypatch):
    """Before: the directory was published without model.pt2, then the command exited 1."""
    _pt2_fails(monkeypatch)
    out = tmp_path / "e"
    result = _export(run_dir, "--trial", 1, "--no-onnx", "-o", out)
    assert result.exit_code == 1, result.output
    errors = _errors(result)
    assert len(errors) == 1 and "model.pt2 could not be written" in errors[0] and "--no-pt2" in errors[0]
    assert "nothing was written" in errors[0], errors[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []          # no temporary directory left behind


def test_overwrite_keeps_the_earlier_export_until_the_new_one_is_complete(run_dir, tmp_path, monkeypatch):
    """Before: `--overwrite` replaced the earlier, good export with one lacking model.pt2, then failed."""
    out = tmp_path / "m"
    assert _export(run_dir, "--trial", 1, "--no-onnx", "--no-pt2", "-o", out).exit_code == 0
    before = _tree(out)
    _pt2_fails(monkeypatch)
    result = _export(run_dir, "--trial", 1, "--no-onnx", "--seed", 4, "--overwrite", "-o", out)
    assert result.exit_code == 1, result.output
    assert len(_errors(result)) == 1 and "model.pt2 could not be written" in result.output
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_top_k_publishes_no_trial_when_one_fails(run_dir, tmp_path, monkeypatch):
    """`--top 2`: the second trial's program fails, so neither directory is published."""
    calls = []
    real = torch.export.export

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("Unsupported: data-dependent branch")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", second_fails)
    out = tmp_path / "top"
    result = _export(run_dir, "--top", 2, "--no-onnx", "-o", out)
    assert result.exit_code == 1, result.output
    assert len(_errors(result)) == 1
    assert not out.exists() or list(out.iterdir()) == []


def test_a_file_changed_before_publishing_is_refused(run_dir, tmp_path, monkeypatch):
    """The staged directory is verified against the sha256s its config.json records."""
    from overlock import hub

    real = hub.write_config

    def write_then_damage(root, meta):
        real(root, meta)
        if "checks" in meta:   # the last write of config.json, after every check passed
            path = Path(root) / hub.DEPLOY_WEIGHTS_FILE
            path.write_bytes(path.read_bytes()[:-8])

    monkeypatch.setattr(hub, "write_config", write_then_damage)
    out = tmp_path / "v"
    result = _export(run_dir, "--trial", 1, "--no-onnx", "--no-pt2", "-o", out)
    assert result.exit_code == 1, result.output
    assert len(_errors(result)) == 1 and "model_reparam.safetensors" in _errors(result)[0], result.output
    assert not out.exists()


# --------------------------------------------------------------------- identical re-export
def test_an_identical_re_export_is_not_an_error(run_dir, tmp_path):
    """Before: `export --best` then `export --top 3` exited 1 ("already exists") on the trial
    both write. Now the same content is kept; other content still needs --overwrite."""
    first = _export(run_dir, "--trial", 1, "--no-onnx", "--no-pt2", "-o", tmp_path / "x")
    assert first.exit_code == 0, first.output
    before = _tree(tmp_path / "x")
    again = _export(run_dir, "--trial", 1, "--no-onnx", "--no-pt2", "-o", tmp_path / "x")
    assert again.exit_code == 0, again.output
    assert "identical" in again.output
    assert _tree(tmp_path / "x") == before
    other = _export(run_dir, "--trial", 1, "--no-onnx", "--no-pt2", "--seed", 5, "-o", tmp_path / "x")
    assert other.exit_code == 1 and "--overwrite" in _errors(other)[0], other.output
    assert _tree(tmp_path / "x") == before
    trial_6 = _export(run_dir, "--trial", 6, "--no-onnx", "--no-pt2", "-o", tmp_path / "x")
    assert trial_6.exit_code == 1 and "--overwrite" in _errors(trial_6)[0], trial_6.output
    assert _tree(tmp_path / "x") == before


def test_best_then_top_both_exit_0(run_dir):
    """The README's order: the default directories of `--best` and `--top 3` share a trial."""
    best = _export(run_dir, "--best", "--no-onnx", "--no-pt2")
    assert best.exit_code == 0, best.output
    top = _export(run_dir, "--top", 3, "--no-onnx", "--no-pt2")
    assert top.exit_code == 0, top.output
    assert len(list((run_dir / "exports").iterdir())) == 3


# ------------------------------------------------------------------------- optional onnx
def test_without_onnx_the_export_skips_model_onnx_in_one_line(run_dir, tmp_path, monkeypatch):
    _no_onnx(monkeypatch)
    out = tmp_path / "o"
    result = _export(run_dir, "--trial", 1, "--no-pt2", "-o", out)
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if "model.onnx" in line and "skip" in line]
    assert len(skipped) == 1, result.output
    assert not (out / "model.onnx").exists() and (out / "config.json").is_file()


def test_an_explicit_onnx_requires_it(run_dir, tmp_path, monkeypatch):
    _no_onnx(monkeypatch)
    out = tmp_path / "o"
    result = _export(run_dir, "--trial", 1, "--no-pt2", "--onnx", "-o", out)
    assert result.exit_code == 1, result.output
    errors = _errors(result)
    assert len(errors) == 1 and "--onnx" in errors[0] and "onnx" in errors[0], result.output
    assert not out.exists()


def test_weights_made_at_export_time_get_their_own_default_directory(run_dir):
    """`--from-supernet` / `--train` weights are another model than the trial's own: by default
    they go to trial-N-<hash8>-supernet / -trained, never onto the trial's own export (the
    README's `--trial 3 --from-supernet` after `--top 3`)."""
    from types import SimpleNamespace

    from nas.export import TrainSpec, default_out_dir, weights_tag

    trial = SimpleNamespace(number=3)
    names = [default_out_dir(run_dir, trial, "abcdef0123", weights_tag(train, start)).name
             for train, start in ((None, None), (None, "sn"), (TrainSpec(), None), (TrainSpec(), True))]
    assert names == ["trial-3-abcdef01", "trial-3-abcdef01-supernet", "trial-3-abcdef01-trained",
                     "trial-3-abcdef01-supernet-trained"]
