"""A model's weight shapes and how many weights each layer keeps: pure functions, no torch.

Shapes come from each model's module (models.ARCHITECTURES) without building a model; tests pin them to
the real modules. The methods (widen_cli/methods/) plan their members from these; budget.py re-exports
them beside the family-level planning.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from widen_cli.distributions import DENSE_LAST, DISTRIBUTIONS, numel

if TYPE_CHECKING:
    from widen_cli.schema import MethodConfig, ModelConfig
    from widen_cli.datasets import InputSpec


# ---------------------------------------------------------------- shapes

def architecture(cfg: ModelConfig):
    """The model's module in the registry (models.ARCHITECTURES). Imported here, not at the top, so that
    config validation can read DISTRIBUTIONS without importing torch."""
    from widen_cli.models import ARCHITECTURES

    return ARCHITECTURES[cfg.name]


def weight_shapes(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None = None,
                  ranks: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> weight shape of every conv/linear layer, in module order, as models.build_model makes them."""
    shapes = architecture(cfg).weight_shapes(cfg, width, spec, inner)
    if ranks:
        factored = {}
        for name, shape in shapes.items():
            r, (out, fan_in), kernel = ranks[name], shape[:2], shape[2:]
            factored[f"{name}.0"] = (r, fan_in, *kernel)
            factored[f"{name}.1"] = (out, r, *((1, 1) if kernel else ()))
        shapes = factored
    return shapes


def count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(numel(s) for s in shapes.values())


# ---------------------------------------------------------------- sparsity across layers (distributions.py)

def fix_last_layer(method: MethodConfig, llc: float | None) -> MethodConfig:
    """The method with the last layer's connectivity fixed at llc (None: not fixed). dense-last's last layer
    then gives way to llc and its rule for the other layers, staggered, is what is left: the member is
    recorded as staggered, so the same network has one name (and one run folder)."""
    distribution = "staggered" if llc is not None and method.distribution == DENSE_LAST else method.distribution
    return replace(method, last_layer_connectivity=llc, distribution=distribution)


def distribute(shapes: dict[str, tuple[int, ...]], n_keep: int, method: MethodConfig) -> dict[str, int]:
    """Weights kept per layer for a sparse member, exactly n_keep in total."""
    names = list(shapes)
    sizes = [numel(shapes[n]) for n in names]
    fixed: dict[str, int] = {}
    if method.last_layer_connectivity is not None:
        last = names[-1]
        fixed[last] = round(method.last_layer_connectivity * sizes[-1])
        names, sizes = names[:-1], sizes[:-1]
        n_keep -= fixed[last]
        if fixed[last] < 1 or not 1 <= n_keep <= sum(sizes):
            raise ValueError(f"last-layer connectivity {method.last_layer_connectivity} leaves {n_keep} weights "
                             f"for the other layers, which hold {sum(sizes)}")
    rule = fix_last_layer(method, method.last_layer_connectivity).distribution  # dense-last gives way to llc
    kept = DISTRIBUTIONS[rule]([shapes[n] for n in names], n_keep)
    return {**dict(zip(names, kept)), **fixed}


# ---------------------------------------------------------------- plan

@dataclass(frozen=True)
class Member:
    """One model of a family: its width and exactly which weights it has."""

    width: int
    base_width: int | None  # None: a budget given as a weight count (kernel-distance --weights)
    method: str
    budget: int  # the family's weight count, N(base)
    n_weights: int  # this member's count: kept (sparse) or explicit (bottlenecks)
    n_weights_dense: int  # the dense model at this width
    distribution: str | None = None
    within: str | None = None  # where the mask puts each layer's count (sparsity.draw_masks), not how many
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the member's weight shapes
    kept: dict[str, int] = field(default_factory=dict)  # weights kept per layer
    inner: list[int] | None = None  # non-linear bottleneck
    ranks: dict[str, int] | None = None  # linear bottleneck
    bottleneck_ratio: float | None = None
    variant: str | None = None  # pruned: method.prune

    @property
    def connectivity(self) -> float:
        return self.n_weights / self.n_weights_dense

    @property
    def widening_factor(self) -> float:
        return self.width / self.base_width

    @property
    def deviation(self) -> int:
        return self.n_weights - self.budget


class Infeasible(Exception):
    """This width cannot hold the budget (the message says why)."""
