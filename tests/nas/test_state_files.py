"""Run-directory state files are read as data: `torch.load(..., weights_only=True)` everywhere."""

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from nas.evaluators import TrialError, get_evaluator

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"epochs": 2, "batch_size": 16, "resolution": 32, "warmup_epochs": 0.5, "threads": 1,
            "dataset": {"kind": "procedural", "train_size": 32, "val_size": 16}}


class _RunsCode:
    """Unpickling this calls `Path(marker).touch()`: what a crafted state file could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_state_file_is_read_as_data_and_a_crafted_one_runs_nothing(tiny_config, tmp_path):
    ev = get_evaluator("train", SETTINGS)
    first = ev.evaluate(tiny_config, budget_epochs=1, device="cpu", seed=0, workdir=str(tmp_path / "a"),
                        resume_from=None, weights_name="t")
    # what the evaluator writes loads as plain data (and training resumes from it)
    assert isinstance(torch.load(first["state"], weights_only=True), dict)
    resumed = ev.evaluate(tiny_config, budget_epochs=2, device="cpu", seed=0, workdir=str(tmp_path / "b"),
                          resume_from=first["weights"], weights_name="t")
    assert resumed["epochs"] == 2

    marker = tmp_path / "code-ran"
    with open(first["state"], "wb") as fh:
        pickle.dump({"optimizer": _RunsCode(str(marker))}, fh)
    with pytest.raises(TrialError, match=r"^resume: cannot read .*t\.safetensors"):
        ev.evaluate(tiny_config, budget_epochs=2, device="cpu", seed=0, workdir=str(tmp_path / "c"),
                    resume_from=first["weights"], weights_name="t")
    assert not marker.exists()


def test_no_torch_load_without_weights_only_in_the_product():
    calls = []
    for folder in ("nas", "overlock", "space", "reports", "benchmarks", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
                calls.append((os.path.relpath(path, REPO), m.group(1)))
    assert calls, "expected the train evaluator's state file load"
    assert [c for c in calls if "weights_only=True" not in c[1]] == []
