"""How a sparse member's weight count is spread across its layers: the allocation rules, by name.

Pure functions of the layer shapes and the count to keep, no torch, no config: budget.distribute applies
them to a member (and the last-layer connectivity), config validation reads the names. One vocabulary
for `sweep-width --distribution` and `kernel-distance --distribution`.
"""
from __future__ import annotations

import math


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def staggered(sizes: list[int], n_keep: int) -> list[int]:
    """The paper's Appendix B/D: remove from the largest layer until it matches the next largest, then
    from both equally, and so on. Returns the weights kept per layer (in the order given).

    Within the layers involved, the remainder of an uneven split is taken from the largest layer.
    """
    n_remove = sum(sizes) - n_keep
    if n_remove < 0 or n_keep < 1:
        raise ValueError(f"cannot keep {n_keep} of {sum(sizes)} weights")
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    s = [sizes[i] for i in order] + [0]
    involved = 1  # smallest number of largest layers that can give up n_remove before reaching the next
    while n_remove > sum(s[:involved]) - involved * s[involved]:
        involved += 1
    base_fill = [s[i] - s[involved - 1] for i in range(involved)]  # bring them level with the smallest
    rest_total = n_remove - sum(base_fill)
    rest, mismatch = divmod(rest_total, involved)
    removed = [b + rest for b in base_fill]
    removed[0] += mismatch
    kept = list(sizes)
    for rank, i in enumerate(order[:involved]):
        kept[i] = sizes[i] - removed[rank]
    return kept


def _round_to_total(exact: list[float], caps: list[int], total: int) -> list[int]:
    """Integers near `exact` (largest remainders first), each <= its cap, summing to `total`."""
    kept = [min(int(math.floor(x)), c) for x, c in zip(exact, caps)]
    by_remainder = sorted(range(len(exact)), key=lambda i: -(exact[i] - math.floor(exact[i])))
    short = total - sum(kept)
    while short > 0:
        progressed = False
        for i in by_remainder:
            if short and kept[i] < caps[i]:
                kept[i] += 1
                short -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot place {total} weights in layers of sizes {caps}")
    return kept


def uniform(sizes: list[int], n_keep: int) -> list[int]:
    """Every layer keeps the same fraction n_keep / sum(sizes) (up to rounding; the total is exact): the
    kernel theory's set-up (Section 3), one connectivity for the whole network."""
    frac = n_keep / sum(sizes)
    return _round_to_total([frac * s for s in sizes], sizes, n_keep)


def erk(shapes: list[tuple[int, ...]], n_keep: int) -> list[int]:
    """Erdős–Rényi-Kernel (Evci et al. 2020): density proportional to sum(shape) / prod(shape), capped at 1."""
    sizes = [numel(s) for s in shapes]
    if n_keep >= sum(sizes):
        return sizes
    score = [sum(s) / numel(s) for s in shapes]
    dense: set[int] = set()
    eps = 0.0
    while True:  # layers whose density would exceed 1 stay dense; re-solve the scale for the rest
        budget = n_keep - sum(sizes[i] for i in dense)
        free = [i for i in range(len(sizes)) if i not in dense]
        if not free:
            break
        eps = budget / sum(score[i] * sizes[i] for i in free)
        over = {i for i in free if eps * score[i] > 1}
        if not over:
            break
        dense |= over
    exact = [sizes[i] if i in dense else eps * score[i] * sizes[i] for i in range(len(sizes))]
    return _round_to_total(exact, sizes, n_keep)


def dense_last(sizes: list[int], n_keep: int) -> list[int]:
    """The authors' Figure 7 code: the last layer (the classifier) stays dense and the rest of the budget
    goes to the earlier layers, staggered among them. For a one-hidden-layer MLP the first layer keeps
    exactly n_keep - width * outputs weights."""
    rest = n_keep - sizes[-1]
    if len(sizes) < 2 or rest < len(sizes) - 1:
        raise ValueError(f"a dense last layer of {sizes[-1]:,} weights leaves {rest:,} of {n_keep:,} for the "
                         f"other layers")
    return [*staggered(sizes[:-1], rest), sizes[-1]]


DENSE_LAST = "dense-last"
# name -> (layer shapes, weights to keep) -> weights kept per layer, exactly that many in total. These
# names are the only ones: sweep-width's method.distribution and kernel-distance's --distribution.
DISTRIBUTIONS = {
    "staggered": lambda shapes, n_keep: staggered([numel(s) for s in shapes], n_keep),
    DENSE_LAST: lambda shapes, n_keep: dense_last([numel(s) for s in shapes], n_keep),
    "uniform": lambda shapes, n_keep: uniform([numel(s) for s in shapes], n_keep),
    "erk": erk,
}
# method.distribution: null means the model's own: Figure 7's rule for the MLP, Appendix B's for ResNets.
MODEL_DISTRIBUTIONS = {"mlp": DENSE_LAST, "resnet18": "staggered"}


def default_distribution(model: str) -> str:
    """What method.distribution null stands for with this model."""
    return MODEL_DISTRIBUTIONS.get(model, "staggered")
