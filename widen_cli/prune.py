"""Pruning a trained dense model to its family's weight budget (method `pruned`).

The parent is the dense run at the member's width; its trained weights are cut down to the budget:
- `structured`: whole hidden units (MLP) or channels (ResNet) go, the smallest L1 norms first, layer by
  layer. Every layer keeps its base-width share (Li et al. 2017 prune each layer by a set ratio), so the
  result is a real dense model of the base model's shapes, with exactly the budget: no rounding needed.
  ResNet: the channels of one stage's residual stream are summed by its blocks, so they are chosen once
  per stage, by the summed L1 norms of every filter writing into the stream (the stage's conv2s and
  downsample, and in stage 1 the stem); each block's inner channels (conv1's filters) are chosen on
  their own. BatchNorm keeps the statistics and affine parameters of the kept channels; every layer
  reading a removed channel loses those input weights.
- `magnitude`: the largest |w| are kept, per layer with the sparse family's counts (scope layer) or over
  all conv/linear weights together (scope global); a fixed mask, as for sparse members.
- `magnitude-rewind`: the same mask, with the weights put back to the parent's at `rewind_epoch`.
"""
from __future__ import annotations

from itertools import chain
from pathlib import Path

import torch
from torch import nn

from widen_cli import results
from widen_cli.budget import Member
from widen_cli.schema import RunConfig
from widen_cli.errors import MemberError
from widen_cli.methods.pruned import PRUNED
from widen_cli.models import InputSpec, build_model, weight_layers


class ParentUnusable(MemberError):
    """The dense parent cannot be pruned (it diverged, lacks the weights to rewind to, or they are damaged):
    the member fails."""


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order (kept units stay in place)."""
    return score.topk(k).indices.sort().values


def _l1(layer: nn.Module) -> torch.Tensor:
    """Each output unit's (filter's) L1 norm."""
    return layer.weight.detach().abs().flatten(1).sum(1)


# ---------------------------------------------------------------- magnitude

@torch.no_grad()
def magnitude_masks(model: nn.Module, member: Member, scope: str) -> dict[str, torch.Tensor]:
    """Bool masks keeping the largest |w|: member.kept[name] in each layer (scope layer), or
    member.n_weights over all of them (scope global). Exactly that many, ties broken by position."""
    layers = weight_layers(model)
    weights = {n: layers[n].weight.detach().abs().float().cpu() for n in member.layers}
    if scope == "layer":
        masks = {}
        for name, w in weights.items():
            keep = torch.zeros(w.numel(), dtype=torch.bool)
            keep[w.flatten().topk(member.kept[name]).indices] = True
            masks[name] = keep.view(w.shape)
        return masks
    flat = torch.cat([w.flatten() for w in weights.values()])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[flat.topk(member.n_weights).indices] = True
    parts = keep.split([w.numel() for w in weights.values()])
    return {n: p.view(w.shape) for (n, w), p in zip(weights.items(), parts)}


# ---------------------------------------------------------------- structured

def _mlp_index(big: nn.Module, shapes: dict) -> dict:
    """Module name -> (kept outputs, kept inputs) (None: all): each hidden layer keeps its units with the
    largest incoming L1 norms; the next layer reads only those."""
    layers, index, kept_in = weight_layers(big), {}, None
    names = list(shapes)
    for i, name in enumerate(names):
        out = None if i == len(names) - 1 else _top(_l1(layers[name]), shapes[name][0])
        index[name], kept_in = (out, kept_in), out
    return index


def _resnet_index(big: nn.Module, shapes: dict) -> dict:
    """Module name -> (kept outputs, kept inputs) for ResNet-18: one channel set per stage's residual
    stream (summed L1 norms of the filters writing to it), one per block's inner width."""
    layers, index, stream = weight_layers(big), {}, None
    for s in range(1, 5):
        writers = [n for n in layers if n.startswith(f"layer{s}.") and n.endswith(("conv2", "downsample.0"))]
        writers += ["conv1"] if s == 1 else []
        out = _top(sum(_l1(layers[n]) for n in writers), shapes[f"layer{s}.1.conv2"][0])
        if s == 1:  # the stem writes the first stage's stream
            index["conv1"] = index["bn1"] = (out, None)
            stream = out
        for b in (0, 1):
            block = f"layer{s}.{b}"
            mid = _top(_l1(layers[f"{block}.conv1"]), shapes[f"{block}.conv1"][0])
            index[f"{block}.conv1"], index[f"{block}.bn1"] = (mid, stream), (mid, None)
            index[f"{block}.conv2"], index[f"{block}.bn2"] = (out, mid), (out, None)
            if f"{block}.downsample.0" in layers:
                index[f"{block}.downsample.0"], index[f"{block}.downsample.1"] = (out, stream), (out, None)
            stream = out
    index["fc"] = (None, stream)
    return index


STRUCTURED = {"mlp": _mlp_index, "resnet18": _resnet_index}


@torch.no_grad()
def structured(big: nn.Module, small: nn.Module, model_name: str, shapes: dict) -> nn.Module:
    """`small` (a model of the planned `shapes`) filled with the kept slices of the trained `big`."""
    modules = dict(big.named_modules())
    for name, (out, kept_in) in STRUCTURED[model_name](big, shapes).items():
        target = dict(small.named_modules())[name]
        for key, t in chain(target.named_parameters(recurse=False), target.named_buffers(recurse=False)):
            src = getattr(modules[name], key)
            if src.dim() and out is not None:
                src = src.index_select(0, out)
            if src.dim() > 1 and kept_in is not None:
                src = src.index_select(1, kept_in)
            t.copy_(src)
    return small


# ---------------------------------------------------------------- a pruned run's starting point

def _load(path: Path, what: str) -> dict:
    if not path.exists():
        raise ParentUnusable(f"{path} is missing: the parent has no {what} (it was trained before widen kept "
                             f"them, or in a sweep whose members did not need them); delete the parent's folder "
                             f"to retrain it, or choose method.rewind_epoch 0")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, garbled, not a torch file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ParentUnusable(f"cannot read {path}, the parent's {what} ({reason[:200]}); delete the parent's "
                             f"folder {path.parent} to retrain it") from None


def _fill(model: nn.Module, path: Path, what: str) -> None:
    """Load the parent's weights file into `model`; one that does not fit it fails the member."""
    try:
        model.load_state_dict(_load(path, what))
    except (RuntimeError, TypeError, AttributeError) as e:
        reason = " ".join(str(e).split())
        raise ParentUnusable(f"{path}, the parent's {what}, does not fit its model ({reason[:200]}); delete the "
                             f"parent's folder {path.parent} to retrain it") from None


def pruned_model(run: RunConfig, member: Member, spec: InputSpec, parent_dir: Path, parent_status: str):
    """The pruned member before fine-tuning, on the CPU: (model, masks or None). Structured: a model of
    the member's (base) shapes; magnitude: the parent's model with its masks, its weights rewound to
    the parent's at method.rewind_epoch for magnitude-rewind (masks applied by the caller)."""
    if parent_status != "finished":
        raise ParentUnusable(f"the dense parent {parent_dir} ended with status {parent_status}: nothing to prune")
    method = run.method
    parent = build_model(run.model, run.width, spec)
    _fill(parent, parent_dir / results.MODEL_FILE, "trained weights")
    if PRUNED.structured(method):
        small = build_model(run.model, run.base_width, spec)
        return structured(parent, small, run.model.name, member.layers), None
    masks = magnitude_masks(parent, member, method.scope)
    if PRUNED.rewinds(method):
        _fill(parent, results.weights_at_epoch(parent_dir, method.rewind_epoch), f"weights at epoch {method.rewind_epoch}")
    return parent, masks
