"""How much memory a run needs, estimated from its plan before anything is allocated, against what its
device has (hardware.available_memory): a run that cannot fit is refused with one line naming both,
instead of crashing (or being killed) after its folder was written. `sweep-width --dry-run` prints it.

An estimate of the large parts, on the low side (what is refused would not have fit): parameters, their
gradients and SGD momentum, masks, the activations kept for the backward pass at the batch size, and an
in-memory dataset (both splits, with the float copy a resize makes).
"""
from __future__ import annotations

import torch

from widen_cli import budget, cost, datasets
from widen_cli.budget import Member
from widen_cli.schema import DatasetConfig, RunConfig
from widen_cli.errors import UserError
from widen_cli.methods import method_of
from widen_cli.models import InputSpec, build_model

FLOAT = 4  # bytes: parameters, gradients and activations are fp32
EVAL_BATCH = 1000  # data.EVAL_BATCH: evaluation runs without gradients, one layer's output at a time


def size_text(n: float) -> str:
    for unit, scale in (("EB", 2 ** 60), ("PB", 2 ** 50), ("TB", 2 ** 40), ("GB", 2 ** 30), ("MB", 2 ** 20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2 ** 10:.3g} KB"


def data_bytes(ds: DatasetConfig) -> int:
    """An in-memory dataset: both splits as uint8 at dataset.image_size, plus the float copy a resize makes
    of each (image folders are read batch by batch: nothing here)."""
    entry = datasets.get(ds.name)
    sizes = entry.sizes(ds)  # as read, before any subset or resize
    if entry.layout != datasets.TENSOR or sizes is None:
        return 0
    train, test = sizes
    side = entry.side or ds.image_size
    pixels = (train + test) * ds.channels * ds.image_size ** 2
    return pixels * (1 + (FLOAT if side != ds.image_size else 0))


_ACTIVATIONS: dict[tuple, tuple[int, int, int]] = {}  # run_bytes' cache of _activations


def _activations(run: RunConfig, spec: InputSpec, member: Member) -> tuple[int, int, int]:
    """The model's parameters (built on torch's meta device: shapes only, no memory); per image, every
    layer's output kept for the backward pass and the largest one (evaluation). Fully connected models
    (every weight 2-D): each layer's output and its activation's, from the planned shapes. Others: from
    cost.trace's forward pass on the meta device (it imports torch's compiler, which a plain MLP run never
    needs)."""
    shapes = list(member.layers.values())
    if all(len(s) == 2 for s in shapes):
        width = method_of(member).model_width(member)
        with torch.device("meta"):
            model = build_model(run.model, width, spec, inner=member.inner, ranks=member.ranks)
        params = sum(p.numel() for p in model.parameters())
        inputs = spec.channels * spec.image_size ** 2
        return params, inputs + sum(2 * s[0] for s in shapes), max([inputs, *(s[0] for s in shapes)])
    traced = cost.trace(run.model, spec, member)  # the pass that counts the sweep's compute too, done once
    return traced.params, traced.kept, traced.largest


def run_bytes(run: RunConfig, spec: InputSpec, member: Member, ranks: int = 1) -> dict[str, int]:
    """The estimate of one run, by part (bytes); under torchrun, of one of its `ranks` processes, which
    holds the whole model and its slice of each batch."""
    copies = 2 + (run.optim.momentum > 0) + method_of(run).mask_copies  # + gradient, momentum, mask
    weights = sum(budget.numel(s) for s in member.layers.values())
    parts = {"data": data_bytes(run.dataset), "parameters+state": weights * FLOAT * copies, "activations": 0}
    if sum(parts.values()) > 2 ** 62:  # far beyond any device; and the model would not build even on meta
        return parts
    key = (run.model, spec, cost.member_key(member), tuple(map(tuple, member.layers.values())))
    if key not in _ACTIVATIONS:  # once per distinct member, as cost.py counts its compute: seeds, lrs alike
        _ACTIVATIONS[key] = _activations(run, spec, member)
    params, kept, largest = _ACTIVATIONS[key]
    parts["parameters+state"] = params * FLOAT * copies
    parts["activations"] = max(kept * -(-run.optim.batch_size // ranks), 2 * largest * EVAL_BATCH) * FLOAT
    return parts


def kernel_bytes(cfg, dataset: DatasetConfig | None) -> dict[str, int]:
    """kernel-distance: the input pairs and per-pair results, a dense reference network, the blocks
    (kernels.CHUNK_ELEMENTS) and a dataset's test images, standardised in float64."""
    from widen_cli.kernels import CHUNK_ELEMENTS

    d = cfg.input_dim
    parts = {"pairs": cfg.pairs * (2 * d * FLOAT + 12 * 8), "blocks": 8 * CHUNK_ELEMENTS * FLOAT,
             "reference": 2 * (cfg.reference or 0) * d * FLOAT}
    if dataset is not None:
        test = (datasets.get(dataset.name).sizes(dataset) or (0, 0))[1]
        parts["data"] = data_bytes(dataset) + test * d * (8 + FLOAT)
    return parts


def describe(parts: dict[str, int]) -> str:
    return f"about {size_text(sum(parts.values()))} ({', '.join(f'{k} {size_text(v)}' for k, v in parts.items() if v)})"


def check(what: str, parts: dict[str, int], device: torch.device, smaller: str = "width, batch size or image size",
          refuse: bool = True, here: bool = True) -> str:
    """One line: the estimate against the device's memory (hardware.available_memory; `here`: the run is
    in this process). What does not fit is refused, or with `refuse=False` (a dry run, which allocates
    nothing: a plan may be meant for a bigger machine) said so."""
    from widen_cli.hardware import available_memory

    have, limit = available_memory(device, here)
    line = f"{what} needs {describe(parts)} of memory; {size_text(have)} available ({limit})"
    if sum(parts.values()) <= have:
        return line
    if refuse:
        raise UserError(f"{line}: it does not fit; use a smaller {smaller}")
    return f"warning: {line}: it does not fit here, and would be refused when run"
