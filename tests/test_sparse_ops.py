"""The batched family's sparse matmul (sparse_ops behind models.stacked._SparseMatmul): gradients checked
numerically, on torch's private ATen ops and on the public fallback, which must agree."""
from __future__ import annotations

import pytest
import torch

from widen_cli import sparse_ops
from widen_cli.models.stacked import SparseLayer, _SparseMatmul


def _layer(seed: int) -> SparseLayer:
    """Two members' layers of 7 and 5 units over 6 inputs, float64, with an empty unit and an unread input."""
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)]
    masks = [torch.rand(w.shape, generator=g) < 0.4 for w in weights]
    masks[0][2] = False  # a unit that reads nothing
    masks[1][:, 4] = False
    masks[0][:, 4] = False  # an input nobody reads
    return SparseLayer(weights, masks, [None, None], [0, 0], n_in=6, ntk=False)


def _dense(layer: SparseLayer) -> torch.Tensor:
    return torch.cat([layer.member_weight(i) for i in range(2)])


@pytest.fixture(params=["private", "fallback"])
def path(request, monkeypatch):
    if request.param == "private":
        if not sparse_ops.PRIVATE_OPS:
            pytest.skip("this torch has no private embedding_bag ops")
    else:
        monkeypatch.setattr(sparse_ops, "PRIVATE_OPS", False)
    return request.param


def test_sparse_matmul_gradcheck(path):
    layer = _layer(0)
    w = layer.values.detach().clone().requires_grad_()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: _SparseMatmul.apply(w, x, layer), (w, x))
    torch.testing.assert_close(_SparseMatmul.apply(w, x, layer), _dense(layer) @ x)


def test_private_and_fallback_paths_agree(monkeypatch):
    if not sparse_ops.PRIVATE_OPS:
        pytest.skip("this torch has no private embedding_bag ops")
    layer = _layer(1)
    x = torch.randn(6, 4, dtype=torch.float64)
    grad = torch.randn(12, 4, dtype=torch.float64)

    def outputs():
        w = layer.values.detach().clone().requires_grad_()
        xg = x.clone().requires_grad_()
        out = _SparseMatmul.apply(w, xg, layer)
        out.backward(grad)
        return out.detach(), w.grad, xg.grad

    private = outputs()
    monkeypatch.setattr(sparse_ops, "PRIVATE_OPS", False)
    fallback = outputs()
    assert torch.equal(private[0], fallback[0])
    for a, b in zip(private[1:], fallback[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
