"""sparse: a static random mask at the member's width that keeps exactly the budget, spread over the
layers by method.distribution (distributions.py) and drawn once from the seed (sparsity.py)."""
from __future__ import annotations

from widen_cli.distributions import DENSE_LAST, default_distribution
from widen_cli.methods.protocol import Method
from widen_cli.shapes import Infeasible, Member, count, distribute, fix_last_layer, weight_shapes


def sparse_member(cfg, spec, width: int, budget: int, method, base_width: int | None = None) -> Member:
    """The sparse model at `width` that keeps `budget` weights, spread over its layers by
    method.distribution (the member is `method.name`'s: sparse, or a method planned as it, set and rigl);
    raises Infeasible. sweep-width's members and kernel-distance's networks both
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
    return Member(width=width, base_width=base_width, method=method.name, budget=budget,
                  n_weights=sum(kept.values()), n_weights_dense=count(dense), distribution=method.distribution,
                  within=method.within, layers=dense, kept=kept)


class Sparse(Method):
    name = "sparse"
    widened = True
    random_mask = True
    batched = True
    mask_copies = 1

    def default_distribution(self, model: str) -> str:
        return default_distribution(model)

    def plan(self, cfg, spec, base_width, width, method) -> Member:
        return sparse_member(cfg, spec, width, self.budget(cfg, spec, base_width), method, base_width)

    def masks(self, run, model, member, start=None):
        from widen_cli.sparsity import sparsify  # torch: only where a model is trained

        return sparsify(model, member, run.seed, run.method.rescale_init)

    def summary_fields(self, run, epochs, complete=True) -> dict:
        return {**super().summary_fields(run, epochs, complete),
                "last_layer_connectivity": run.method.last_layer_connectivity}

    def family_label(self, row) -> str:
        label = f"{self.name} b={row.base_width}"
        # The distribution a run gets without asking is left out of the label: it names only others.
        default = "staggered" if _given(row.last_layer_connectivity) else default_distribution(row.model)
        if row.distribution not in ("", default):
            label += f" {row.distribution}"
        if row.within == "io":
            label += " io"
        return label


def _given(value) -> bool:
    return value is not None and value == value  # not None, not NaN


SPARSE = Sparse()
