"""Fixed-parameter-budget families: the budget N(b), each member at a width, the widths a family can have.

A family has a base width b and a budget N(b), the base model's weight count (the paper's rule:
conv and linear weight tensors). A member at width w >= b keeps N(b) weights; how is its method's
(widen_cli/methods/: sparse masks, bottlenecks, pruning). Shapes and per-layer counts come from
shapes.py, re-exported here. Pure functions, no torch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from widen_cli.distributions import (  # noqa: F401 - the rules, re-exported beside distribute
    DENSE_LAST, DISTRIBUTIONS, default_distribution, erk, numel, staggered, uniform,
)
from widen_cli.errors import UserError
from widen_cli.methods import method_of
from widen_cli.methods.bottleneck import solve_bottleneck  # noqa: F401 - re-exported
from widen_cli.methods.sparse import sparse_member  # noqa: F401 - re-exported (kernel-distance's networks)
from widen_cli.shapes import (  # noqa: F401 - re-exported
    Infeasible, Member, count, distribute, fix_last_layer, weight_shapes,
)

if TYPE_CHECKING:
    from widen_cli.schema import MethodConfig, ModelConfig
    from widen_cli.datasets import InputSpec


def family_budget(cfg: ModelConfig, base_width: int, spec: InputSpec, method: str) -> int:
    """N(base): the dense count, or what the method counts instead (the linear bottleneck's full-rank
    factorisation)."""
    return method_of(method).budget(cfg, spec, base_width)


def _plan(cfg: ModelConfig, spec: InputSpec, base_width: int, width: int, method: MethodConfig) -> Member:
    return method_of(method).plan(cfg, spec, base_width, width, method)


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
