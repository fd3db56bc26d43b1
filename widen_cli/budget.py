"""Fixed-parameter-budget families: which weights each wider member keeps. Pure functions, no torch.

A family has a base width b and a budget N(b), the base model's weight count (the paper's rule:
conv and linear weight tensors). A member at width w >= b keeps N(b) weights:
- `sparse`: a static random mask; `distribute` says how many weights each layer keeps, by one of the
  rules of distributions.py;
- `linear-bottleneck`: each layer is a product of two, at a rank shrunk to hold the count;
- `nonlinear-bottleneck`: inner widths (ResNet blocks, every other MLP layer) shrink instead.
Shapes and bottleneck layouts come from each model's module (models.ARCHITECTURES) without building a
model; tests pin them to the real modules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from widen_cli.distributions import (  # noqa: F401 - the rules, re-exported beside distribute
    DENSE_LAST, DISTRIBUTIONS, default_distribution, erk, numel, staggered, uniform,
)
from widen_cli.errors import UserError

if TYPE_CHECKING:
    from widen_cli.schema import MethodConfig, ModelConfig
    from widen_cli.models import InputSpec


# ---------------------------------------------------------------- shapes

def _architecture(cfg: ModelConfig):
    """The model's module in the registry (models.ARCHITECTURES). Imported here, not at the top, so that
    config validation can read DISTRIBUTIONS without importing torch."""
    from widen_cli.models import ARCHITECTURES

    return ARCHITECTURES[cfg.name]


def weight_shapes(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None = None,
                  ranks: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> weight shape of every conv/linear layer, in module order, as models.build_model makes them."""
    shapes = _architecture(cfg).weight_shapes(cfg, width, spec, inner)
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


# ---------------------------------------------------------------- bottlenecks

def _bottleneck(cfg: ModelConfig, width: int, spec: InputSpec, method: str):
    """(full sizes, weights per unit of each size, make(sizes) -> (shapes, inner, ranks)) of a bottleneck
    family member. Each layer's count is linear in its own size, which makes exact top-ups possible."""
    if method == "linear-bottleneck":
        dense = weight_shapes(cfg, width, spec)
        names = list(dense)
        full = [min(numel(dense[n][1:]), dense[n][0]) for n in names]  # rank min(fan_in k k, fan_out) is full
        costs = [numel(dense[n][1:]) + dense[n][0] for n in names]

        def make(sizes):
            ranks = dict(zip(names, sizes))
            return weight_shapes(cfg, width, spec, ranks=ranks), None, ranks

        return full, costs, make
    full, costs, inner_of = _architecture(cfg).bottleneck(cfg, width, spec)

    def make(sizes):
        inner = inner_of(sizes)
        return weight_shapes(cfg, width, spec, inner=inner), inner, None

    return full, costs, make


def _fill(sizes: list[int], full: list[int], costs: list[int], gap: int) -> int:
    """Add whole units to `sizes` (in place), biggest units first, while they fit in `gap`; the gap left."""
    for i in sorted(range(len(full)), key=lambda i: -costs[i]):
        add = min(full[i] - sizes[i], gap // costs[i])
        sizes[i] += add
        gap -= add * costs[i]
    return gap


MAX_SHIFT = 64  # the local search moves up to this many units of one layer at a time


def _shift(sizes, full, costs, gap, i, d):
    """Layer i gets d more (or -d fewer) units; the others pay (cheapest first) or absorb the difference.
    Returns (sizes, gap) or (None, None) if impossible."""
    if not 1 <= sizes[i] + d <= full[i]:
        return None, None
    trial = list(sizes)
    trial[i] += d
    gap -= d * costs[i]
    for j in sorted((j for j in range(len(full)) if j != i), key=lambda j: costs[j]):
        if gap >= 0:
            break
        take = min(trial[j] - 1, -(gap // costs[j]))
        trial[j] -= take
        gap += take * costs[j]
    if gap < 0:
        return None, None
    caps = [trial[i] if j == i else f for j, f in enumerate(full)]  # refill the others, not layer i
    return trial, _fill(trial, caps, costs, gap)


def solve_bottleneck(cfg: ModelConfig, width: int, spec: InputSpec, method: str, budget: int):
    """Bottleneck sizes whose explicit count is as close to `budget` as whole units allow, never above.

    All sizes shrink by one common ratio (largest with the count within budget); then the gap is filled
    layer by layer, and a local search shifts whole units between layers while that narrows the gap.
    What is left is less than one unit of the cheapest layer not at its full size.
    Returns (ratio, shapes, inner, ranks), or None when even bottlenecks of 1 exceed the budget.
    """
    full, costs, make = _bottleneck(cfg, width, spec, method)

    def scaled(ratio):
        return [max(1, round(ratio * f)) for f in full]

    def n(sizes):
        return count(make(sizes)[0])

    if n([1] * len(full)) > budget:
        return None
    lo, hi = 0.0, 1.0
    if n(scaled(hi)) <= budget:
        lo = hi
    else:
        for _ in range(50):  # the count is non-decreasing in the ratio
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if n(scaled(mid)) <= budget else (lo, mid)
    sizes = scaled(lo)
    gap = _fill(sizes, full, costs, budget - n(sizes))
    improved = True
    while improved:  # local search: shift whole units between layers while that narrows the gap
        improved = False
        for i in range(len(full)):
            for d in range(1, MAX_SHIFT + 1):
                for trial, trial_gap in (_shift(sizes, full, costs, gap, i, -d), _shift(sizes, full, costs, gap, i, d)):
                    if trial is not None and trial_gap < gap:
                        sizes, gap, improved = trial, trial_gap, True
    return (lo, *make(sizes))


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


def family_budget(cfg: ModelConfig, base_width: int, spec: InputSpec, method: str) -> int:
    """N(base): the dense count, or for the linear bottleneck the full-rank factorisation's explicit count."""
    if method == "linear-bottleneck":
        full, _, make = _bottleneck(cfg, base_width, spec, method)
        return count(make(full)[0])
    return count(weight_shapes(cfg, base_width, spec))


class Infeasible(Exception):
    """This width cannot hold the budget (the message says why)."""


def sparse_member(cfg: ModelConfig, spec: InputSpec, width: int, budget: int, method: MethodConfig,
                  base_width: int | None = None) -> Member:
    """The sparse model at `width` that keeps `budget` weights, spread over its layers by
    method.distribution; raises Infeasible. sweep-width's members and kernel-distance's networks both
    come from here, so the same rule name gives the same per-layer counts."""
    dense = weight_shapes(cfg, width, spec)
    try:
        kept = distribute(dense, budget, method)
    except ValueError as e:
        # dense-last's cap is the dense classifier alone; staggered thins the classifier too, which lifts it.
        lift = (" (--distribution staggered, i.e. method.distribution=staggered, thins the last layer too and "
                "lifts this cap)" if fix_last_layer(method, method.last_layer_connectivity).distribution == DENSE_LAST
                else "")
        raise Infeasible(f"width {width} cannot keep {budget:,} weights: {e}{lift}") from None
    if min(kept.values()) < 1:
        raise Infeasible(f"width {width} would leave a layer with no weights")
    return Member(width=width, base_width=base_width, method="sparse", budget=budget, n_weights=sum(kept.values()),
                  n_weights_dense=count(dense), distribution=method.distribution, within=method.within, layers=dense,
                  kept=kept)


def _plan(cfg: ModelConfig, spec: InputSpec, base_width: int, width: int, method: MethodConfig) -> Member:
    name = method.name
    dense = weight_shapes(cfg, width, spec)
    n_dense = count(dense)
    budget = family_budget(cfg, base_width, spec, name)
    common = dict(width=width, base_width=base_width, method=name, budget=budget, n_weights_dense=n_dense)
    if name == "dense":
        return Member(**{**common, "budget": n_dense}, n_weights=n_dense, layers=dense,
                      kept={n: numel(s) for n, s in dense.items()})
    if name == "sparse":
        return sparse_member(cfg, spec, width, budget, method, base_width)
    if name == "pruned":
        return _plan_pruned(cfg, spec, base_width, method, common, dense)
    solved = solve_bottleneck(cfg, width, spec, name, budget)
    if solved is None:
        raise Infeasible(f"width {width} needs a bottleneck below 1 to hold {budget:,} weights")
    ratio, shapes, inner, ranks = solved
    return Member(**common, n_weights=count(shapes), layers=shapes, kept={n: numel(s) for n, s in shapes.items()},
                  inner=inner, ranks=ranks, bottleneck_ratio=ratio)


def _plan_pruned(cfg: ModelConfig, spec: InputSpec, base_width: int, method: MethodConfig, common: dict,
                 dense: dict) -> Member:
    """A pruned member. structured: every layer keeps its base-width share of units, so the pruned model has
    the base model's shapes and exactly the budget. magnitude: the dense shapes with the budget's weights
    kept, per layer as the sparse family's (scope layer) or decided by the weights (scope global: `kept`
    is empty until pruning)."""
    variant = dict(variant=method.prune)
    if method.prune == "structured":
        shapes = weight_shapes(cfg, base_width, spec)
        return Member(**common, n_weights=count(shapes), layers=shapes, kept={n: numel(s) for n, s in shapes.items()},
                      **variant)
    kept = {}
    if method.scope == "layer":
        try:
            kept = distribute(dense, common["budget"], method)
        except ValueError as e:
            raise Infeasible(f"width {common['width']} cannot keep {common['budget']:,} weights: {e}") from None
    return Member(**common, n_weights=common["budget"], distribution=method.distribution if kept else None,
                  layers=dense, kept=kept, **variant)


def check_member(width: int, base_width: int, last_layer_connectivity: float | None) -> None:
    """The family rules a member's settings must keep (validation checks a run by them, plan_member each
    member): its width is at least the base width; a fixed last-layer connectivity is in (0, 1]."""
    if width < base_width:
        raise UserError(f"width {width} is below the base width {base_width}; family members have width "
                        f">= {base_width}")
    llc = last_layer_connectivity
    if llc is not None and not 0 < llc <= 1:
        raise UserError(f"method.last_layer_connectivity must be in (0, 1], got {llc}")


def check_distribution(name, key: str) -> None:
    """`name` is one of DISTRIBUTIONS (method.distribution, kernel-distance's --distribution)."""
    if name not in DISTRIBUTIONS:
        raise UserError(f"{key} must be one of {', '.join(DISTRIBUTIONS)}, got {name!r}")


def plan_member(cfg: ModelConfig, spec: InputSpec, base_width: int, width: int, method: MethodConfig) -> Member:
    """The member of a family at `width`; an impossible one raises UserError with the valid widths."""
    check_member(width, base_width, method.last_layer_connectivity)
    try:
        return _plan(cfg, spec, base_width, width, method)
    except Infeasible as e:
        valid = valid_widths(cfg, spec, base_width, method)
        raise UserError(f"{e}; valid widths for base width {base_width} with {method.name}: {valid}") from None


def is_valid(cfg: ModelConfig, spec: InputSpec, base_width: int, width: int, method: MethodConfig,
             connectivity_floor: float = 0.0) -> bool:
    try:
        member = _plan(cfg, spec, base_width, width, method)
    except Infeasible:
        return False
    return member.connectivity >= connectivity_floor


def widest(valid, valid_from: int, limit: int) -> int | None:
    """Bisection for the widest width w with valid(w), above `valid_from` (valid; validity is monotone from
    there); None if even `limit` is valid."""
    if valid(limit):
        return None
    lo, hi = valid_from, limit  # lo valid, hi invalid
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if valid(mid) else (lo, mid)
    return lo


def _widest(cfg, spec, base_width, method, valid_from: int, floor: float, limit: int) -> int | None:
    return widest(lambda w: is_valid(cfg, spec, base_width, w, method, floor), valid_from, limit)


def max_width(cfg: ModelConfig, spec: InputSpec, base_width: int, method: MethodConfig,
              connectivity_floor: float = 0.0, limit: int = 1 << 16) -> int | None:
    """The widest valid member, assuming the base width is valid (validity is monotone in width from
    there); None if even `limit` is valid."""
    return _widest(cfg, spec, base_width, method, base_width, connectivity_floor, limit)


def valid_widths(cfg: ModelConfig, spec: InputSpec, base_width: int, method: MethodConfig,
                 limit: int = 1 << 16) -> str:
    """The valid widths in words. A fixed last-layer connectivity can make narrow widths invalid too: the
    other layers must be wide enough to hold the rest of the budget."""
    lo = base_width
    if not is_valid(cfg, spec, base_width, lo, method):
        step = base_width
        while lo <= limit and not is_valid(cfg, spec, base_width, lo, method):
            lo, step = lo + step, step * 2
        if lo > limit:
            return "none"
        bad = lo - step // 2
        while lo - bad > 1:  # bad invalid, lo valid
            mid = (lo + bad) // 2
            lo, bad = (mid, bad) if is_valid(cfg, spec, base_width, mid, method) else (lo, mid)
    hi = _widest(cfg, spec, base_width, method, lo, 0.0, limit)
    return f"{lo} and above" if hi is None else f"{lo} to {hi}"


def default_widths(cfg: ModelConfig, spec: InputSpec, base_width: int, method: MethodConfig,
                   connectivity_floor: float, max_members: int = 16) -> list[int]:
    """The base width times powers of sqrt(2) (as the paper writes them: 1, 1.41, 2, 2.83, ...), up to the
    widest valid member whose connectivity (n_weights / n_weights_dense) stays >= the floor."""
    widths = []
    for k in range(max_members):
        w = round(base_width * round(math.sqrt(2) ** k, 2))
        if not is_valid(cfg, spec, base_width, w, method, connectivity_floor):
            break
        if w not in widths:
            widths.append(w)
    return widths


def widths_from_factors(base_width: int, factors: list[float]) -> list[int]:
    return sorted({round(base_width * f) for f in factors})
