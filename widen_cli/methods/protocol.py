"""The protocol every method follows: `Method`, a base class whose defaults are those of a plain method
(no mask, no parent, the recipe's epochs, no options of its own). A method overrides what differs.

Nothing here imports torch or the config modules: configs, the planner and the report all ask methods
questions, and a method answers from the objects it is handed (a RunConfig, a MethodConfig, a planned
Member, a report row).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from widen_cli.shapes import Member, count, weight_shapes

if TYPE_CHECKING:
    import torch

    from widen_cli.schema import MethodConfig, ModelConfig, RunConfig
    from widen_cli.datasets import InputSpec
    from widen_cli.sparsity import Masks


class MaskUpdater(Protocol):
    """What `Method.updater` returns for a method whose mask changes while it trains (SET, RigL)."""

    def after_backward(self, step: int) -> None:
        """Called every optimiser step after loss.backward() and before optimizer.step(); `step` counts
        from 0 at the first step of the run."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps beside the masks, to resume exactly."""

    def load_state_dict(self, state: dict) -> None: ...

    def log(self) -> dict[str, float]:
        """Per-epoch metric fields (name -> value) for the epoch that just ended."""


class Method:
    """One way to fill a fixed weight budget at a wider width. Registered once (methods/__init__.py);
    looked up by name with `method_of`."""

    name: str = ""
    # Facts the planner, the trainer and the report read.
    dense: bool = False  # the plain dense model: what parents and companions are; it keeps weights for rewinds
    widened: bool = False  # keeps the budget at every width by removing weights (the accuracy-vs-width lines)
    random_mask: bool = False  # a random static mask from the seed: connectivity figures, gains, kernel overlay
    bottleneck: bool = False  # holds the budget by narrowing inner sizes (the report's bottleneck figure)
    batched: bool = False  # can train stacked with other members (stacked_training.py, MLPs only; it calls no updater)
    has_parent: bool = False  # trains from a dense parent at its width (read back, waited for or trained first)
    baseline_at_base: bool = True  # at its base width with every weight kept it is the dense baseline itself
    mask_copies: int = 0  # extra per-weight tensors while training (a mask), for the memory estimate
    own_options: tuple[str, ...] = ()  # MethodConfig fields only this method's identity holds (others drop them)
    line_style: dict = {"marker": "o"}  # the report's marker and line style for its families

    def __init__(self, name: str | None = None):
        if name is not None:  # a bare Method(name): a method no longer registered, read back by the report
            self.name = name

    def __repr__(self) -> str:
        return f"<method {self.name}>"

    # ------------------------------------------------------------ options of a run

    def default_distribution(self, model: str) -> str:
        """method.distribution when the config leaves it null (it is in every identity, used or not)."""
        return "staggered"

    def check(self, run: RunConfig) -> None:
        """Refuse (UserError) options that do not go together for this method."""

    def folder_label(self, method: MethodConfig) -> str:
        """The method's part of a run folder's name."""
        return self.name

    def variant(self, method: MethodConfig) -> str | None:
        """A member's `variant` (plan and summary column)."""
        return None

    # ------------------------------------------------------------ planning

    def budget(self, cfg: ModelConfig, spec: InputSpec, base_width: int) -> int:
        """N(base): the family's weight count; the dense base model's unless the method says otherwise."""
        return count(weight_shapes(cfg, base_width, spec))

    def plan(self, cfg: ModelConfig, spec: InputSpec, base_width: int, width: int, method: MethodConfig) -> Member:
        """The member at `width` (>= base_width) holding `budget`; raises shapes.Infeasible where it cannot."""
        raise NotImplementedError(f"method {self.name} plans no members")

    def in_family(self, member: Member) -> bool:
        """Whether a planned member is trained as one of the family's (pruned: only the wider ones)."""
        return True

    def parent_widths(self, base_width: int, widths: list[int]) -> list[int]:
        """Widths of the dense models planned before the members (parents: always, whatever dense_wide)."""
        return []

    def companion_widths(self, base_width: int, widths: list[int], dense_wide: bool) -> list[int]:
        """Widths of the dense models planned after the members: the wider dense models with --dense-wide."""
        return [w for w in widths if w > base_width] if dense_wide else []

    def parent_keep_epochs(self, run: RunConfig) -> tuple[int, ...]:
        """Epochs whose weights this run's dense parent keeps (magnitude-rewind's target)."""
        return ()

    def is_dense_baseline(self, member: Member) -> bool:
        """A member at its base width that keeps every weight: the dense baseline itself, one run folder."""
        return (self.baseline_at_base and member.width == member.base_width
                and member.n_weights == member.n_weights_dense)

    def model_width(self, member: Member) -> int:
        """The width of the model the member trains (cost and memory estimates build it)."""
        return member.width

    # ------------------------------------------------------------ training

    def epochs(self, run: RunConfig) -> int:
        """Epochs this run trains (a pruned run: after pruning)."""
        return run.optim.epochs

    def masks(self, run: RunConfig, model: torch.nn.Module, member: Member, start: dict | None = None) -> Masks | None:
        """The masks a fresh run starts with, applied to `model` (None: every weight trains). `start`: kept
        weights handed over by the parent (pruned)."""
        return None

    def updater(self, run: RunConfig, model: torch.nn.Module, masks: Masks | None, optimizer: Any,
                steps_per_epoch: int) -> MaskUpdater | None:
        """For a mask that changes during training: the object called every step (MaskUpdater)."""
        return None

    # ------------------------------------------------------------ results

    def summary_fields(self, run: RunConfig, epochs: int | None, complete: bool = True) -> dict:
        """The method's summary columns: variant, total_epochs (the parent's included), last-layer
        connectivity. `complete`: a finished run's summary, not a row filled in for a failed one."""
        return dict(variant=self.variant(run.method), total_epochs=epochs, last_layer_connectivity=None)

    def family_label(self, row: Any) -> str:
        """The report's name of a family, from a summary row (method, base_width, variant, distribution, ...)."""
        return f"{self.name} b={row.base_width}"


__all__ = ["MaskUpdater", "Method"]
