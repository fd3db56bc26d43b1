"""The batched family's sparse matmul (sparse_ops behind models.stacked._SparseMatmul): gradients checked
numerically on each path (torch's private ATen ops, public CSR products, public embedding_bag), forced
explicitly on every machine, and the paths must agree."""
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


@pytest.fixture(params=sparse_ops.PATHS)
def path(request, monkeypatch):
    monkeypatch.setattr(sparse_ops, "PATH", request.param)
    return request.param


def test_the_supported_torch_has_the_fast_ops():
    """The private ops are ~2.5x faster than the CSR path: a torch release that drops them must be
    noticed here (then widen warns once and falls back), not found later as slow training."""
    assert sparse_ops.PRIVATE_OPS, f"torch {torch.__version__} lacks the private embedding_bag ops"
    assert sparse_ops.CSR_OPS, f"torch {torch.__version__} lacks CSR products or sparse.sampled_addmm"
    assert sparse_ops.PATH == "private"


def test_fallback_warns_once(monkeypatch, capsys):
    monkeypatch.setattr(sparse_ops, "PRIVATE_OPS", False)
    monkeypatch.setattr(sparse_ops, "PATH", "csr")
    monkeypatch.setattr(sparse_ops, "_warned", False)
    layer = _layer(2)
    for _ in range(3):
        layer(torch.randn(6, 2, dtype=torch.float64)).sum().backward()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "csr" in err[0], err


def test_sparse_matmul_gradcheck(path):
    layer = _layer(0)
    w = layer.values.detach().clone().requires_grad_()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: _SparseMatmul.apply(w, x, layer), (w, x))
    torch.testing.assert_close(_SparseMatmul.apply(w, x, layer), _dense(layer) @ x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fallback", ["csr", "embedding_bag"])
def test_private_and_fallback_paths_agree(monkeypatch, fallback, dtype):
    layer = _layer(1).to(dtype)
    x = torch.randn(6, 4, dtype=dtype)
    grad = torch.randn(12, 4, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5

    def outputs():
        w = layer.values.detach().clone().requires_grad_()
        xg = x.clone().requires_grad_()
        out = _SparseMatmul.apply(w, xg, layer)
        out.backward(grad)
        return out.detach(), w.grad, xg.grad

    monkeypatch.setattr(sparse_ops, "PATH", "private")
    private = outputs()
    monkeypatch.setattr(sparse_ops, "PATH", fallback)
    other = outputs()
    for a, b in zip(private, other):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
