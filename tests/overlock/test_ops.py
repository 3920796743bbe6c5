import pytest
import torch

import overlock.ops as ops
from overlock.ops import na2d_av, na2d_av_decomposed, na2d_av_reference


@pytest.fixture(params=["dense", "row-loop"])
def path(request, monkeypatch):
    """Run a test through each implementation path of the op."""
    monkeypatch.setattr(ops, "_use_dense", lambda H, W, k: request.param == "dense")
    return request.param


@pytest.mark.parametrize("H,W,k", [(7, 9, 5), (8, 8, 3), (14, 14, 13), (6, 10, 6), (5, 5, 5),
                                   (9, 4, 3), (13, 13, 7)])
def test_matches_literal_reference_values_and_grads(H, W, k, path):
    torch.manual_seed(H * 100 + W * 10 + k)
    attn = torch.randn(2, 3, H, W, k * k, dtype=torch.double, requires_grad=True)
    value = torch.randn(2, 3, H, W, 4, dtype=torch.double, requires_grad=True)
    out = na2d_av(attn, value, k)
    ref = na2d_av_reference(attn, value, k)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (attn, value), g)
    want = torch.autograd.grad(ref, (attn, value), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(na2d_av_decomposed(attn, value, k), ref)


def test_border_window_is_shifted_not_padded(path):
    # a one-hot weight on window position 0 reads the window's first element: for the corner
    # query that is (0, 0); for a centre query (i - k//2, j - k//2); at the far border H - k.
    H = W = 6
    k = 3
    value = torch.arange(H * W, dtype=torch.float).reshape(1, 1, H, W, 1)
    attn = torch.zeros(1, 1, H, W, k * k)
    attn[..., 0] = 1
    out = na2d_av(attn, value, k)[0, 0, :, :, 0]
    assert out[0, 0] == 0                       # not padded: no zero row/col before the map
    assert out[3, 3] == value[0, 0, 2, 2, 0]
    assert out[5, 5] == value[0, 0, H - k, W - k, 0]


def test_gradcheck(path):
    attn = torch.randn(1, 2, 6, 7, 9, dtype=torch.double, requires_grad=True)
    value = torch.randn(1, 2, 6, 7, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: na2d_av(a, v, 3), (attn, value))


def test_registered_custom_op_passes_opcheck(path):
    attn = torch.randn(1, 2, 6, 7, 9)
    value = torch.randn(1, 2, 6, 7, 3)
    torch.library.opcheck(torch.ops.overlock.na2d_av.default, (attn, value, 3))


def test_single_node_for_export_and_compile():
    class M(torch.nn.Module):
        def forward(self, a, v):
            return na2d_av(a, v, 3)

    a, v = torch.randn(1, 2, 6, 7, 9), torch.randn(1, 2, 6, 7, 3)
    ep = torch.export.export(M(), (a, v))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("overlock.na2d_av.default") == 1
    compiled = torch.compile(M(), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(a, v), M()(a, v))


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        na2d_av(torch.randn(1, 1, 4, 4, 25), torch.randn(1, 1, 4, 4, 2), 5)
    with pytest.raises(ValueError, match="does not match"):
        na2d_av(torch.randn(1, 1, 6, 6, 8), torch.randn(1, 1, 6, 6, 2), 3)


def test_fvcore_counts_kkc_per_position_per_head():
    from overlock.flops import flop_count_analysis

    class M(torch.nn.Module):
        def forward(self, a, v):
            return na2d_av(a, v, 5)

    a, v = torch.randn(2, 3, 8, 9, 25), torch.randn(2, 3, 8, 9, 4)
    assert flop_count_analysis(M(), (a, v)).total() == 2 * 3 * 8 * 9 * 25 * 4


def test_default_path_choice():
    assert ops._use_dense(14, 14, 13) and ops._use_dense(7, 7, 7)
    assert not ops._use_dense(56, 56, 5)
