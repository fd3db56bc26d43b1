"""A sparse matrix times dense columns, and the gradient of the matrix's entries, by one of three paths.

The sparse matrix S is given by its entries `weights` grouped by output row, ascending columns within a
row (CSR order): entry j sits at row `bags[j]`, column `indices[j]`, and row r's entries start at
`offsets[r]`. Then
    (S @ x)[r] = sum over r's entries j of weights[j] * x[indices[j]]
is embedding_bag in sum mode with per-sample weights: x's rows are the "embeddings".

`PATH` says how (chosen once, at import; tests set it to check each):
- "private": torch's private ATen embedding_bag ops, the fastest (the row of each entry is passed in,
  not recomputed from the offsets). Private ops can vanish in a torch release, hence the others.
- "csr": public CSR products: S @ x with S a CSR tensor, and the entries' gradient by
  `torch.sparse.sampled_addmm` (grad @ x^T at the kept positions only); ~1.3x the private path's step
  time (CPU, `make bench` 3c).
- "embedding_bag": public `F.embedding_bag` and an index_select product; 5-9x the private path's step
  time, the last resort for a torch without CSR products.
"""
from __future__ import annotations

import sys
import warnings

import torch
import torch.nn.functional as F

_aten = torch.ops.aten
PRIVATE_OPS = all(hasattr(_aten, op) for op in ("_embedding_bag_forward_only",
                                                "_embedding_bag_per_sample_weights_backward"))
CSR_OPS = hasattr(torch, "sparse_csr_tensor") and hasattr(torch.sparse, "sampled_addmm")
PATHS = ("private", "csr", "embedding_bag")
PATH = "private" if PRIVATE_OPS else "csr" if CSR_OPS else "embedding_bag"
_warned = False

# torch says so once per process, on the first CSR tensor; the path is tested here against the others.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def _warn_fallback() -> None:
    """One line, once per process: a torch without the private ops trains the batched family slower."""
    global _warned
    if not _warned and not PRIVATE_OPS:
        _warned = True
        print(f"warning: torch {torch.__version__} lacks the private embedding_bag ops; batched sparse MLP "
              f"families use the slower public {PATH} path", file=sys.stderr, flush=True)


def _csr(crow_starts: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    crow = torch.cat([crow_starts, crow_starts.new_full((1,), len(cols))])
    return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def bag_sum(x: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """S @ x: [len(offsets), x's columns]."""
    _warn_fallback()
    if PATH == "private":
        return _aten._embedding_bag_forward_only(x, indices, offsets, False, 0, False, weights)[0]
    if PATH == "csr":
        return _csr(offsets, indices, weights, (len(offsets), x.shape[0])) @ x
    return F.embedding_bag(indices, x, offsets, mode="sum", per_sample_weights=weights)


def bag_sum_weights_grad(grad: torch.Tensor, x: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                         bags: torch.Tensor) -> torch.Tensor:
    """The gradient of sum(grad * (S @ x)) with respect to S's entries: grad[bags[j]] . x[indices[j]]."""
    if PATH == "private":
        return _aten._embedding_bag_per_sample_weights_backward(grad, x, indices, offsets, bags, 0)
    if PATH == "csr":
        # beta=0: the pattern's values are not read, only where the products go
        pattern = _csr(offsets, indices, grad.new_zeros(len(indices)), (len(offsets), x.shape[0]))
        return torch.sparse.sampled_addmm(pattern, grad, x.T, beta=0.0).values()
    return (grad.index_select(0, bags) * x.index_select(0, indices)).sum(1)
