"""The model keeps working across modes: inference_mode, then training; export before eager."""

import torch

from overlock import create_model


def test_inference_mode_then_training(tiny_config):
    model = create_model(tiny_config)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        model.eval()(x)
    model.train()
    out = model(x)
    (out["main"].sum() + out["aux"].sum()).backward()


def test_export_before_any_eager_call_then_eager(tiny_config):
    model = create_model(tiny_config.replace(region_count=4, dynamic_kernels=(9, 5))).eval()
    x = torch.randn(1, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(ep.module()(x), eager)
        assert torch.isfinite(eager).all()
