"""A sparse matrix times dense columns, by embedding_bag, and the gradient of the matrix's entries.

The sparse matrix S is given by its entries `weights` grouped by output row: entry j sits at row
`bags[j]`, column `indices[j]`, and row r's entries start at `offsets[r]`. Then
    (S @ x)[r] = sum over r's entries j of weights[j] * x[indices[j]]
is embedding_bag in sum mode with per-sample weights: x's rows are the "embeddings".

torch's private ATen ops do this with less per-call bookkeeping (the row of each entry is passed in,
not recomputed from the offsets). Private ops can vanish in a torch release, so each has a fallback
made of public calls, used when the op is missing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_aten = torch.ops.aten
PRIVATE_OPS = all(hasattr(_aten, op) for op in ("_embedding_bag_forward_only",
                                                "_embedding_bag_per_sample_weights_backward"))


def bag_sum(x: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """S @ x: [len(offsets), x's columns]."""
    if PRIVATE_OPS:
        return _aten._embedding_bag_forward_only(x, indices, offsets, False, 0, False, weights)[0]
    return F.embedding_bag(indices, x, offsets, mode="sum", per_sample_weights=weights)


def bag_sum_weights_grad(grad: torch.Tensor, x: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                         bags: torch.Tensor) -> torch.Tensor:
    """The gradient of sum(grad * (S @ x)) with respect to S's entries: grad[bags[j]] . x[indices[j]]."""
    if PRIVATE_OPS:
        return _aten._embedding_bag_per_sample_weights_backward(grad, x, indices, offsets, bags, 0)
    return (grad.index_select(0, bags) * x.index_select(0, indices)).sum(1)
