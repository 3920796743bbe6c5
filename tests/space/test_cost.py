"""The analytic cost model equals sum(p.numel()) and fvcore's count exactly."""

import os
import random

import pytest
import torch

import overlock
import space
from overlock.flops import count_macs

SPACES = ["studies/spaces/xt_t.yaml", "studies/spaces/wide.yaml"]
RESOLUTIONS = [(224, 224), (160, 256), (64, 64)]


def _shrink(config, rng):
    """Same structure, narrower channels: keeps fvcore tracing affordable on 2 cores while
    exercising every code path (depth splits, kernels, region counts, heads) of the space."""
    g3 = 2 * config.focus_heads[0] * rng.choice([2, 4])
    g4 = 2 * config.focus_heads[1] * rng.choice([2, 4])
    w0 = rng.choice([8, 12, 16])
    return config.replace(widths=(w0, 2 * w0, g3, g4), head_width=rng.choice([32, 64]),
                          num_classes=rng.choice([0, 10]), mlp_ratios=(2, 2, 2, 2))


@pytest.mark.parametrize("preset", ["overlock_xt", pytest.param("overlock_t", marks=pytest.mark.slow)])
@pytest.mark.parametrize("deploy", [False, True])
def test_presets_equal_fvcore_and_numel(preset, deploy):
    cfg = overlock.PRESETS[preset]
    model = overlock.create_model(cfg, deploy=deploy)
    for res in [(224, 224), (64, 64)] if deploy else [(160, 256)]:
        cost = space.complexity(cfg, res, deploy=deploy)
        measured = count_macs(model, res)
        assert cost.flops == measured.total
        assert cost.flops_paper == measured.paper
    assert cost.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", ["overlock_s", "overlock_b"])
@pytest.mark.parametrize("deploy", [False, True])
def test_big_presets_params_equal_numel(preset, deploy):
    with torch.device("meta"):
        model = overlock.create_model(preset, deploy=deploy)
    cost = space.complexity(overlock.PRESETS[preset], deploy=deploy)
    assert cost.params == sum(p.numel() for p in model.parameters())


# Building a model, even on the meta device, costs ~0.3 s of CPU: the default run checks the first
# 40 of 120 seeded configs per space, the slow set the other 80.
NUMEL_SAMPLES, NUMEL_QUICK = 120, 40


def _numel_configs(path, start, stop):
    s = space.load_space(path)
    rng = random.Random(1)
    configs = [s.sample(rng) for _ in range(NUMEL_SAMPLES)]
    return list(enumerate(configs))[start:stop]


@pytest.mark.parametrize("path", SPACES)
def test_random_configs_equal_numel_exactly(path):
    _check_numel(_numel_configs(path, 0, NUMEL_QUICK))


@pytest.mark.slow
@pytest.mark.parametrize("path", SPACES)
def test_more_random_configs_equal_numel_exactly(path):
    _check_numel(_numel_configs(path, NUMEL_QUICK, NUMEL_SAMPLES))


def _check_numel(numbered_configs):
    for i, cfg in numbered_configs:
        deploy = bool(i % 2)
        with torch.device("meta"):
            model = overlock.create_model(cfg, deploy=deploy)
        cost = space.complexity(cfg, deploy=deploy)
        assert cost.params == sum(p.numel() for p in model.parameters()), cfg.summary()
        no_aux = space.complexity(cfg, deploy=True).params - (
            cfg.widths[3] * 2 + cfg.widths[3] * cfg.num_classes + cfg.num_classes)
        assert cost.params_inference == no_aux


# fvcore traces each model (~3 s of CPU for a config of wide.yaml, whatever the resolution), so the
# suite checks 12 per space (each resolution 4 times, 3 deploy builds);
# benchmarks/verify_cost_model.py runs 200 configs x 3 resolutions per space.
FVCORE_SAMPLES = int(os.environ.get("OVERLOCK_FVCORE_SAMPLES", "12"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SPACES)
def test_random_configs_equal_fvcore_exactly(path):
    """Random configs of each space, at a square, a non-square and a small resolution."""
    s = space.load_space(path)
    rng = random.Random(2)
    torch.manual_seed(0)
    for i in range(FVCORE_SAMPLES):
        cfg = _shrink(s.sample(rng), rng)
        res = RESOLUTIONS[i % 3]
        deploy = i % 4 == 3
        model = overlock.create_model(cfg, deploy=deploy)
        measured = count_macs(model, res)
        cost = space.complexity(cfg, res, deploy=deploy)
        assert (cost.flops, cost.flops_paper) == (measured.total, measured.paper), (cfg.summary(), res)
        assert cost.params == sum(p.numel() for p in model.parameters())


def test_batch_scales_linearly_and_memory_grows():
    cfg = overlock.PRESETS["overlock_xt"]
    one, eight = space.complexity(cfg, batch=1), space.complexity(cfg, batch=8)
    assert eight.flops == 8 * one.flops
    assert eight.memory_mb == pytest.approx(8 * one.memory_mb)
    assert space.complexity(cfg, (320, 320)).memory_mb > one.memory_mb


def test_memory_estimate_is_in_the_measured_range():
    """The analytic activation peak is within a factor of the allocator's measured peak."""
    from torch.profiler import ProfilerActivity, profile

    cfg = overlock.PRESETS["overlock_xt"].replace(num_classes=10)
    model = overlock.create_model(cfg, deploy=True).eval()
    x = torch.randn(1, 3, 160, 160)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    live, peak = 0, 0
    for evt in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += evt.cpu_memory_usage if evt.cpu_memory_usage and not evt.cpu_children else 0
        peak = max(peak, live)
    estimate = space.complexity(cfg, (160, 160), deploy=True).memory_mb * 2 ** 20
    assert peak > 0, "the profiler recorded no allocation: nothing to compare the estimate with"
    assert 0.25 * peak <= estimate <= 4 * peak, (estimate, peak)
