"""M MLPs as one module, for family-batched training (widen_cli/stacked_training.py): `sparse` members of any
widths as each layer's kept weights, multiplied by one `embedding_bag` per layer; `dense` members of one
width as [M, out, in] weights, one batched matmul per layer. Activations are feature-major, [units of
all members, batch]."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from widen_cli import sparse_ops
from widen_cli.models.mlp import MLP, NTKLinear

class _SparseMatmul(torch.autograd.Function):
    """out = S @ x, S the layer's kept weights `w`, by embedding_bag: output unit r is the "bag" of the
    input rows its kept weights read, weighted by them. Backward: the gradient of each kept weight
    (embedding_bag's per-sample-weight gradient) and, where x needs one, S^T @ grad (embedding_bag over
    the transposed pattern), skipping embedding_bag's own slower dense backward (see sparse_ops)."""

    @staticmethod
    def forward(ctx, w, x, layer):
        ctx.save_for_backward(w, x)
        ctx.layer = layer
        return sparse_ops.bag_sum(x, layer.cols, layer.offsets, w)

    @staticmethod
    def backward(ctx, grad):
        w, x = ctx.saved_tensors
        layer = ctx.layer
        grad = grad.contiguous()
        grad_w = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_w = sparse_ops.bag_sum_weights_grad(grad, x, layer.cols, layer.offsets, layer.rows)
        if ctx.needs_input_grad[1]:
            grad_x = sparse_ops.bag_sum(grad, layer.rows_t, layer.offsets_t, w[layer.order_t])
        return grad_w, grad_x, None


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """CSR start of each of n groups, for keys sorted ascending."""
    counts = torch.bincount(keys, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])


class SparseLayer(nn.Module):
    """One layer of every member, holding only the kept weights: out[r] = sum_j values[j] x[col_j] over
    the kept weights j of unit r (all members' units stacked)."""

    def __init__(self, weights: list[torch.Tensor], masks: list[torch.Tensor], biases: list[torch.Tensor | None],
                 in_offsets: list[int], n_in: int, ntk: bool):
        super().__init__()
        rows, cols, values, divisors, self.spans = [], [], [], [], []
        out_offset, start = 0, 0
        for w, m, in_off in zip(weights, masks, in_offsets):
            r, c = m.nonzero(as_tuple=True)
            rows.append(r + out_offset)
            cols.append(c + in_off)
            values.append(w.detach()[r, c])
            divisors.append(torch.full_like(values[-1], math.sqrt(w.shape[1])))
            self.spans.append((start, start + len(r), out_offset, in_off, tuple(w.shape)))
            out_offset, start = out_offset + w.shape[0], start + len(r)
        rows, cols = torch.cat(rows), torch.cat(cols)
        assert bool((rows[1:] >= rows[:-1]).all()), "embedding_bag needs the weights grouped by unit"
        self.n_out = out_offset
        self.values = nn.Parameter(torch.cat(values))
        self.register_buffer("divisor", torch.cat(divisors) if ntk else None)  # NTK: w / sqrt(fan-in)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.register_buffer("offsets", _offsets(rows, self.n_out))
        order = torch.argsort(cols * self.n_out + rows)  # the transpose, for the input gradient
        self.register_buffer("order_t", order)
        self.register_buffer("rows_t", rows[order])
        self.register_buffer("offsets_t", _offsets(cols[order], n_in))
        self.bias = nn.Parameter(torch.cat(biases)) if biases[0] is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.values / self.divisor if self.divisor is not None else self.values
        out = _SparseMatmul.apply(w, x, self)
        return out if self.bias is None else out.add_(self.bias[:, None])

    def member_weight(self, i: int, values: torch.Tensor | None = None) -> torch.Tensor:
        """Member i's weight matrix, from the kept `values` (default: the weights; or e.g. their momentum)."""
        start, end, out_off, in_off, shape = self.spans[i]
        values = (self.values if values is None else values).detach()
        w = values.new_zeros(shape)
        w[self.rows[start:end] - out_off, self.cols[start:end] - in_off] = values[start:end]
        return w

    def stack_weights(self, weights: list[torch.Tensor]) -> torch.Tensor:
        """Members' tensors shaped like their weight matrices (e.g. their momentum) as one like `values`."""
        return torch.cat([w.to(self.rows.device)[self.rows[start:end] - out_off, self.cols[start:end] - in_off]
                          for w, (start, end, out_off, in_off, _) in zip(weights, self.spans)])

    stack_biases = staticmethod(torch.cat)

    def member_bias(self, i: int, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        _, _, out_off, _, shape = self.spans[i]
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.detach()[out_off:out_off + shape[0]]


class DenseLayer(nn.Module):
    """One layer of M members of one width: weights [M, out, in], one batched matmul."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor | None], ntk: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([w.detach() for w in weights]))
        self.bias = nn.Parameter(torch.stack(biases)) if biases[0] is not None else None
        self.ntk = ntk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n_out, n_in = self.weight.shape
        w = self.weight / math.sqrt(n_in) if self.ntk else self.weight
        x = x.view(m, n_in, -1)
        out = torch.bmm(w, x) if self.bias is None else torch.baddbmm(self.bias[:, :, None], w, x)
        return out.view(m * n_out, -1)

    def member_weight(self, i: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        return (self.weight if weight is None else weight).detach()[i]

    stack_weights = stack_biases = staticmethod(torch.stack)

    def member_bias(self, i: int, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.detach()[i]


class StackedMLP(nn.Module):
    """M MLPs as one module. Input: [G * d, B], the flattened batches of G data streams (one per seed)
    side by side; member i reads stream `streams[i]`. Output: logits [M, classes, B]."""

    def __init__(self, models: list[MLP], masks: list[dict[str, torch.Tensor] | None], streams: list[int],
                 n_streams: int, sparse: bool):
        super().__init__()
        first = models[0].layers
        self.relu, self.n_members, self.n_classes = models[0].relu, len(models), first[-1].out_features
        self.input_dim, self.streams, self.n_streams = first[0].in_features, list(streams), n_streams
        ntk = isinstance(first[0], NTKLinear)
        layers = []
        for i in range(len(first)):
            weights = [m.layers[i].weight for m in models]
            biases = [m.layers[i].bias for m in models]
            if sparse:
                masks_i = [mk[f"layers.{i}"] if mk is not None else torch.ones_like(w, dtype=torch.bool)
                           for mk, w in zip(masks, weights)]
                fan_in = [w.shape[1] for w in weights]
                in_offsets = ([s * self.input_dim for s in streams] if i == 0
                              else [sum(fan_in[:j]) for j in range(len(models))])
                n_in = n_streams * self.input_dim if i == 0 else sum(fan_in)
                layers.append(SparseLayer(weights, [mk.to(w.device) for mk, w in zip(masks_i, weights)],
                                          biases, in_offsets, n_in, ntk))
            else:
                layers.append(DenseLayer(weights, biases, ntk))
        self.layers = nn.ModuleList(layers)
        self.sparse = sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sparse and self.streams != list(range(self.n_streams)):  # dense: one input per member
            x = x.view(self.n_streams, self.input_dim, -1)[self.streams].view(-1, x.shape[-1])
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.relu and i < len(self.layers) - 1:
                x = torch.relu_(x) if self.sparse else F.relu(x)  # sparse: x is a fresh tensor
        return x.view(self.n_members, self.n_classes, -1)

    def member_state(self, i: int, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Member i's weights as its own MLP's state_dict (masked weights exactly zero). With `tensors`
        (stacked parameter name -> a tensor shaped like it, e.g. its momentum), the same slices of those."""
        state = {}
        for j, layer in enumerate(self.layers):
            weight = f"layers.{j}.{'values' if isinstance(layer, SparseLayer) else 'weight'}"
            if tensors is None or weight in tensors:
                state[f"layers.{j}.weight"] = layer.member_weight(i, None if tensors is None else tensors[weight]).clone()
            if layer.bias is not None and (tensors is None or f"layers.{j}.bias" in tensors):
                bias = None if tensors is None else tensors[f"layers.{j}.bias"]
                state[f"layers.{j}.bias"] = layer.member_bias(i, bias).clone()
        return state


    def stack_members(self, tensors: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """member_state's inverse: each member's tensors named and shaped like its MLP's parameters (e.g.
        their momentum) as the stacked parameters' tensors."""
        stacked = {}
        for j, layer in enumerate(self.layers):
            weight = f"layers.{j}.{'values' if isinstance(layer, SparseLayer) else 'weight'}"
            stacked[weight] = layer.stack_weights([t[f"layers.{j}.weight"] for t in tensors])
            if layer.bias is not None:
                stacked[f"layers.{j}.bias"] = layer.stack_biases([t[f"layers.{j}.bias"] for t in tensors])
        return stacked
