"""Model directories: round trip, deploy structure, overrides, and refusal of corrupt directories."""

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

import overlock
from overlock import ConfigError, OverLoCKConfig, hub

TINY = dict(base_depths=(1, 1, 1), overview_depth=1, focus_depths=(1, 1), widths=(16, 32, 64, 64),
            focus_heads=(1, 1), head_width=32, reparam_kernels=(5, 5, 7, 7), dynamic_kernels=(5, 3),
            small_kernel=3, region_count=2, resolution=(32, 32), num_classes=10)


def _trained_like(config: OverLoCKConfig, seed: int = 0) -> overlock.OverLoCK:
    """A model whose BN statistics and layer scales are not at their init values."""
    torch.manual_seed(seed)
    model = overlock.OverLoCK(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.train()
        model(torch.randn(4, config.in_chans, *config.resolution))  # moves running stats
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = OverLoCKConfig(**TINY)
    model = _trained_like(config)
    path = tmp_path_factory.mktemp("hub") / "model"
    hub.save_model_dir(model, path, {"note": "test"})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    return path, model, x, logits


@pytest.fixture
def copy_of(saved, tmp_path):
    def make():
        dst = tmp_path / "copy"
        shutil.copytree(saved[0], dst)
        return dst
    return make


def _edit_config(path, change):
    data = json.loads((path / "config.json").read_text())
    change(data)
    (path / "config.json").write_text(json.dumps(data))


def _refused(path, *words, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        overlock.create_model(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def test_round_trip_gives_identical_logits(saved):
    path, model, x, logits = saved
    loaded = overlock.create_model(path).eval()
    assert not loaded.deployed
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)
    meta = json.loads((path / "config.json").read_text())
    assert meta["config_hash"] == model.config.config_hash() and meta["note"] == "test"


def test_deploy_structure_matches_eager(saved):
    path, _, x, logits = saved
    deployed = overlock.create_model(path, deploy=True).eval()
    assert deployed.deployed
    with torch.no_grad():
        assert (deployed(x) - logits).abs().max() <= 1e-4


def test_only_deploy_weights_load_deployed_by_default(copy_of, saved):
    path = copy_of()
    (path / hub.WEIGHTS_FILE).unlink()
    model = overlock.create_model(path).eval()
    assert model.deployed
    with torch.no_grad():
        assert (model(saved[2]) - saved[3]).abs().max() <= 1e-4


def test_loading_never_unpickles(saved, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("loading unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    with torch.no_grad():
        assert torch.equal(overlock.create_model(saved[0]).eval()(saved[2]), saved[3])


def test_new_classifier_keeps_the_backbone(saved):
    path, model, _, _ = saved
    tuned = overlock.create_model(path, num_classes=5, drop_path_rate=0.1)
    assert tuned.config.num_classes == 5
    assert tuned.head[-1].weight.shape[0] == 5
    own = model.state_dict()
    for key, value in tuned.state_dict().items():
        if not key.startswith(("head.4.", "aux_head.2.")):
            assert torch.equal(value, own[key]), key


def test_architecture_overrides_are_refused(saved):
    _refused(saved[0], "cannot override 'widths'", widths=(32, 32, 64, 64))


def test_unknown_config_field_is_refused(copy_of):
    path = copy_of()
    _edit_config(path, lambda d: d["config"].update(region_cnt=3))
    _refused(path, "config.json", "region_cnt")


def test_invalid_config_value_is_refused(copy_of):
    path = copy_of()
    _edit_config(path, lambda d: d["config"].update(region_count=0))
    _refused(path, "config.json", "region_count=0")


def test_edited_config_fails_its_hash(copy_of):
    path = copy_of()
    _edit_config(path, lambda d: d["config"].update(widths=[16, 32, 64, 128]))
    _refused(path, "config.json", "config_hash", "does not match")


def test_edited_config_with_recomputed_hash_fails_on_the_weights(copy_of):
    path = copy_of()

    def change(d):
        d["config"]["widths"] = [16, 32, 64, 128]
        d["config"]["context_dim"] = 32
        d["config_hash"] = OverLoCKConfig.from_dict(d["config"]).config_hash()
        d.pop("files")
    _edit_config(path, change)
    _refused(path, "model.safetensors", "another variant")


def test_untagged_weights_of_another_shape_are_refused(copy_of):
    path = copy_of()
    other = overlock.OverLoCK(OverLoCKConfig(**{**TINY, "head_width": 48}))
    save_file(hub.weights_state(other), str(path / hub.WEIGHTS_FILE))  # no tags, no record
    _edit_config(path, lambda d: d.pop("files"))
    _refused(path, "model.safetensors", "shape mismatch", "head.0.weight")


def test_truncated_weights_are_refused(copy_of):
    path = copy_of()
    data = (path / hub.WEIGHTS_FILE).read_bytes()
    (path / hub.WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    _refused(path, "model.safetensors", "truncated")


def test_truncated_weights_without_a_record_are_refused(copy_of):
    path = copy_of()
    _edit_config(path, lambda d: d.pop("files"))
    data = (path / hub.WEIGHTS_FILE).read_bytes()
    (path / hub.WEIGHTS_FILE).write_bytes(data[: len(data) - 100])
    _refused(path, "model.safetensors", "not a readable safetensors file")


def test_corrupted_weights_fail_the_checksum(copy_of):
    path = copy_of()
    data = bytearray((path / hub.WEIGHTS_FILE).read_bytes())
    data[-7] ^= 0xFF
    (path / hub.WEIGHTS_FILE).write_bytes(bytes(data))
    _refused(path, "model.safetensors", "sha256")


@pytest.mark.parametrize("damage, words", [
    (lambda p: (p / "config.json").unlink(), ("config.json", "missing")),
    (lambda p: (p / "config.json").write_text("{not json"), ("config.json", "not valid JSON")),
    (lambda p: _edit_config(p, lambda d: d.update(format="other")), ("format='other'",)),
    (lambda p: [(p / n).unlink() for n in (hub.WEIGHTS_FILE, hub.DEPLOY_WEIGHTS_FILE)], ("no weights",)),
])
def test_other_damage_is_one_line(copy_of, damage, words):
    path = copy_of()
    damage(path)
    _refused(path, *words)
