"""pruned: train the dense model at the member's width (its parent: a plain dense run, reused when it
exists), prune it to the base width's weight count, then fine-tune (or retrain) with the mask fixed.

Its variants are values of method.prune (conf/method/pruned-*.yaml name them for one sweep to hold
several): structured (whole units out: the base model's shapes), magnitude (largest |w| kept, per layer or
globally) and magnitude-rewind (kept weights go back to the parent's at method.rewind_epoch: lottery ticket).
"""
from __future__ import annotations

import math

from widen_cli.errors import UserError
from widen_cli.distributions import default_distribution
from widen_cli.methods.protocol import Method
from widen_cli.shapes import Infeasible, Member, count, distribute, numel, weight_shapes

# Its options: left out of every other method's identity, so folders named before they existed keep their names.
PRUNE_OPTIONS = ("prune", "scope", "rewind_epoch", "finetune_epochs")
STRUCTURED, MAGNITUDE, REWIND = PRUNE_VARIANTS = ("structured", "magnitude", "magnitude-rewind")
FINETUNE_FRACTION = 0.25  # structured and magnitude fine-tune for a quarter of the recipe's epochs (rounded up)


class Pruned(Method):
    name = "pruned"
    widened = True
    has_parent = True
    mask_copies = 1
    own_options = PRUNE_OPTIONS
    line_style = {"marker": "^", "ls": ":"}

    def default_distribution(self, model: str) -> str:
        return default_distribution(model)

    def check(self, run) -> None:
        if self.structured(run.method) and run.method.scope == "global":
            raise UserError("method.scope global is for magnitude pruning; structured pruning keeps the base "
                            "model's units in every layer (scope layer)")

    def structured(self, method) -> bool:
        """Whole units out: the pruned model has the base model's shapes (no mask)."""
        return method.prune == STRUCTURED

    def rewinds(self, method) -> bool:
        """Kept weights go back to the parent's at method.rewind_epoch (lottery ticket)."""
        return method.prune == REWIND

    def folder_label(self, method) -> str:
        return f"{self.name}-{method.prune}"

    def variant(self, method) -> str | None:
        return method.prune

    def plan(self, cfg, spec, base_width, width, method) -> Member:
        """structured: every layer keeps its base-width share of units, so the pruned model has the base
        model's shapes and exactly the budget. magnitude: the dense shapes with the budget's weights kept,
        per layer as the sparse family's (scope layer) or decided by the weights (scope global: `kept` is
        empty until pruning)."""
        dense = weight_shapes(cfg, width, spec)
        budget = self.budget(cfg, spec, base_width)
        common = dict(width=width, base_width=base_width, method=self.name, budget=budget,
                      n_weights_dense=count(dense), variant=method.prune)
        if self.structured(method):
            shapes = weight_shapes(cfg, base_width, spec)
            return Member(**common, n_weights=count(shapes), layers=shapes,
                          kept={n: numel(s) for n, s in shapes.items()})
        kept = {}
        if method.scope == "layer":
            try:
                kept = distribute(dense, budget, method)
            except ValueError as e:
                raise Infeasible(f"width {width} cannot keep {budget:,} weights: {e}") from None
        return Member(**common, n_weights=budget, distribution=method.distribution if kept else None,
                      layers=dense, kept=kept)

    def in_family(self, member: Member) -> bool:
        return member.width > member.base_width  # at the base width pruning would remove nothing

    def parent_widths(self, base_width, widths) -> list[int]:
        return list(widths)  # parents first: the local launcher runs jobs in order

    def companion_widths(self, base_width, widths, dense_wide) -> list[int]:
        return []  # the parents are the dense models at every width already

    def parent_keep_epochs(self, run) -> tuple[int, ...]:
        return (run.method.rewind_epoch,) if self.rewinds(run.method) else ()

    def model_width(self, member: Member) -> int:
        return member.base_width if member.variant == STRUCTURED else member.width  # pruned to the base shapes

    def epochs(self, run) -> int:
        """Epochs after pruning: method.finetune_epochs, else the whole recipe for magnitude-rewind (it
        retrains) and FINETUNE_FRACTION of it for the others (they fine-tune)."""
        if run.method.finetune_epochs is not None:
            return run.method.finetune_epochs
        if self.rewinds(run.method):
            return run.optim.epochs
        return max(1, math.ceil(FINETUNE_FRACTION * run.optim.epochs))

    def masks(self, run, model, member, start=None):
        if start is None:  # structured: the pruned model has the base shapes, every weight trains
            return None
        from widen_cli.sparsity import Masks  # torch: only where a model is trained

        masks = Masks(model, start)  # a magnitude-pruned member's mask, fixed from here on
        masks.apply_()
        return masks

    def summary_fields(self, run, epochs, complete=True) -> dict:
        total = epochs + run.optim.epochs if complete and epochs is not None else None  # the parent's too
        return {**super().summary_fields(run, epochs, complete), "total_epochs": total}

    def family_label(self, row) -> str:
        scope = " global" if row.scope == "global" else ""  # global magnitude said so
        return f"{self.name} {row.variant}{scope} b={row.base_width}"


PRUNED = Pruned()
