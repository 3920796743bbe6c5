"""`overlock.create_model` never guesses between a preset name and a path (as timm's `hf-hub:` /
`local-dir:` prefixes): a bare word is a preset; a directory is a Path, `file:DIR`, or a string
holding a path separator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import overlock
from overlock import ConfigError, OverLoCKConfig, hub

TINY = OverLoCKConfig(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1), widths=(16, 32, 64, 64),
                      focus_heads=(1, 1), head_width=32, reparam_kernels=(5, 5, 7, 7), dynamic_kernels=(5, 3),
                      small_kernel=3, region_count=2, resolution=(32, 32), num_classes=10)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _saved(path: Path) -> overlock.OverLoCK:
    torch.manual_seed(0)
    model = overlock.OverLoCK(TINY)
    hub.save_model_dir(model, path, {})
    return model


def test_a_folder_named_like_a_preset_does_not_shadow_it(in_tmp):
    """Before: `create_model("overlock_xt")` loaded ./overlock_xt when that folder existed
    (and failed: no config.json there), instead of building the preset."""
    (in_tmp / "overlock_xt").mkdir()
    (in_tmp / "overlock_xt_reparam").mkdir()
    model = overlock.create_model("overlock_xt")
    assert model.config == overlock.PRESETS["overlock_xt"] and not model.deployed
    assert overlock.create_model("overlock_xt_reparam").deployed


def test_even_an_exported_folder_named_like_a_preset_needs_a_path(in_tmp):
    _saved(in_tmp / "overlock_t")
    assert overlock.create_model("overlock_t").config == overlock.PRESETS["overlock_t"]
    for spec in (Path("overlock_t"), "file:overlock_t", "./overlock_t", str(in_tmp / "overlock_t")):
        assert overlock.create_model(spec).config == TINY, spec


def test_a_bare_word_that_is_a_folder_says_how_to_load_it(in_tmp):
    _saved(in_tmp / "mymodel")
    with pytest.raises(ConfigError, match=r"unknown model 'mymodel'.*pathlib.Path\('mymodel'\) or 'file:mymodel'"):
        overlock.create_model("mymodel")
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(overlock.create_model(Path("mymodel")).eval()(x),
                           overlock.create_model("file:mymodel").eval()(x))


def test_a_missing_path_is_one_line(in_tmp):
    with pytest.raises(ConfigError, match=r"'file:nowhere': no model directory at nowhere"):
        overlock.create_model("file:nowhere")
