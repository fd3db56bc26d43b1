"""The bottleneck methods: a wider member holds the budget by shrinking what lies between layers.

- `linear-bottleneck`: each layer is a product of two, at a rank shrunk to hold the count; its budget is
  the full-rank factorisation's count, so the plain dense baseline is planned beside it;
- `nonlinear-bottleneck`: inner widths (ResNet blocks, every other MLP layer) shrink instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from widen_cli.methods.protocol import Method
from widen_cli.shapes import Infeasible, Member, architecture, count, numel, weight_shapes

if TYPE_CHECKING:
    from widen_cli.schema import ModelConfig
    from widen_cli.datasets import InputSpec

LINEAR_NAME = "linear-bottleneck"


def _bottleneck(cfg: ModelConfig, width: int, spec: InputSpec, method: str):
    """(full sizes, weights per unit of each size, make(sizes) -> (shapes, inner, ranks)) of a bottleneck
    family member. Each layer's count is linear in its own size, which makes exact top-ups possible."""
    if method == LINEAR_NAME:
        dense = weight_shapes(cfg, width, spec)
        names = list(dense)
        full = [min(numel(dense[n][1:]), dense[n][0]) for n in names]  # rank min(fan_in k k, fan_out) is full
        costs = [numel(dense[n][1:]) + dense[n][0] for n in names]

        def make(sizes):
            ranks = dict(zip(names, sizes))
            return weight_shapes(cfg, width, spec, ranks=ranks), None, ranks

        return full, costs, make
    full, costs, inner_of = architecture(cfg).bottleneck(cfg, width, spec)

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


class Bottleneck(Method):
    bottleneck = True

    def plan(self, cfg, spec, base_width, width, method) -> Member:
        budget = self.budget(cfg, spec, base_width)
        solved = solve_bottleneck(cfg, width, spec, self.name, budget)
        if solved is None:
            raise Infeasible(f"width {width} needs a bottleneck below 1 to hold {budget:,} weights")
        ratio, shapes, inner, ranks = solved
        return Member(width=width, base_width=base_width, method=self.name, budget=budget, n_weights=count(shapes),
                      n_weights_dense=count(weight_shapes(cfg, width, spec)), layers=shapes,
                      kept={n: numel(s) for n, s in shapes.items()}, inner=inner, ranks=ranks, bottleneck_ratio=ratio)


class NonlinearBottleneck(Bottleneck):
    name = "nonlinear-bottleneck"


class LinearBottleneck(Bottleneck):
    """Its base member is the full-rank factorisation, not the dense model: the plain dense baseline is
    planned beside it, and its base member is a run of its own."""

    name = LINEAR_NAME
    baseline_at_base = False

    def budget(self, cfg, spec, base_width) -> int:
        full, _, make = _bottleneck(cfg, base_width, spec, self.name)
        return count(make(full)[0])

    def companion_widths(self, base_width, widths, dense_wide) -> list[int]:
        return [base_width, *super().companion_widths(base_width, widths, dense_wide)]


LINEAR = LinearBottleneck()
NONLINEAR = NonlinearBottleneck()
