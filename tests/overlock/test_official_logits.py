"""Logits equal the authors' own OverLoCK code, weight for weight.

`data/official_tiny.safetensors` was made with the official `models/overlock.py` (LMMMEng/OverLoCK,
commit 2c8ab3b; see data/README.md): a small non-preset network with every tensor randomised, two
inputs (one non-square) and the official model's eval logits, before and after its `reparam()`.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from overlock import OverLoCKConfig, create_model

DATA = Path(__file__).parent / "data"
# The fixture's own float32 rounding is about 1e-5 of the largest logit (a float64 run of this
# model differs from it by that much), so this is as tight as the reference allows.
REL_TOL = 2e-5


def config_from_official(args: dict) -> OverLoCKConfig:
    """The official constructor's arguments as a config (the mapping of data/README.md)."""
    depth, kernels = args["depth"], args["kernel_size"]
    return OverLoCKConfig(
        base_depths=depth[:3], overview_depth=depth[3], focus_depths=args["sub_depth"],
        widths=args["embed_dim"], reparam_kernels=kernels, dynamic_kernels=kernels[2:4],
        mlp_ratios=args["mlp_ratio"], focus_mlp_ratios=args["sub_mlp_ratio"],
        focus_heads=args["sub_num_heads"], head_width=args["projection"],
        num_classes=args["num_classes"], resolution=(64, 64))


@pytest.fixture(scope="module")
def official():
    meta = json.loads((DATA / "official_tiny.json").read_text())
    tensors = load_file(DATA / "official_tiny.safetensors")
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return config_from_official(meta["args"]), state, tensors, meta


def _assert_logits(out, ref):
    assert out.shape == ref.shape
    tol = REL_TOL * ref.abs().max().item()
    assert (out - ref).abs().max().item() <= tol, f"max |diff| {(out - ref).abs().max():.3g} > {tol:.3g}"


def test_official_weights_load_strictly_with_the_same_parameter_count(official):
    config, state, _, meta = official
    model = create_model(config)
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == meta["params"]


@pytest.mark.parametrize("name", ["a", "b"])   # b is non-square (56x88)
def test_eval_logits_equal_official(official, name):
    config, state, tensors, _ = official
    model = create_model(config).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        _assert_logits(model(tensors[f"input.{name}"]), tensors[f"logits.{name}"])


def test_reparam_logits_equal_official_reparam(official):
    config, state, tensors, _ = official
    model = create_model(config).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        merged = model.reparam()
        _assert_logits(merged(tensors["input.a"]), tensors["logits_reparam.a"])
        deploy = create_model(config, deploy=True).eval()
        deploy.load_state_dict(merged.state_dict(), strict=True)
        _assert_logits(deploy(tensors["input.a"]), tensors["logits_reparam.a"])
