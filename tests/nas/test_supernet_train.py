"""`overlock-nas supernet train` (issue 19): a tiny space and data set, one or two epochs."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from nas.cli import main

TINY_SPACE = """
name: tiny-supernet
base:
  base_depths: [1, 1, 1]
  overview_depth: 1
  focus_depths: [1, 1]
  widths: [8, 16, 32, 32]
  focus_heads: [1, 1]
  head_width: 16
  reparam_kernels: [5, 5, 5, 5]
  dynamic_kernels: [5, 5]
  small_kernel: 3
  region_count: 2
fixed:
  resolution: 32
  num_classes: 10
dimensions:
  width: {choices: [8, 12]}
  focus_depths[0]: {choices: [1, 2]}
  region_count: {choices: [2, 3]}
derived:
  widths: "[width, 2 * width, 4 * width, 4 * width]"
"""

DATA = "{kind: procedural, train_size: 32, val_size: 16}"
SETTINGS = "{batch_size: 16, eval_batch_size: 16, bn_recalibration_batches: 1}"


def tiny_space(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def run(args):
    result = CliRunner().invoke(main, ["supernet", "train", *map(str, args)])
    return result


def common(space, out, epochs=1, seed=0):
    return [space, "--dataset", DATA, "--epochs", epochs, "--out", out, "--train-settings", SETTINGS,
            "--threads", 1, "--seed", seed]


def test_train_writes_weights_and_card(tmp_path):
    space, out = tiny_space(tmp_path), tmp_path / "sn"
    result = run(common(space, out))
    assert result.exit_code == 0, result.output
    assert (out / "supernet.safetensors").is_file() and (out / "card.md").is_file()
    card = json.loads((out / "card.json").read_text())
    assert card["epochs_done"] == card["epochs"] == 1 and card["seed"] == 0
    assert card["space"]["file"] == str(space) and card["space"]["definition"]["name"] == "tiny-supernet"
    assert card["dataset"]["train_size"] == 32 and card["dataset"]["val_size"] == 16
    assert card["resolution"] == [32, 32] and card["num_classes"] == 10
    assert card["rule"] == "sandwich" and card["history"][0]["subnets_per_step"] == 4
    assert card["wall_s"] > 0 and len(card["sessions"][0]["load_start"]) == 3
    assert 0.0 <= card["history"][0]["max_accuracy"] <= 1.0
    assert "sandwich rule" in (out / "card.md").read_text()
    from overlock.supernet import Supernet

    Supernet.load(out / "supernet.safetensors")   # the weights file is a loadable supernet


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """An interrupted 2-epoch run continued by the same command equals an uninterrupted one."""
    from safetensors.torch import load_file

    from nas.supernet.train import train_supernet

    space = tiny_space(tmp_path)
    data = {"kind": "procedural", "train_size": 32, "val_size": 16}
    settings = {"batch_size": 16, "eval_batch_size": 16, "bn_recalibration_batches": 1}

    def stop_after_first(entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, data, tmp_path / "a", epochs=2, train_settings=settings, threads=1,
                       on_epoch=stop_after_first)
    assert json.loads((tmp_path / "a" / "card.json").read_text())["epochs_done"] == 1
    result = run(common(space, tmp_path / "a", epochs=2))
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert card["epochs_done"] == 2 and [s["from_epoch"] for s in card["sessions"]] == [0, 1]
    train_supernet(space, data, tmp_path / "b", epochs=2, train_settings=settings, threads=1)
    resumed = load_file(tmp_path / "a" / "supernet.safetensors")
    straight = load_file(tmp_path / "b" / "supernet.safetensors")
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k


def test_resume_with_other_settings_is_one_line(tmp_path):
    space, out = tiny_space(tmp_path), tmp_path / "sn"
    assert run(common(space, out)).exit_code == 0
    result = run(common(space, out, seed=1))
    assert result.exit_code == 1
    assert "other settings (seed)" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "[1, 2]"], "--dataset"),
    (["--train-settings", "{rungs: [1]}"], "unknown key 'rungs'"),
    (["--rule", "max-first", "--max-first-epochs", "3"], "max_first_epochs=3"),
])
def test_bad_options_are_one_line(tmp_path, args, needle):
    space = tiny_space(tmp_path)
    base = ["--dataset", DATA, "--epochs", 1, "--out", tmp_path / "sn"]
    for i in range(0, len(args), 2):
        if args[i] in base:
            base[base.index(args[i]) + 1] = args[i + 1]
        else:
            base += args[i:i + 2]
    result = run([space, *base])
    assert result.exit_code in (1, 2) and needle in result.output, result.output
    assert not (tmp_path / "sn" / "supernet.safetensors").exists()
