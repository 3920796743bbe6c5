"""The supernet: every sub-network is exactly `create_model(config)` with the sliced weights."""

import random
from pathlib import Path

import pytest
import torch

from overlock import PRESETS, ConfigError, create_model
from overlock.supernet import Supernet, sample_config
from space.spec import load_space

SPACES = Path(__file__).resolve().parents[2] / "studies" / "spaces"


def _scramble(net: Supernet, seed: int = 0) -> None:
    """Weights and statistics far from their (near-constant) initial values, so a tensor read
    from the wrong place changes the logits visibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def _assert_extract_exact(net: Supernet, config, x: torch.Tensor) -> None:
    config = net.set_active(config)
    net.eval()
    with torch.no_grad():
        active = net(x)
        model = create_model(config)
        model.load_state_dict(net.sub_state_dict(config), strict=True)
        alone = model.eval()(x)
        extracted = net.extract(config).eval()(x)
    assert active.shape == (x.shape[0], net.num_classes)
    assert active.abs().max() > 0.05  # the check below has something to see
    torch.testing.assert_close(alone, active, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(extracted, active, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def quick():
    space = load_space(SPACES / "quickstart.yaml")
    net = Supernet(space)
    _scramble(net)
    return space, net


def test_quickstart_random_and_extreme_configs_extract_exactly(quick):
    space, net = quick
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rng = random.Random(3)
    configs = [sample_config(space, rng, "max"), sample_config(space, rng, "min")]
    configs += [sample_config(space, rng) for _ in range(4)]
    for config in configs:
        _assert_extract_exact(net, config, x)


def test_the_supernet_holds_the_maximum_of_every_dimension(quick):
    space, net = quick
    env = net.envelope
    assert env.widths == (32, 64, 128, 128) and env.base_depths == (1, 1, 2)
    assert env.focus_depths == (2, 1) and env.dynamic_kernels == (7, 5)
    assert net.value_sets["region_count"] == (4, 3, 2)
    # one weight_proj per region count, each taking R*R regions
    for r in (2, 3, 4):
        assert net.get_parameter(f"sub_blocks3.1.weight_proj_r{r}.weight").shape[1] == r * r
    biggest = net.max_config
    assert biggest.widths == (32, 64, 128, 128) and biggest.region_count == 4
    assert net.min_config.widths == (16, 32, 64, 64) and net.min_config.region_count == 2
    assert space.contains(biggest.replace(num_classes=10))


def test_shared_weights_are_the_documented_slices(quick):
    """First channels, first blocks, centre of kernels and bias tables, [x | context] indices."""
    _, net = quick
    config = net.min_config.replace(dynamic_kernels=(5, 5), focus_depths=(2, 1))
    sub = net.sub_state_dict(config)
    full = net.state_dict()
    width, ctx, wide = config.widths[2], config.context_dim, net.envelope.widths[2]
    torch.testing.assert_close(sub["blocks3.0.proj.4.weight"],
                               full["blocks3.0.proj.4.weight"][:4 * width, :width])
    both = torch.cat([full["sub_blocks3.1.dwconv1.weight"][:width],
                      full["sub_blocks3.1.dwconv1.weight"][wide:wide + ctx]])
    torch.testing.assert_close(sub["sub_blocks3.1.dwconv1.weight"], both)
    # dynamic kernel 7 -> 5: bias table 13x13 -> its centre 9x9, weight_proj rows the centre 5x5
    torch.testing.assert_close(sub["sub_blocks3.1.rpb2"], full["sub_blocks3.1.rpb2"][:, 2:11, 2:11])
    rows = full[f"sub_blocks3.1.weight_proj_r{config.region_count}.weight"]
    large = rows[9:].reshape(7, 7, -1, 1, 1)[1:6, 1:6].reshape(25, -1, 1, 1)
    torch.testing.assert_close(sub["sub_blocks3.1.weight_proj.weight"],
                               torch.cat([rows[:9], large]))


def test_config_outside_the_supernet_is_one_line_naming_the_field(quick):
    _, net = quick
    wide = net.max_config.replace(widths=(48, 96, 192, 192))
    with pytest.raises(ConfigError, match=r"^widths\[0\]=48 is larger") as err:
        net.set_active(wide)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"region_count=1 is not one"):
        net.extract(net.max_config.replace(region_count=1))
    assert isinstance(err.value, ValueError)


def test_training_forward_returns_aux_and_trains_the_shared_weights(quick):
    _, net = quick
    config = net.set_active(sample_config(net, random.Random(0), "min"))
    assert config.widths[2] < net.envelope.widths[2]  # ContMix's cat() channels are an index
    net.train()
    net.zero_grad()
    fusion_bn = net.get_buffer("sub_blocks3.0.fusion.1.running_mean")
    before = fusion_bn.clone()
    out = net(torch.randn(4, 3, 64, 64))
    assert set(out) == {"main", "aux"} and out["aux"].shape == (4, 10)
    (out["main"].sum() + out["aux"].sum()).backward()
    grad = net.get_parameter("sub_blocks3.0.fusion.3.weight").grad
    width, ctx = config.widths[2], config.context_dim
    assert grad[:width].abs().sum() > 0 and grad[width:].abs().sum() == 0  # only the slice trains
    # the running statistics of the gathered channels are written back, the others untouched
    wide = net.envelope.widths[2]
    used = list(range(width)) + [wide + i for i in range(ctx)]
    changed = (fusion_bn != before).nonzero().flatten().tolist()
    assert changed == used
    net.eval()


def test_kernel_transformation_matrices_are_used_and_trained():
    space = load_space(SPACES / "quickstart.yaml")
    net = Supernet(space, kernel_transform=True)
    _scramble(net, seed=1)
    matrix = net.get_parameter("sub_blocks3.0.ktm_large_7to5")
    assert matrix.shape == (25, 25)
    config = net.max_config.replace(dynamic_kernels=(5, 5))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    _assert_extract_exact(net, config, x)
    # the extracted weight_proj rows are the transformed centre of the 7x7 rows
    sub = net.sub_state_dict(config)["sub_blocks3.0.weight_proj.weight"]
    full = net.get_parameter(f"sub_blocks3.0.weight_proj_r{config.region_count}.weight")
    centre = full[9:].reshape(7, 7, -1)[1:6, 1:6].reshape(25, -1)
    torch.testing.assert_close(sub[9:, :, 0, 0], (matrix @ centre).detach())
    net.train()
    net.set_active(config)
    net(x)["main"].sum().backward()
    assert matrix.grad is not None and matrix.grad.abs().sum() > 0


def test_the_active_forward_updates_its_batch_norm_slices_as_the_extracted_model_does(quick):
    """In training mode the active sub-network's forward keeps its running statistics in the
    supernet's slices (the gathered ones written back), exactly as the extracted model keeps its
    own. (Re-estimation itself is the recipe's, nas.training.reestimate_bn, on extracted models.)"""
    _, net = quick
    config = net.set_active(sample_config(net, random.Random(3)))   # below the maximum: gathers
    net.reset_bn_stats()
    model = net.extract(config)
    assert all(p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    held = {t.data_ptr() for t in net.state_dict().values()}
    assert not any(t.data_ptr() in held for t in model.state_dict().values())  # copies
    batches = [torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(i))
               for i in range(3)]
    net.train()
    with torch.no_grad():
        for x in batches:
            net(x)
            model(x)
    updated = net.sub_state_dict(config)
    for name, value in model.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(updated[name], value, rtol=1e-4, atol=1e-5)
    net.eval()
    x = batches[0][:2]
    torch.testing.assert_close(net(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_save_and_load_round_trip(quick, tmp_path):
    _, net = quick
    path = tmp_path / "supernet.safetensors"
    net.save(path, metadata={"dataset": "digits"})
    back = Supernet.load(path)
    assert back.file_metadata["dataset"] == "digits" and back.num_classes == net.num_classes
    assert back.space.to_dict() == net.space.to_dict()
    mine, theirs = net.state_dict(), back.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    with pytest.raises(ValueError, match="'format' is the supernet's own"):
        net.save(tmp_path / "x.safetensors", metadata={"format": "mine"})


def test_a_config_list_and_a_class_count_override():
    xt = PRESETS["overlock_xt"]
    configs = [xt.replace(widths=(16, 32, 64, 96), focus_heads=(2, 2), head_width=64,
                          base_depths=(1, 1, 1), focus_depths=(1, 2)),
               xt.replace(widths=(8, 16, 32, 48), focus_heads=(1, 1), head_width=32,
                          base_depths=(1, 1, 2), focus_depths=(2, 1), region_count=3,
                          dynamic_kernels=(7, 5), reparam_kernels=(13, 11, 9, 5))]
    net = Supernet(configs, num_classes=7)
    _scramble(net, seed=2)
    assert net.space is None and net.max_config.widths == (16, 32, 64, 96)
    # the dilated branches of both large kernels are held (13 has k7_2, 17 has k9_2)
    for branch, k in (("dil_conv_k7_2", 7), ("dil_conv_k9_2", 9)):
        assert net.get_parameter(f"blocks1.0.proj.1.{branch}.weight").shape == (16, 1, k, k)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for config in configs:
        _assert_extract_exact(net, config, x)


@pytest.mark.slow  # ~20 s of CPU: a 40M-parameter supernet
def test_xt_t_space_presets_and_random_configs_extract_exactly():
    space = load_space(SPACES / "xt_t.yaml")
    net = Supernet(space, num_classes=10)
    _scramble(net, seed=3)
    assert net.envelope.widths == (64, 128, 256, 512) and net.envelope.focus_depths == (12, 3)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    rng = random.Random(11)
    for config in (PRESETS["overlock_xt"], PRESETS["overlock_t"], sample_config(space, rng),
                   sample_config(space, rng, "min")):
        assert space.contains(config)
        _assert_extract_exact(net, config, x)
